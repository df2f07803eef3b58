"""``PgBudgetOps``: the store gate on PostgreSQL, one round trip per operation.

Each operation is one ``SELECT`` of a PL/pgSQL function (migration ``m010_budget_functions``),
run in autocommit mode on a pooled connection: the function is the transaction. The usage rows
it touches are locked with ``SELECT ... FOR UPDATE`` in a fixed order (budget id, window key,
byte order), so concurrent holds serialise per budget window and never deadlock, and they stay
locked only while the function runs on the server, never across a network round trip.
"""

from __future__ import annotations

from typing import Any

import orjson

from elevenfactor.governance._gate_ops import (
    Key,
    Refused,
    Spent,
    Target,
    windows_json,
    windows_of,
)
from elevenfactor.governance._spend import Hold
from elevenfactor.store import Store

__all__ = ["PgBudgetOps"]

_RESERVE = (
    "SELECT ef_budget_reserve(?, ?, ?, ?, ?, ?, ?::text[], ?::text[], ?::float8[], ?::boolean[], ?)"
)
_COMMIT = "SELECT ef_budget_commit(?, ?, ?, ?::text[], ?::text[], ?, ?, ?, ?, ?)"
_RELEASE = "SELECT ef_budget_release(?, ?, ?::text[], ?::text[])"
_CHARGE_LEASE = "SELECT ef_budget_charge_lease(?, ?, ?::text[], ?::text[])"


class PgBudgetOps:
    """``BudgetOps`` on a PostgreSQL store (see the module docstring)."""

    def __init__(self, store: Store) -> None:
        self.store = store

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
        """See ``BudgetOps.reserve``."""
        keys = tuple((t.budget_id, t.window) for t in targets)
        out = await self._call(
            _RESERVE,
            (
                hold_id,
                org_id,
                amount,
                at,
                expires_at,
                run_id,
                [t.budget_id for t in targets],
                [t.window for t in targets],
                [float(t.limit) for t in targets],
                [t.hard for t in targets],
                windows_json(keys),
            ),
        )
        if out[0] == "ok":
            return Hold(hold_id, amount, keys, expires_at, tuple(out[1:]))
        if out[0] == "over":
            return Refused(int(out[1]) - 1, float(out[2]), float(out[3]))
        return Hold(
            hold_id,
            float(out[1]),
            tuple(windows_of(out[2])),
            float(out[4]),
            tuple(orjson.loads(out[3])),
        )

    async def commit(self, hold: Hold, cost: float, at: float, org_id: str) -> list[Spent]:
        """See ``BudgetOps.commit``."""
        out = await self._call(
            _COMMIT,
            (
                hold.id,
                cost,
                at,
                [b for b, _ in hold.windows],
                [w for _, w in hold.windows],
                org_id,
                hold.amount,
                windows_json(hold.windows),
                orjson.dumps(list(hold.soft)).decode(),
                hold.expires_at,
            ),
        )
        return _spent(out)

    async def release(self, hold: Hold, at: float) -> None:
        """See ``BudgetOps.release``."""
        await self.store.fetchone(
            _RELEASE, (hold.id, at, [b for b, _ in hold.windows], [w for _, w in hold.windows])
        )

    async def charge_lease(
        self, lease_id: str, windows: tuple[Key, ...], cost: float
    ) -> list[Spent]:
        """See ``BudgetOps.charge_lease`` (migration ``m011_budget_leases``)."""
        out = await self._call(
            _CHARGE_LEASE, (lease_id, cost, [b for b, _ in windows], [w for _, w in windows])
        )
        return _spent(out)

    async def _call(self, sql: str, params: tuple[Any, ...]) -> list[str]:
        row = await self.store.fetchone(sql, params)
        assert row is not None  # a SELECT of a function answers one row
        out: list[str] = row[0]
        return out


def _spent(out: list[str]) -> list[Spent]:
    """``ok`` then ``budget_id, window_key, before, after`` per window charged."""
    return [
        Spent(out[i], out[i + 1], float(out[i + 2]), float(out[i + 3]))
        for i in range(1, len(out), 4)
    ]
