"""What a model call charges and who may stop it: the contract between callers (the gateway, the
agent loop) and the budget engine.

A caller describes the call as a ``Charge`` (who, on whose behalf, through which route and
deployments) and asks a ``SpendGate`` to ``reserve`` its worst-case cost before the call. The
gate finds every budget that applies, and either holds the amount against all of them at once
(a ``Hold``) or raises ``BudgetExceeded`` naming the first budget that cannot cover it. After
the call the caller ``commit``s the real cost (the rest of the hold is released) or
``release``s the hold when nothing was spent. A hold that is never settled (its process died)
expires after its ``ttl`` and is released by whoever next touches the budget.

Hold ids are chosen by the caller: inside a durable run they derive from the step's key, so a
reservation retried after a crash finds the hold it already made instead of making a second one,
and a commit that is retried charges once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = ["Charge", "Hold", "SpendGate"]


@dataclass(frozen=True, slots=True)
class Charge:
    """The dimensions a budget or a kill switch can match, for one model call.

    ``route`` is what the caller asked for; ``models`` the deployments the call may end up on
    (a failover chain may reach any of them), so a ``model:NAME`` budget matches either.
    """

    org_id: str
    team_id: str | None = None
    user_id: str | None = None
    key_id: str | None = None
    agent: str | None = None
    run_id: str | None = None
    route: str | None = None
    models: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Hold:
    """Money held against budgets for one call. ``budgets`` is empty when no budget applies
    (nothing was written anywhere); ``windows`` pairs each budget id with the window it was
    charged in, so the commit lands in the same window even if it closes meanwhile."""

    id: str
    amount: float
    windows: tuple[tuple[str, str], ...] = ()
    expires_at: float = 0.0
    soft: tuple[str, ...] = field(default=())
    """Soft budgets the call went past (it was let through; alerts fired)."""
    lease: str | None = None
    """The lease it was served from (a gateway call), if any: never journaled."""

    @property
    def empty(self) -> bool:
        """No budget applies: commit and release cost nothing."""
        return not self.windows

    def to_dict(self) -> dict[str, Any]:
        """The hold as journaled inside a run."""
        return {
            "id": self.id,
            "amount": self.amount,
            "windows": [list(w) for w in self.windows],
            "expires_at": self.expires_at,
            "soft": list(self.soft),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Hold:
        """Rebuild a journaled hold."""
        return cls(
            id=str(data["id"]),
            amount=float(data["amount"]),
            windows=tuple((str(b), str(w)) for b, w in data.get("windows", [])),
            expires_at=float(data.get("expires_at", 0.0)),
            soft=tuple(data.get("soft", [])),
        )


class SpendGate(Protocol):
    """Reserves, commits and releases spend against every budget that applies to a call.

    Implementations: the store (one transaction on PostgreSQL; on SQLite an immediate
    transaction, which serialises writers across processes), and Redis (one script) when
    ``REDIS_URL`` is set. Each is atomic across processes.
    """

    async def check(self, charge: Charge) -> None:
        """Raise ``CallKilled`` if a kill switch covers the charge (cheap: cached)."""
        ...

    def covered(self, charge: Charge) -> bool:
        """Whether any budget applies to ``charge`` (from the cached definitions, no I/O): when
        none does, callers skip estimating the worst case and reserving altogether."""
        ...

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
        """Hold ``amount`` against every budget that applies to ``charge``, or raise
        ``BudgetExceeded`` (nothing held anywhere). Idempotent by ``hold_id``: a second call
        with the same id returns the first hold. Raises ``BudgetUnavailable`` when the backend
        cannot be reached (fail closed). ``force`` lets the call through past hard limits
        once (a reviewer approved it): those budgets are listed in ``Hold.soft``. ``pooled``:
        the caller never retries with the same id (a gateway call), so the gate may serve the
        hold from capacity it set aside beforehand (Redis leases); others ignore it."""
        ...

    async def commit(self, hold: Hold, cost: float) -> None:
        """Charge ``cost`` (which may exceed the hold: the real cost is always recorded) and
        release the rest. Idempotent by ``hold.id``. Committing an expired hold still charges."""
        ...

    async def release(self, hold: Hold) -> None:
        """Release the whole hold without charging. Idempotent."""
        ...
