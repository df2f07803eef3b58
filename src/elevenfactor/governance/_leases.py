"""Leases: budget capacity a gateway process sets aside in Redis for its next calls.

A gateway call with a budget would otherwise cost a Redis round trip (or a store transaction:
``StoreSpendGate`` keeps leases the same way, in the store) before it can start. While
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
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from elevenfactor.governance._budgets import Budget

__all__ = ["LEASE_CALLS", "LEASE_HEADROOM", "LEASE_SECONDS", "Lease", "Leases", "signature"]

LEASE_CALLS = 32
"""A lease covers this many calls' worst case (of the call that asked for it)."""
LEASE_HEADROOM = 4
"""A lease is granted only if every budget could cover this many leases of its size."""
LEASE_SECONDS = 2.0
"""How long a lease serves new calls."""
MAX_LEASE_CALLS = 4096
"""The most calls' worst case a lease may cover (``Leases.calls_for``)."""
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
    size: float = 0.0
    """What it held when granted (``amount`` shrinks as its calls are charged)."""

    def __post_init__(self) -> None:
        if not self.size:
            self.size = self.amount

    def low(self, now: float) -> bool:
        """Half used up, or half its time gone: time to ask for the next one."""
        return self.amount - self.used < self.size / 2 or now >= self.until - LEASE_SECONDS / 2

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
        self.serving: set[str] = set()
        """The ids of the calls served from a lease and not settled yet."""
        self.scale: dict[_Sig, int] = {}
        """How many worst cases the next lease of a signature holds (``calls_for``)."""

    def calls_for(self, sig: _Sig) -> int:
        """How many calls' worst case to ask for in the next lease of ``sig``: ``LEASE_CALLS``,
        doubled each time a lease was used up within a quarter of ``LEASE_SECONDS`` (a busy
        gateway renews about twice per lease period, not once per 32 calls), halved again
        when one aged out mostly unused; at most ``MAX_LEASE_CALLS``."""
        return self.scale.get(sig, LEASE_CALLS)

    def take(self, sig: _Sig, amount: float, hold_id: str) -> tuple[Lease | None, list[Lease]]:
        """A lease that serves call ``hold_id`` of worst case ``amount`` (counted in it), or
        None; and the leases retired now that have no call left (to give back)."""
        lease = self.by_sig.get(sig)
        if lease is None:
            return None, []
        now = time.monotonic()
        if lease.covers(amount, now) and hold_id not in self.serving:
            lease.used += amount
            lease.calls += 1
            self.serving.add(hold_id)
            return lease, []
        if now >= lease.until or lease.amount - lease.used < amount * 2:
            if now >= lease.until and lease.size - lease.amount + lease.used < lease.size / 4:
                self.scale[sig] = max(LEASE_CALLS, self.calls_for(sig) // 2)  # mostly unused
            return None, self._retire(sig, lease)  # old, or nearly used up: make way for a new one
        return None, []

    def wants(self, sig: _Sig) -> bool:
        """Whether to ask for a lease for ``sig`` now: none held or the one held is running low
        (``Lease.low``: the next is asked for ahead, so calls rarely go without), none asked
        for already, and none refused a moment ago."""
        if sig in self.pending:
            return False
        now = time.monotonic()
        held = self.by_sig.get(sig)
        if held is not None and not held.low(now):
            return False
        denied = self.denied.get(sig)
        return denied is None or now >= denied

    def add(self, sig: _Sig, lease: Lease) -> list[Lease]:
        """A lease granted for ``sig``; it replaces the one held (retired: returned when it
        has no call left, to give back)."""
        self.pending.discard(sig)
        old = self.by_sig.get(sig)
        ended: list[Lease] = []
        if old is not None:
            if time.monotonic() < old.until - LEASE_SECONDS * 3 / 4:  # used up quickly
                self.scale[sig] = min(MAX_LEASE_CALLS, self.calls_for(sig) * 2)
            ended = self._retire(sig, old)
        if len(self.scale) >= 1024:
            self.scale.clear()
        self.by_sig[sig] = lease
        self.by_id[lease.id] = lease
        return ended

    def deny(self, sig: _Sig) -> None:
        """No lease for ``sig`` (a budget is near its limit, or Redis failed): ask again later."""
        self.pending.discard(sig)
        if len(self.denied) >= 1024:
            self.denied.clear()
        self.denied[sig] = time.monotonic() + DENIED_SECONDS

    def settle(
        self, hold_id: str, lease_id: str, amount: float, cost: float
    ) -> tuple[bool, Lease | None]:
        """Call ``hold_id``, served from ``lease_id`` with worst case ``amount``, settled,
        charging ``cost`` (0 when released): whether it was still unsettled (False: settled
        before, nothing to do), and the lease when it is retired and has no call left (give
        it back)."""
        if hold_id not in self.serving:
            return False, None
        self.serving.discard(hold_id)
        lease = self.by_id.get(lease_id)
        if lease is None:
            return True, None
        lease.used = max(0.0, lease.used - amount)
        lease.amount = max(0.0, lease.amount - cost)
        lease.calls -= 1
        if lease.retired and lease.calls <= 0:
            self.by_id.pop(lease_id, None)
            return True, lease
        return True, None

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


def signature(targets: Sequence[tuple[Budget, str]]) -> _Sig:
    """What calls served from one lease share: their budgets, windows and limits."""
    return tuple((b.id, k, b.limit, b.soft) for b, k in targets)
