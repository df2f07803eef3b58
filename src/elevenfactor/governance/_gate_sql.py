"""``StoreSpendGate``: budgets reserved, committed and released in the store.

Each operation is one transaction. On PostgreSQL the usage rows it touches are locked with
``SELECT ... FOR UPDATE`` in a fixed order (budget id, window key, byte order), so concurrent
holds serialise per budget window and never deadlock; rows are always locked before hold rows.
On SQLite the store's ``transaction()`` is ``BEGIN IMMEDIATE``, which takes the database's write
lock first and so serialises writers across processes.

A reserve first releases the expired holds of its organisation (a process that died holding
them), then checks every hard budget, then holds the amount against all of them, or raises
``BudgetExceeded`` having held nothing. Settled holds stay settled: reserving an existing hold
id returns it, and committing or releasing a settled hold does nothing.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Any

import orjson
import psycopg

from elevenfactor.errors import BudgetUnavailable
from elevenfactor.governance._alerts import Alerts, crossed
from elevenfactor.governance._budgets import Budget, now
from elevenfactor.governance._gate_defs import (
    EPSILON,
    CachedGate,
    Definitions,
    check_money,
    exceeded,
)
from elevenfactor.governance._spend import Charge, Hold
from elevenfactor.store import Executor, Store

__all__ = ["StoreSpendGate", "expire_holds"]

_Key = tuple[str, str]
_DB_ERRORS = (sqlite3.Error, psycopg.Error, OSError)


def _unavailable(exc: BaseException) -> BudgetUnavailable:
    return BudgetUnavailable(
        f"the budget store cannot be reached: {exc}",
        hint="the call was refused rather than let through unaccounted; check DATABASE_URL",
    )


async def _lock(tx: Executor, dialect: str, keys: Iterable[_Key]) -> dict[_Key, list[float]]:
    """Lock the usage rows of ``keys`` (in a fixed order); ``{key: [spent, reserved]}`` of
    those that exist."""
    flat = sorted(set(keys))
    if not flat:
        return {}
    pg = dialect == "postgresql"
    order = 'budget_id COLLATE "C", window_key COLLATE "C"' if pg else "budget_id, window_key"
    rows = await tx.fetchall(
        "SELECT budget_id, window_key, spent, reserved FROM budget_usage"
        " WHERE (budget_id, window_key) IN (VALUES "
        + ", ".join("(?, ?)" for _ in flat)
        + f") ORDER BY {order}"
        + (" FOR UPDATE" if pg else ""),
        [v for k in flat for v in k],
    )
    return {(str(r[0]), str(r[1])): [float(r[2]), float(r[3])] for r in rows}


async def _write(tx: Executor, usage: dict[_Key, list[float]], keys: Iterable[_Key]) -> None:
    # Rounded to 1e-12 USD, so float residue neither accumulates nor leaves "reserved" a hair
    # above zero once every hold is settled.
    rows = [
        (round(usage[k][0], 12), max(0.0, round(usage[k][1], 12)), k[0], k[1])
        for k in set(keys)
        if k in usage
    ]
    if rows:
        await tx.executemany(
            "UPDATE budget_usage SET spent = ?, reserved = ? WHERE budget_id = ?"
            " AND window_key = ?",
            rows,
        )


def _windows(raw: str) -> list[_Key]:
    return [(str(b), str(w)) for b, w in orjson.loads(raw)]


async def _release_expired(
    tx: Executor, usage: dict[_Key, list[float]], holds: list[tuple[Any, ...]], at: float
) -> set[_Key]:
    """Mark ``holds`` (id, amount, windows) expired and give their amounts back in ``usage``
    (whose rows are locked); return the windows changed."""
    touched: set[_Key] = set()
    for hold_id, amount, raw in holds:
        n = await tx.execute(
            "UPDATE budget_holds SET status = 'expired', settled_at = ? WHERE id = ?"
            " AND status = 'held'",
            (at, hold_id),
        )
        if not n:
            continue
        for key in _windows(raw):
            if key in usage:
                usage[key][1] -= float(amount)
                touched.add(key)
    return touched


_EXPIRED = "SELECT id, amount, windows FROM budget_holds WHERE status = 'held' AND expires_at < ?"


async def expire_holds(db: Store, at: float | None = None, *, batch: int = 200) -> int:
    """Release every hold that expired before ``at`` (default: now), a batch per transaction;
    return how many. Reserves do this lazily for their organisation; call it periodically so
    idle budgets are whole again too."""
    ts = now() if at is None else at
    total = 0
    if await db.fetchone(f"{_EXPIRED} LIMIT 1", (ts,)) is None:
        return 0  # the usual case: no write transaction (no SQLite write lock) for nothing
    while True:
        async with db.transaction() as tx:
            holds = await tx.fetchall(f"{_EXPIRED} ORDER BY expires_at LIMIT ?", (ts, batch))
            if not holds:
                return total
            keys = {k for h in holds for k in _windows(h[2])}
            usage = await _lock(tx, db.dialect, keys)
            touched = await _release_expired(tx, usage, holds, ts)
            await _write(tx, usage, touched)
        total += len(holds)
        if len(holds) < batch:
            return total


class _Duplicate(Exception):
    """Another transaction inserted the same hold id first."""


class StoreSpendGate(CachedGate):
    """A ``SpendGate`` on the store (see the module docstring)."""

    def __init__(self, store: Store, *, refresh: float = 1.0, alerts: Alerts | None = None) -> None:
        self.store = store
        self.defs = Definitions(store, refresh=refresh)
        self.alerts = alerts or Alerts()

    async def reserve(
        self, hold_id: str, charge: Charge, amount: float, ttl: float, force: bool = False
    ) -> Hold:
        """Hold ``amount`` against every budget that applies, or raise ``BudgetExceeded``
        (with ``force``, never: hard budgets are passed like soft ones, once)."""
        at, targets = await self.targets(charge, amount, ttl, force)
        if not targets:
            return Hold(hold_id, amount)
        try:
            return await self._reserve(hold_id, charge, amount, at + ttl, targets, at)
        except _DB_ERRORS as exc:
            raise _unavailable(exc) from exc

    async def _reserve(
        self,
        hold_id: str,
        charge: Charge,
        amount: float,
        expires_at: float,
        targets: list[tuple[Budget, str]],
        at: float,
    ) -> Hold:
        try:
            async with self.store.transaction() as tx:
                outcome = await self._hold(tx, hold_id, charge, amount, expires_at, targets, at)
        except _Duplicate:
            outcome = None
        if isinstance(outcome, Exception):
            raise outcome
        if outcome is None:  # the same id was reserved concurrently: theirs stands
            outcome = await _existing(self.store, hold_id)
            assert outcome is not None
        return outcome

    async def _hold(
        self,
        tx: Executor,
        hold_id: str,
        charge: Charge,
        amount: float,
        expires_at: float,
        targets: list[tuple[Budget, str]],
        at: float,
    ) -> Hold | Exception:
        """Inside the transaction: the hold, or the error to raise once the expiries it made
        are committed."""
        found = await _existing(tx, hold_id)
        if found is not None:
            return found
        keys = [(b.id, k) for b, k in targets]
        expired = await tx.fetchall(
            f"{_EXPIRED} AND org_id = ? ORDER BY expires_at LIMIT 100", (at, charge.org_id)
        )
        await tx.execute(
            "INSERT INTO budget_usage (budget_id, window_key, spent, reserved) VALUES "
            + ", ".join("(?, ?, 0, 0)" for _ in keys)
            + " ON CONFLICT DO NOTHING",
            [v for k in sorted(keys) for v in k],
        )
        extra = {k for h in expired for k in _windows(h[2])}
        usage = await _lock(tx, self.store.dialect, [*keys, *extra])
        touched = await _release_expired(tx, usage, expired, at)
        soft = []
        for b, key in targets:
            spent, reserved = usage[(b.id, key)]
            if spent + reserved + amount <= b.limit + EPSILON:
                continue
            if not b.soft:
                await _write(tx, usage, touched)
                return exceeded(b, key, spent, max(0.0, reserved), amount)
            soft.append(b.id)
        for k in keys:
            usage[k][1] += amount
        await _write(tx, usage, [*touched, *keys])
        n = await tx.execute(
            "INSERT INTO budget_holds (id, org_id, amount, windows, soft, status, created_at,"
            " expires_at, run_id) VALUES (?, ?, ?, ?, ?, 'held', ?, ?, ?) ON CONFLICT DO NOTHING",
            (
                hold_id,
                charge.org_id,
                amount,
                orjson.dumps([list(k) for k in keys]).decode(),
                orjson.dumps(soft).decode(),
                at,
                expires_at,
                charge.run_id,
            ),
        )
        if not n:
            raise _Duplicate  # roll our hold back
        return Hold(hold_id, amount, tuple(keys), expires_at, tuple(soft))

    async def commit(self, hold: Hold, cost: float) -> None:
        """Charge ``cost`` and release the hold (once; an expired hold is still charged)."""
        cost = check_money(cost, "cost")
        if hold.empty:
            return
        if not self.defs.fresh():
            await self.defs.ensure()
        at = now()
        fire: list[tuple[Budget, str, float, float]] = []
        try:
            async with self.store.transaction() as tx:
                usage = await _lock(tx, self.store.dialect, hold.windows)
                row = await tx.fetchone(
                    "SELECT status, amount FROM budget_holds WHERE id = ?", (hold.id,)
                )
                status = None if row is None else str(row[0])
                if status in ("committed", "released"):
                    return
                for key in hold.windows:
                    if key not in usage:
                        continue  # the budget was deleted
                    before = usage[key][0]
                    usage[key][0] += cost
                    if status == "held":
                        usage[key][1] -= float(row[1]) if row else 0.0
                    budget = self.defs.budget(key[0])
                    if budget is not None:
                        hit = crossed(budget, before, usage[key][0])
                        for t in await self.alerts.record(tx, budget, key[1], hit):
                            fire.append((budget, key[1], t, usage[key][0]))
                await _write(tx, usage, hold.windows)
                await self._settle(tx, hold, "committed", cost, at, exists=row is not None)
        except _DB_ERRORS as exc:
            raise _unavailable(exc) from exc
        for budget, wkey, t, spent in fire:
            self.alerts.fire(budget, wkey, t, spent)

    async def release(self, hold: Hold) -> None:
        """Give the whole hold back (once; nothing for a settled or expired hold)."""
        if hold.empty:
            return
        try:
            async with self.store.transaction() as tx:
                usage = await _lock(tx, self.store.dialect, hold.windows)
                row = await tx.fetchone(
                    "SELECT status, amount FROM budget_holds WHERE id = ?", (hold.id,)
                )
                if row is None or row[0] != "held":
                    return
                for key in hold.windows:
                    if key in usage:
                        usage[key][1] -= float(row[1])
                await _write(tx, usage, hold.windows)
                await self._settle(tx, hold, "released", None, now(), exists=True)
        except _DB_ERRORS as exc:
            raise _unavailable(exc) from exc

    async def _settle(
        self, tx: Executor, hold: Hold, status: str, cost: float | None, at: float, *, exists: bool
    ) -> None:
        if exists:
            await tx.execute(
                "UPDATE budget_holds SET status = ?, cost = ?, settled_at = ? WHERE id = ?",
                (status, cost, at, hold.id),
            )
            return
        # A hold this store never saw (its row lost): record the charge rather than lose it.
        known = [b for b in (self.defs.budget(bid) for bid, _ in hold.windows) if b is not None]
        org = known[0].org_id if known else ""
        await tx.execute(
            "INSERT INTO budget_holds (id, org_id, amount, windows, soft, status, cost,"
            " created_at, expires_at, settled_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                hold.id,
                org,
                hold.amount,
                orjson.dumps([list(k) for k in hold.windows]).decode(),
                orjson.dumps(list(hold.soft)).decode(),
                status,
                cost,
                at,
                hold.expires_at,
                at,
            ),
        )

    async def expire_holds(self, at: float | None = None) -> int:
        """Release the holds that expired (see ``expire_holds``)."""
        return await expire_holds(self.store, at)

    async def usage(self, budget_id: str, window_key: str) -> tuple[float, float]:
        """``(spent, reserved)`` of one budget window."""
        row = await self.store.fetchone(
            "SELECT spent, reserved FROM budget_usage WHERE budget_id = ? AND window_key = ?",
            (budget_id, window_key),
        )
        return (float(row[0]), max(0.0, float(row[1]))) if row else (0.0, 0.0)

    async def ready(self) -> bool:
        """The store answers."""
        try:
            await self.store.fetchone("SELECT 1")
        except _DB_ERRORS:
            return False
        return True

    async def aclose(self) -> None:
        """Let pending alert webhooks finish (briefly); the store is the caller's to close."""
        await self.alerts.aclose()


async def _existing(db: Executor, hold_id: str) -> Hold | None:
    row = await db.fetchone(
        "SELECT amount, windows, soft, expires_at FROM budget_holds WHERE id = ?", (hold_id,)
    )
    if row is None:
        return None
    windows = tuple(_windows(row[1]))
    return Hold(hold_id, float(row[0]), windows, float(row[3]), tuple(orjson.loads(row[2])))
