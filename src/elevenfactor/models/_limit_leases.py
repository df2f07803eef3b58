"""Rate-limit leases: capacity a process takes from the shared limits in Redis ahead of its next
calls, so that a call far from every limit is admitted with no round trip.

A lease takes ``LEASE_CALLS`` times a call's cost of every limit at once (but at most
``1 / LEASE_SHARE`` of a limit's capacity per window), in one script that grants it only while
the limit keeps at least half its capacity free after it (``LEASE_FREE``). The limit counts the
lease as used at once, so across processes no limit admits more than it allows: a lease moves
capacity forward in time, it never adds any. The process then admits calls from the lease in
memory for ``LEASE_SECONDS``, and gives back what is left (the limit's clock moves back by as
much). Near a limit no lease is granted and each call is checked on its own, queueing as
without leases; capacity other processes hold in leases comes back within ``LEASE_SECONDS``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from elevenfactor.models._limit_keys import LimitKey

__all__ = ["LEASE", "LEASE_CALLS", "LEASE_SECONDS", "LimitLease", "LimitLeases", "lease_size"]

LEASE_CALLS = 32
"""A lease covers this many calls like the one that asked for it."""
LEASE_SHARE = 16
"""A lease takes at most 1/LEASE_SHARE of a limit's capacity per window."""
LEASE_FREE = 0.5
"""A lease is granted only if the limit keeps this share of its capacity free after it."""
LEASE_SECONDS = 1.0
"""How long a lease admits new calls."""
DENIED_SECONDS = 1.0
"""After a lease is refused, how long before asking again."""

# KEYS: the limits; per limit ARGV: window (µs), value, units to take, margin (units that must
# stay free besides). Nothing is taken unless every limit has room for units + margin.
LEASE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local new = {}
for i = 1, #KEYS do
  local window, value = tonumber(ARGV[4 * i - 3]), tonumber(ARGV[4 * i - 2])
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
  if tat < now then tat = now end
  local per = window / value
  if tat + (tonumber(ARGV[4 * i - 1]) + tonumber(ARGV[4 * i])) * per - window - now > 0 then
    return {0, string.format('%.0f', now)}
  end
  new[i] = tat + tonumber(ARGV[4 * i - 1]) * per
end
for i = 1, #KEYS do
  redis.call('SET', KEYS[i], string.format('%.0f', new[i]),
             'PX', math.ceil((new[i] - now) / 1000) + 1000)
end
return {1, string.format('%.0f', now)}
"""


def lease_size(keys: Sequence[LimitKey], costs: Sequence[int]) -> list[int] | None:
    """Units of each limit a lease for calls costing ``costs`` takes; None when a limit is too
    small to lease from (a lease would not cover even two such calls)."""
    out = []
    for key, cost in zip(keys, costs, strict=True):
        units = min(cost * LEASE_CALLS, key.value // LEASE_SHARE)
        if units < 2 * max(cost, 1):
            return None
        out.append(units)
    return out


@dataclass(slots=True)
class LimitLease:
    """Units of each limit taken ahead, and what is left of them."""

    keys: tuple[LimitKey, ...]
    left: list[int]
    until: float
    """``time.monotonic()`` after which it admits nothing more."""
    at: float
    """When it was granted, on the backend's clock (seconds)."""
    taken: float
    """``time.monotonic()`` when it was granted."""

    def take(self, costs: Sequence[int], now: float) -> bool:
        """Admit a call of ``costs`` from the lease (True), or not."""
        if now >= self.until or any(c > left for c, left in zip(costs, self.left, strict=True)):
            return False
        for i, cost in enumerate(costs):
            self.left[i] -= cost
        return True


class LimitLeases:
    """The leases of one backend, by their limits."""

    def __init__(self) -> None:
        self.held: dict[tuple[LimitKey, ...], LimitLease] = {}
        self.pending: set[tuple[LimitKey, ...]] = set()
        self.denied: dict[tuple[LimitKey, ...], float] = {}

    def take(
        self, keys: tuple[LimitKey, ...], costs: Sequence[int]
    ) -> tuple[LimitLease | None, LimitLease | None]:
        """``(lease that admitted the call, or None; a lease retired now, to give back)``."""
        lease = self.held.get(keys)
        if lease is None:
            return None, None
        now = time.monotonic()
        if lease.take(costs, now):
            return lease, None
        del self.held[keys]  # old or used up: give back what is left, lease anew
        return None, lease

    def wants(self, keys: tuple[LimitKey, ...]) -> bool:
        """Whether to ask for a lease on ``keys`` now."""
        if keys in self.held or keys in self.pending:
            return False
        denied = self.denied.get(keys)
        return denied is None or time.monotonic() >= denied

    def add(self, keys: tuple[LimitKey, ...], lease: LimitLease) -> None:
        """A lease granted."""
        self.pending.discard(keys)
        self.held[keys] = lease

    def deny(self, keys: tuple[LimitKey, ...]) -> None:
        """No lease (a limit is busy, or Redis failed): ask again later."""
        self.pending.discard(keys)
        if len(self.denied) >= 1024:
            self.denied.clear()
        self.denied[keys] = time.monotonic() + DENIED_SECONDS

    def credit(self, keys: Sequence[LimitKey], deltas: Sequence[int]) -> bool:
        """Move ``keys`` by ``deltas`` within a live lease that holds all of them (a refund
        adds to what is left, an excess takes from it); False when none can take it."""
        now = time.monotonic()
        for lease in self.held.values():
            if now >= lease.until:
                continue
            index = {k: i for i, k in enumerate(lease.keys)}
            if not all(k in index for k in keys):
                continue
            if any(lease.left[index[k]] - d < 0 for k, d in zip(keys, deltas, strict=True)):
                return False
            for k, d in zip(keys, deltas, strict=True):
                lease.left[index[k]] -= d
            return True
        return False

    def drop_all(self) -> list[LimitLease]:
        """Every lease held (to give back), forgotten."""
        out = list(self.held.values())
        self.held.clear()
        return out
