"""``open_spend_gate``: the budget engine a deployment uses."""

from __future__ import annotations

from typing import Protocol

from elevenfactor.config import Settings
from elevenfactor.governance._budgets import Budget
from elevenfactor.governance._gate_sql import StoreSpendGate
from elevenfactor.governance._spend import SpendGate
from elevenfactor.store import Store

__all__ = ["SpendEngine", "open_spend_gate"]


class SpendEngine(SpendGate, Protocol):
    """A ``SpendGate`` a deployment runs: with a readiness probe, periodic expiry, exact usage
    of a budget window, and a close."""

    def budget(self, budget_id: str) -> Budget | None:
        """The cached definition of a budget (its scope and ``on_exceed`` policy)."""
        ...

    async def ready(self) -> bool:
        """The backend answers (for ``/readyz``)."""
        ...

    async def expire_holds(self, at: float | None = None) -> int:
        """Release the holds that expired before ``at`` (default: now); how many."""
        ...

    async def usage(self, budget_id: str, window_key: str) -> tuple[float, float]:
        """``(spent, reserved)`` of one budget window."""
        ...

    async def aclose(self) -> None:
        """Finish background work (alerts, the Redis gate's store writer) and disconnect."""
        ...


def open_spend_gate(settings: Settings, store: Store, *, refresh: float = 1.0) -> SpendEngine:
    """Redis (``RedisSpendGate``) when ``REDIS_URL`` is set, else the store
    (``StoreSpendGate``). Both have ``ready()``, ``expire_holds()`` and ``aclose()``."""
    if settings.redis_url:
        from elevenfactor.governance._gate_redis import RedisSpendGate

        return RedisSpendGate(settings.redis_url, store, settings.redis_prefix, refresh=refresh)
    return StoreSpendGate(store, refresh=refresh)
