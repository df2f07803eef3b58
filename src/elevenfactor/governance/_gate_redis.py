"""``RedisSpendGate``: budget counters in Redis, one Lua script per operation.

Spent and reserved amounts of every budget window live in Redis; reserve, commit and release are
each one script (``_redis_scripts``), loaded once and run by ``EVALSHA``, so every process
sharing the Redis sees one consistent count. Budget and kill-switch definitions still come from
the store (cached, as for ``StoreSpendGate``).

Committed holds are also written to the store in the background, in batches (``budget_holds``
and the spent of ``budget_usage``), so that reports see them and a window whose counters are
missing in Redis (a restart, a flush) is seeded from the store before anything is reserved on
it. Alerts are claimed in the store by that writer, once per threshold per window.

Redis unreachable: every operation raises ``BudgetUnavailable`` (fail closed: nothing is let
through unaccounted), and ``ready()`` says False for ``/readyz``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Sequence
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from elevenfactor.config import mask_url
from elevenfactor.errors import BudgetUnavailable
from elevenfactor.governance._alerts import Alerts
from elevenfactor.governance._budgets import Budget, now
from elevenfactor.governance._gate_defs import CachedGate, Definitions, check_money, exceeded
from elevenfactor.governance._leases import (
    LEASE_HEADROOM,
    LEASE_SECONDS,
    Lease,
    Leases,
    signature,
)
from elevenfactor.governance._redis_scripts import COMMIT, RESERVE, SEED, SETTLE
from elevenfactor.governance._redis_writer import Committed, StoreWriter
from elevenfactor.governance._spend import Charge, Hold
from elevenfactor.store import Store, script_client

__all__ = ["RedisSpendGate"]

logger = logging.getLogger("elevenfactor.budgets")

HOLD_TTL = 7 * 86400
"""How long a settled hold's record stays in Redis (commit and release are idempotent within)."""
COUNTER_TTL = 35 * 86400
"""Counters untouched this long leave Redis; they are seeded from the store if used again."""

_Key = tuple[str, str]


class RedisSpendGate(CachedGate):
    """A ``SpendGate`` on Redis (see the module docstring)."""

    def __init__(
        self,
        redis_url: str,
        store: Store,
        prefix: str = "elevenfactor:",
        *,
        refresh: float = 1.0,
        timeout: float = 2.0,
        alerts: Alerts | None = None,
        flush_interval: float = 0.2,
    ) -> None:
        self.url = redis_url
        self.store = store
        self.prefix = prefix
        self.defs = Definitions(store, refresh=refresh)
        self.alerts = alerts or Alerts()
        self.redis: aioredis.Redis = aioredis.Redis.from_url(
            redis_url,
            decode_responses=True,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
        )
        # The scripts (every reservation and commit) go through the fast script client.
        self.scripts = script_client(redis_url, timeout=timeout, decode=True)
        runner: Any = self.scripts if self.scripts is not None else self.redis
        self._reserve = runner.register_script(RESERVE)
        self._commit = runner.register_script(COMMIT)
        self._settle = runner.register_script(SETTLE)
        self._seed = runner.register_script(SEED)
        self.writer = StoreWriter(store, self.defs, self.alerts, interval=flush_interval)
        self._shapes: dict[tuple[Any, ...], tuple[list[_Key], list[str], list[Any]]] = {}
        self.leases = Leases()
        self._background: set[asyncio.Task[None]] = set()

    # -- keys -----------------------------------------------------------------------------

    def _usage_key(self, key: _Key) -> str:
        return f"{self.prefix}bu:{key[0]}:{key[1]}"

    def _keys(self, hold_id: str, windows: Sequence[_Key]) -> list[str]:
        out = [f"{self.prefix}bh:{hold_id}"]
        for b, w in windows:
            out += [
                f"{self.prefix}bu:{b}:{w}",
                f"{self.prefix}bz:{b}:{w}",
                f"{self.prefix}ba:{b}:{w}",
            ]
        return out

    def _shape(
        self, targets: Sequence[tuple[Budget, str]]
    ) -> tuple[list[_Key], list[str], list[Any]]:
        """What a reservation on ``targets`` sends besides the hold's own values: the windows,
        their keys, and the script's trailing arguments, the windows as JSON among them (cached:
        the same few sets of windows come back on every call)."""
        found = self._shapes.get(signature(targets))
        if found is None:
            windows = [(b.id, k) for b, k in targets]
            raw = orjson.dumps([list(w) for w in windows]).decode()
            tail: list[Any] = [COUNTER_TTL, raw, self.prefix]
            for b, _ in targets:
                tail += [repr(b.limit), "0" if b.soft else "1"]
            if len(self._shapes) >= 1024:
                self._shapes.clear()
            found = self._shapes[signature(targets)] = (windows, self._keys("", windows)[1:], tail)
        return found

    def _unavailable(self, exc: BaseException) -> BudgetUnavailable:
        return BudgetUnavailable(
            f"budgets cannot be checked: Redis at {mask_url(self.url)} cannot be reached"
            f" ({type(exc).__name__}: {exc})",
            hint="the call was refused rather than let through unaccounted; check REDIS_URL",
        )

    async def _run(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        try:
            return await script(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            raise self._unavailable(exc) from exc

    async def _seed_missing(self, windows: Sequence[_Key], answer: list[str]) -> None:
        """Seed the counters ``answer`` (``['seed', i, ...]``) names from the store."""
        missing = [windows[int(i) - 1] for i in answer[1:]]
        spent = []
        for key in missing:
            row = await self.store.fetchone(
                "SELECT spent FROM budget_usage WHERE budget_id = ? AND window_key = ?", key
            )
            spent.append((float(row[0]) if row else 0.0) + self.writer.pending_cost(key))
        await self._run(
            self._seed,
            [self._usage_key(k) for k in missing],
            [COUNTER_TTL, *(repr(s) for s in spent)],
        )

    # -- the gate -------------------------------------------------------------------------

    async def reserve(
        self,
        hold_id: str,
        charge: Charge,
        amount: float,
        ttl: float,
        force: bool = False,
        *,
        pooled: bool = False,
    ) -> Hold:
        """Hold ``amount`` against every budget that applies, or raise ``BudgetExceeded``
        (with ``force``, never: hard budgets are passed like soft ones, once). ``pooled``:
        the hold may come from a lease (``_leases``), with no round trip."""
        at, targets = await self.targets(charge, amount, ttl, force)
        if not targets:
            return Hold(hold_id, amount)
        windows, window_keys, tail = self._shape(targets)
        if pooled and not force:
            sig = signature(targets)
            lease, ended = self.leases.take(sig, amount, hold_id)
            for old in ended:
                self._spawn(self._give_back(old))
            if self.leases.wants(sig):
                self.leases.pending.add(sig)
                self._spawn(self._lease(sig, targets, amount * self.leases.calls_for(sig), ttl))
            if lease is not None:
                return Hold(hold_id, amount, lease.windows, lease.expires_at, lease=lease.id)
        expires_at = at + ttl
        args: list[Any] = [hold_id, repr(amount), repr(at), repr(expires_at), HOLD_TTL]
        args += tail
        keys = [f"{self.prefix}bh:{hold_id}", *window_keys]
        for _ in range(3):
            answer = await self._run(self._reserve, keys, args)
            if answer[0] != "seed":
                break
            await self._seed_missing(windows, answer)
        else:
            raise BudgetUnavailable("budget counters could not be seeded in Redis")
        if answer[0] == "dup":
            stored = [(str(b), str(w)) for b, w in orjson.loads(answer[2])]
            return Hold(hold_id, float(answer[1]), tuple(stored), float(answer[3]),
                        _soft(stored, answer[4]))  # fmt: skip
        if answer[0] == "over":
            budget, key = targets[int(answer[1]) - 1]
            raise exceeded(budget, key, float(answer[2]), float(answer[3]), amount)
        return Hold(hold_id, amount, tuple(windows), expires_at, _soft(windows, answer[1]))

    async def commit(self, hold: Hold, cost: float) -> None:
        """Charge ``cost`` and release the hold (once; an expired hold is still charged)."""
        cost = check_money(cost, "cost")
        if hold.empty:
            return
        raw = orjson.dumps([list(w) for w in hold.windows]).decode()
        args = [hold.id, repr(cost), HOLD_TTL, COUNTER_TTL, raw, repr(hold.amount)]
        args += [repr(hold.expires_at), self.prefix]
        keys = self._keys(hold.id, hold.windows)
        if hold.lease is not None:
            args.append(hold.lease)
            first, ended = self.leases.settle(hold.id, hold.lease, hold.amount, cost)
            if not first:
                return  # settled before
            if ended is not None:
                self._spawn(self._give_back(ended))
        for _ in range(3):
            answer = await self._run(self._commit, keys, args)
            if answer[0] != "seed":
                break
            await self._seed_missing(hold.windows, answer)
        if answer[0] != "ok":
            return
        spent = [
            (float(answer[2 + 2 * i]), float(answer[3 + 2 * i])) for i in range(len(hold.windows))
        ]
        self.writer.add(Committed(hold, cost, now(), tuple(spent)))

    async def release(self, hold: Hold) -> None:
        """Give the whole hold back (once; nothing for a settled or expired hold)."""
        if hold.empty:
            return
        if hold.lease is not None:  # back into its lease: nothing to tell Redis
            _, ended = self.leases.settle(hold.id, hold.lease, hold.amount, 0.0)
            if ended is not None:
                await self._give_back(ended)
            return
        keys = self._keys(hold.id, hold.windows)
        args = [hold.id, "released", repr(now()), HOLD_TTL, self.prefix]
        await self._run(self._settle, keys, args)

    # -- leases ---------------------------------------------------------------------------

    def _spawn(self, job: Any) -> None:
        task = asyncio.ensure_future(job)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _lease(
        self, sig: tuple[Any, ...], targets: list[tuple[Budget, str]], size: float, ttl: float
    ) -> None:
        """Ask Redis for a lease of ``size`` on ``targets``: a hold granted only while every
        budget (soft ones too) keeps ``LEASE_HEADROOM - 1`` times as much free after it."""
        lease_id = f"lease:{uuid.uuid4().hex}"
        windows = [(b.id, k) for b, k in targets]
        at = now()
        expires_at = at + ttl + LEASE_SECONDS
        args: list[Any] = [lease_id, repr(size), repr(at), repr(expires_at), HOLD_TTL]
        args += [COUNTER_TTL, orjson.dumps([list(w) for w in windows]).decode(), self.prefix]
        for b, _ in targets:
            args += [repr(b.limit - (LEASE_HEADROOM - 1) * size), "1"]
        keys = self._keys(lease_id, windows)
        try:
            for _ in range(3):
                answer = await self._run(self._reserve, keys, args)
                if answer[0] != "seed":
                    break
                await self._seed_missing(windows, answer)
        except Exception:  # no lease: calls are reserved one by one meanwhile
            logger.debug("taking a budget lease failed", exc_info=True)
            self.leases.deny(sig)
            return
        if answer[0] != "ok":
            self.leases.deny(sig)
            return
        until = time.monotonic() + LEASE_SECONDS
        for old in self.leases.add(sig, Lease(lease_id, tuple(windows), size, expires_at, until)):
            self._spawn(self._give_back(old))

    async def _give_back(self, lease: Lease) -> None:
        """Release what is left of a retired lease whose calls have all settled."""
        keys = self._keys(lease.id, lease.windows)
        try:
            await self._run(self._settle, keys, [lease.id, "released", repr(now()), HOLD_TTL,
                                                 self.prefix])  # fmt: skip
        except BudgetUnavailable:
            logger.warning("giving back budget lease %s failed; it will expire", lease.id)

    async def expire_holds(self, at: float | None = None, batch: int = 500) -> int:
        """Release the holds that expired before ``at`` (default: now); return how many.
        Reserves release the expired holds of the windows they touch; call this periodically
        so idle budgets are whole again too."""
        ts = now() if at is None else at
        try:
            ids = await self.redis.zrangebyscore(f"{self.prefix}bexp", "-inf", f"({ts!r}",
                                                 start=0, num=batch)  # fmt: skip
            done = 0
            for hold_id in map(str, ids):
                raw = await self.redis.hget(f"{self.prefix}bh:{hold_id}", "w")
                windows = [(str(b), str(w)) for b, w in orjson.loads(raw)] if raw else []
                answer = await self._settle(
                    keys=self._keys(hold_id, windows),
                    args=[hold_id, "expired", repr(ts), HOLD_TTL, self.prefix],
                )
                done += answer[0] == "ok"
        except (RedisError, OSError) as exc:
            raise self._unavailable(exc) from exc
        return done

    async def usage(self, budget_id: str, window_key: str) -> tuple[float, float]:
        """``(spent, reserved)`` of one budget window, as Redis counts them."""
        try:
            s, r = await self.redis.hmget(self._usage_key((budget_id, window_key)), ["s", "r"])
        except (RedisError, OSError) as exc:
            raise self._unavailable(exc) from exc
        return float(s or 0), max(0.0, float(r or 0))

    async def ready(self) -> bool:
        """Redis answers a PING."""
        try:
            return bool(await self.redis.ping())
        except (RedisError, OSError):
            return False

    async def give_back_leases(self) -> None:
        """Stop serving calls from leases; give back what is left of each once its calls have
        settled (those still running give theirs back as they settle)."""
        for lease in self.leases.retire_all():
            await self._give_back(lease)

    async def flush(self) -> None:
        """Write the committed holds not yet in the store now."""
        await self.writer.flush()

    async def aclose(self) -> None:
        """Give back the leases, flush the store writer, finish alerts (briefly), close the
        Redis connections."""
        await self.give_back_leases()
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)
        with contextlib.suppress(Exception):
            await self.writer.aclose()
        await self.alerts.aclose()
        await self.redis.aclose()
        if self.scripts is not None:
            await self.scripts.aclose()


def _soft(windows: Sequence[_Key], indices: str) -> tuple[str, ...]:
    return tuple(windows[int(i) - 1][0] for i in indices.split(",") if i)
