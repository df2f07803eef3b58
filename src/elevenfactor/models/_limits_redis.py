"""``RedisLimits``: the rate limits' state in Redis, shared by every process.

Far from every limit, calls are admitted from leases — capacity taken from the limits ahead
of them (``_limit_leases``) — with no round trip. Otherwise each acquire and each reconcile is
one Lua script: the check of every limit and the update run
atomically, on the clock of Redis (``TIME``), so processes whose clocks disagree still agree on
the limits. A limit is one string key, ``{prefix}{name}:{kind}``, holding its theoretical arrival
time in microseconds; it expires once its bucket is full again, so idle limits cost nothing.

Redis down (refused, timed out, or any Redis error): the limits are enforced by each process on
its own (``LocalLimits``) — each admits up to the full limit — and a warning is logged at most
every 30 seconds. Rate limits protect capacity; refusing every call because the store of the
limits is down would turn a Redis outage into a full outage. Budgets, which protect money, fail
closed instead. One second after a failure one call tries Redis again (the others stay local
meanwhile, so a Redis that hangs delays one call a second, by at most the client timeout).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from elevenfactor.models._limit_leases import (
    LEASE,
    LEASE_FREE,
    LEASE_SECONDS,
    LimitLease,
    LimitLeases,
    lease_size,
)
from elevenfactor.models._limits import LimitKey, LocalLimits, Verdict
from elevenfactor.store import script_client

__all__ = ["RedisLimits"]

logger = logging.getLogger("elevenfactor.limits")

_RETRY_AFTER_FAILURE = 1.0
_WARN_EVERY = 30.0

# KEYS: the limits; ARGV[1]: "1" to commit; then per limit: window (µs), value, cost.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local new = {}
local worst, blocking = 0, 0
for i = 1, #KEYS do
  local window = tonumber(ARGV[3 * i - 1])
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
  if tat < now then tat = now end
  tat = tat + tonumber(ARGV[3 * i + 1]) * window / tonumber(ARGV[3 * i])
  new[i] = tat
  if tat - window - now > worst then
    worst = tat - window - now
    blocking = i
  end
end
if worst > 0 or ARGV[1] ~= '1' then
  return {0, string.format('%.0f', worst), blocking, string.format('%.0f', now)}
end
for i = 1, #KEYS do
  redis.call('SET', KEYS[i], string.format('%.0f', new[i]),
             'PX', math.ceil((new[i] - now) / 1000) + 1000)
end
return {1, '0', 0, string.format('%.0f', now)}
"""

# KEYS: the limits; per limit ARGV: window (µs), value, delta.
_ADJUST = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
for i = 1, #KEYS do
  local window = tonumber(ARGV[3 * i - 2])
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
  if tat < now then tat = now end
  tat = tat + tonumber(ARGV[3 * i]) * window / tonumber(ARGV[3 * i - 1])
  if tat > now then
    redis.call('SET', KEYS[i], string.format('%.0f', tat),
               'PX', math.ceil((tat - now) / 1000) + 1000)
  else
    redis.call('DEL', KEYS[i])
  end
end
return 1
"""


class RedisLimits:
    """GCRA limits in Redis, falling back to ``LocalLimits`` while Redis is unreachable."""

    def __init__(
        self,
        url: str | None = None,
        *,
        prefix: str = "elevenfactor:limits:",
        client: aioredis.Redis | None = None,
        timeout: float = 0.5,
    ) -> None:
        if client is None:
            if url is None:
                raise ValueError("RedisLimits needs a url or a client")
            client = aioredis.Redis.from_url(
                url, socket_timeout=timeout, socket_connect_timeout=timeout
            )
        self.client = client
        self.prefix = prefix
        self.fallback = LocalLimits()
        # Every acquire is a script on the request path: the fast script client when it can.
        self.scripts = script_client(url, timeout=timeout) if url is not None else None
        runner: Any = self.scripts if self.scripts is not None else client
        self._acquire = runner.register_script(_ACQUIRE)
        self._adjust = runner.register_script(_ADJUST)
        self._lease = runner.register_script(LEASE)
        self.leases = LimitLeases()
        self._background: set[asyncio.Task[None]] = set()
        self._down_until = 0.0  # 0: healthy; else Redis failed, try again from then on
        self._probing = False  # one call finds out whether Redis is back; the others go local
        self._warned_at = -_WARN_EVERY

    @property
    def degraded(self) -> bool:
        """Whether Redis was found down and is not known to be back (limits are per process
        meanwhile)."""
        return self._down_until != 0.0

    def _skip(self) -> bool:
        """Whether to use the local limits without asking Redis; else this call probes."""
        if self._down_until == 0.0:
            return False
        if self._probing or self._down_until > time.monotonic():
            return True
        self._probing = True
        return False

    def _ok(self) -> None:
        if self._down_until != 0.0:
            self._down_until = 0.0
            self._probing = False
            logger.warning(
                "rate limits: Redis is back; limits are shared again",
                extra={"event": "limits_redis_back"},
            )

    def _args(self, keys: Sequence[LimitKey], amounts: Sequence[int]) -> list[Any]:
        args: list[Any] = []
        for key, amount in zip(keys, amounts, strict=True):
            args += [int(key.window * 1_000_000), key.value, amount]
        return args

    async def try_acquire(
        self, keys: Sequence[LimitKey], costs: Sequence[int], *, commit: bool = True
    ) -> Verdict:
        """One script: admit all of ``keys`` or say when they would fit (Redis's clock). A
        call a lease covers (``_limit_leases``) is admitted with no script at all."""
        if self._skip():
            return self._local(keys, costs, commit)
        if commit and self._down_until == 0.0:  # (a probe of Redis goes to Redis)
            leased = self._from_lease(tuple(keys), costs)
            if leased is not None:
                return leased
        names = [self.prefix + k.id for k in keys]
        try:
            ok, wait, blocking, now = await self._acquire(
                keys=names, args=["1" if commit else "0", *self._args(keys, costs)]
            )
        except (RedisError, OSError) as exc:
            self._failed(exc)
            return self._local(keys, costs, commit)
        self._ok()
        return Verdict(
            ok == 1, int(wait) / 1_000_000, max(int(blocking) - 1, 0), int(now) / 1_000_000
        )

    def _from_lease(self, keys: tuple[LimitKey, ...], costs: Sequence[int]) -> Verdict | None:
        lease, old = self.leases.take(keys, costs)
        if old is not None:
            self._spawn(self._give_back(old))
        if lease is not None:
            return Verdict(True, 0.0, 0, lease.at + time.monotonic() - lease.taken)
        if self.leases.wants(keys):
            size = lease_size(keys, costs)
            if size is None:
                self.leases.deny(keys)
            else:
                self.leases.pending.add(keys)
                self._spawn(self._take_lease(keys, size))
        return None

    def _spawn(self, job: Any) -> None:
        task = asyncio.ensure_future(job)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _take_lease(self, keys: tuple[LimitKey, ...], size: list[int]) -> None:
        args: list[Any] = []
        for key, units in zip(keys, size, strict=True):
            margin = math.ceil(key.value * LEASE_FREE)
            args += [int(key.window * 1_000_000), key.value, units, margin]
        try:
            ok, now = await self._lease(keys=[self.prefix + k.id for k in keys], args=args)
        except (RedisError, OSError):
            self.leases.deny(keys)  # the next exact call finds out about Redis
            return
        if ok != 1:
            self.leases.deny(keys)
            return
        taken = time.monotonic()
        lease = LimitLease(keys, list(size), taken + LEASE_SECONDS, int(now) / 1_000_000, taken)
        self.leases.add(keys, lease)

    async def _give_back(self, lease: LimitLease) -> None:
        if any(lease.left):
            await self._adjust_redis(lease.keys, [-left for left in lease.left])

    async def adjust(self, keys: Sequence[LimitKey], deltas: Sequence[int]) -> None:
        """Move every key by its delta: within a lease this process holds on them when it can
        (no round trip; the lease gives the difference back in the end), else one script."""
        if self._down_until == 0.0 and self.leases.credit(keys, deltas):
            return
        await self._adjust_redis(keys, deltas)

    async def _adjust_redis(self, keys: Sequence[LimitKey], deltas: Sequence[int]) -> None:
        if self._skip():
            await self.fallback.adjust(keys, deltas)
            return
        try:
            await self._adjust(
                keys=[self.prefix + k.id for k in keys], args=self._args(keys, deltas)
            )
        except (RedisError, OSError) as exc:
            self._failed(exc)
            await self.fallback.adjust(keys, deltas)
            return
        self._ok()

    def _local(self, keys: Sequence[LimitKey], costs: Sequence[int], commit: bool) -> Verdict:
        return self.fallback.check(keys, costs, commit=commit)._replace(by=self.fallback)

    def _failed(self, exc: BaseException) -> None:
        now = time.monotonic()
        self._down_until = now + _RETRY_AFTER_FAILURE
        self._probing = False
        if now - self._warned_at >= _WARN_EVERY:
            self._warned_at = now
            logger.warning(
                "rate limits: Redis is unreachable (%s); each process enforces the limits on its "
                "own until it is back",
                exc,
                extra={"event": "limits_redis_down", "error": str(exc)},
            )

    async def aclose(self) -> None:
        """Give back the leases, close the connections."""
        for lease in self.leases.drop_all():
            self._spawn(self._give_back(lease))
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)
        await self.client.aclose()
        if self.scripts is not None:
            await self.scripts.aclose()
