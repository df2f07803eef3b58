"""What ``StoreSpendGate`` asks of its store, one call per operation.

Two implementations: ``PgBudgetOps`` (a PostgreSQL function per operation: one round trip) and
``SqliteBudgetOps`` (a synchronous job in one ``BEGIN IMMEDIATE`` transaction). The gate matches
budgets, builds the errors and fires the alerts; these only read and write the budget tables.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

import orjson

from elevenfactor.governance._spend import Hold

__all__ = [
    "EXPIRED",
    "BudgetOps",
    "Key",
    "Refused",
    "Spent",
    "Target",
    "windows_json",
    "windows_of",
]

Key = tuple[str, str]
"""``(budget id, window key)``: one usage row."""

EXPIRED = "SELECT id, amount, windows FROM budget_holds WHERE status = 'held' AND expires_at < ?"
"""Held holds past their expiry (one parameter: now)."""


class Target(NamedTuple):
    """A budget window a reservation is held in, with what its check needs."""

    budget_id: str
    window: str
    limit: float
    hard: bool


class Refused(NamedTuple):
    """``targets[position]`` is a hard budget that cannot cover the amount; nothing held."""

    position: int
    spent: float
    reserved: float


class Spent(NamedTuple):
    """One window a commit charged: its spend before and after (for alert thresholds)."""

    budget_id: str
    window: str
    before: float
    after: float


class BudgetOps(Protocol):
    """The store side of reserve, commit and release, each atomic."""

    async def reserve(
        self,
        hold_id: str,
        org_id: str,
        run_id: str | None,
        amount: float,
        at: float,
        expires_at: float,
        targets: list[Target],
    ) -> Hold | Refused:
        """The stored hold if ``hold_id`` exists; else release the organisation's expired
        holds, then hold ``amount`` in every target, or refuse (holding nothing) at the first
        hard one that cannot cover it. ``targets`` are in lock order."""
        ...

    async def commit(self, hold: Hold, cost: float, at: float, org_id: str) -> list[Spent]:
        """Charge ``cost`` and release the hold; the windows charged (none if it was already
        settled). A hold the store never saw is recorded, under ``org_id``."""
        ...

    async def release(self, hold: Hold, at: float) -> None:
        """Give a held hold back; nothing for any other."""
        ...

    async def charge_lease(
        self, lease_id: str, windows: tuple[Key, ...], cost: float
    ) -> list[Spent]:
        """Charge ``cost`` (calls served from lease ``lease_id``) to ``windows`` and shrink the
        lease by as much while it is held; the windows charged."""
        ...


def windows_of(raw: str) -> list[Key]:
    """The windows of a hold, from their JSON in ``budget_holds.windows``."""
    return [(str(b), str(w)) for b, w in orjson.loads(raw)]


def windows_json(windows: list[Key] | tuple[Key, ...]) -> str:
    """Windows as ``budget_holds.windows`` stores them."""
    return orjson.dumps([list(k) for k in windows]).decode()
