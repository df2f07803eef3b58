"""Leases: budget capacity a gateway process sets aside in Redis for its next calls.

A gateway call with a budget would otherwise cost a Redis round trip before it can start. While
every budget of a call is far from its limit, the Redis gate instead reserves a **lease** — an
ordinary hold of ``LEASE_CALLS`` times the call's worst case, granted only if the budgets keep
``LEASE_HEADROOM - 1`` times as much free after it — and serves the next calls with the same
budget windows from it, in memory. Redis counts the whole lease as reserved, so no process can
overshoot a budget: a call is served from a lease only if the lease's unused part covers its
worst case. Each commit charges the call's cost and shrinks the lease by as much in one script;
a lease serves new calls for ``LEASE_SECONDS`` and is given back (what is left of it) once its
last call settles. A process that dies leaves its lease to expire like any hold.

Near a limit no lease is granted (the call is reserved on its own, exactly, as without leases),
so a budget refuses a call only when it cannot cover it; capacity other processes hold in leases
comes back within ``LEASE_SECONDS``. Calls that must be idempotent by hold id (inside durable
runs) and forced calls never use leases.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

__all__ = ["LEASE_CALLS", "LEASE_HEADROOM", "LEASE_SECONDS", "Lease", "Leases"]

LEASE_CALLS = 32
"""A lease covers this many calls' worst case (of the call that asked for it)."""
LEASE_HEADROOM = 4
"""A lease is granted only if every budget could cover this many leases of its size."""
LEASE_SECONDS = 2.0
"""How long a lease serves new calls."""
DENIED_SECONDS = 1.0
"""After a lease is refused (a budget is near its limit), how long before asking again."""

_Key = tuple[str, str]
_Sig = tuple[object, ...]


@dataclass(slots=True)
class Lease:
    """One lease: its hold id in Redis, its windows, what Redis still holds for it."""

    id: str
    windows: tuple[_Key, ...]
    amount: float
    expires_at: float
    until: float
    """``time.monotonic()`` after which it serves no new call."""
    used: float = 0.0
    """The worst cases of its calls in flight."""
    calls: int = 0
    retired: bool = False

    def covers(self, amount: float, now: float) -> bool:
        """Whether a call of worst case ``amount`` may be served from it at ``now``."""
        return not self.retired and now < self.until and self.amount - self.used >= amount - 1e-12


class Leases:
    """The leases of one gate, by the signature of their budget windows and limits."""

    def __init__(self) -> None:
        self.by_sig: dict[_Sig, Lease] = {}
        self.by_id: dict[str, Lease] = {}
        self.pending: set[_Sig] = set()
        self.denied: dict[_Sig, float] = {}

    def take(self, sig: _Sig, amount: float) -> tuple[Lease | None, list[Lease]]:
        """A lease that serves a call of worst case ``amount`` (counted in it), or None; and
        the leases retired now that have no call left (to give back)."""
        lease = self.by_sig.get(sig)
        if lease is None:
            return None, []
        now = time.monotonic()
        if lease.covers(amount, now):
            lease.used += amount
            lease.calls += 1
            return lease, []
        if now >= lease.until or lease.amount - lease.used < amount * 2:
            return None, self._retire(sig, lease)  # old, or nearly used up: make way for a new one
        return None, []

    def wants(self, sig: _Sig) -> bool:
        """Whether to ask for a lease for ``sig`` now (none held, none asked for, not refused
        a moment ago)."""
        if sig in self.by_sig or sig in self.pending:
            return False
        denied = self.denied.get(sig)
        return denied is None or time.monotonic() >= denied

    def add(self, sig: _Sig, lease: Lease) -> None:
        """A lease granted for ``sig``."""
        self.pending.discard(sig)
        self.by_sig[sig] = lease
        self.by_id[lease.id] = lease

    def deny(self, sig: _Sig) -> None:
        """No lease for ``sig`` (a budget is near its limit, or Redis failed): ask again later."""
        self.pending.discard(sig)
        if len(self.denied) >= 1024:
            self.denied.clear()
        self.denied[sig] = time.monotonic() + DENIED_SECONDS

    def settle(self, lease_id: str, amount: float, cost: float) -> Lease | None:
        """A call served from ``lease_id`` with worst case ``amount`` settled, charging ``cost``
        (0 when released); the lease, when it is retired and has no call left (give it back)."""
        lease = self.by_id.get(lease_id)
        if lease is None:
            return None
        lease.used = max(0.0, lease.used - amount)
        lease.amount = max(0.0, lease.amount - cost)
        lease.calls -= 1
        if lease.retired and lease.calls <= 0:
            self.by_id.pop(lease_id, None)
            return lease
        return None

    def _retire(self, sig: _Sig, lease: Lease) -> list[Lease]:
        lease.retired = True
        if self.by_sig.get(sig) is lease:
            del self.by_sig[sig]
        if lease.calls <= 0:
            self.by_id.pop(lease.id, None)
            return [lease]
        return []

    def retire_all(self) -> list[Lease]:
        """Retire every lease; those with no call left (to give back)."""
        out: list[Lease] = []
        for sig, lease in list(self.by_sig.items()):
            out += self._retire(sig, lease)
        return out
