"""``SqliteBudgetOps``: the store gate on SQLite, one job per operation.

Each operation is one synchronous function run by ``SQLiteStore.run_transaction`` inside
``BEGIN IMMEDIATE`` ... ``COMMIT``: the database's write lock is taken first, so writers
serialise across processes, and the whole transaction is a single job for the store (inline,
or one hop to its thread when another connection holds the lock) rather than one await per
statement.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any, Protocol, TypeVar

import orjson

from elevenfactor.governance._gate_defs import EPSILON
from elevenfactor.governance._gate_ops import (
    EXPIRED,
    Key,
    Refused,
    Spent,
    Target,
    windows_json,
    windows_of,
)
from elevenfactor.governance._spend import Hold

__all__ = ["SqliteBudgetOps", "SyncTransactions"]

T = TypeVar("T")
_Usage = dict[Key, list[float]]
_STATUS = "SELECT status, amount FROM budget_holds WHERE id = ?"


class SyncTransactions(Protocol):
    """A store that runs a synchronous function in one transaction (``SQLiteStore``)."""

    async def run_transaction(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn(conn)`` inside ``BEGIN IMMEDIATE`` ... ``COMMIT``."""
        ...


class SqliteBudgetOps:
    """``BudgetOps`` on a SQLite store (see the module docstring)."""

    def __init__(self, store: SyncTransactions) -> None:
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
        job = partial(_reserve, hold_id, org_id, run_id, amount, at, expires_at, targets)
        return await self.store.run_transaction(job)

    async def commit(self, hold: Hold, cost: float, at: float, org_id: str) -> list[Spent]:
        """See ``BudgetOps.commit``."""
        return await self.store.run_transaction(partial(_commit, hold, cost, at, org_id))

    async def release(self, hold: Hold, at: float) -> None:
        """See ``BudgetOps.release``."""
        await self.store.run_transaction(partial(_release, hold, at))

    async def charge_lease(
        self, lease_id: str, windows: tuple[Key, ...], cost: float
    ) -> list[Spent]:
        """See ``BudgetOps.charge_lease``."""
        return await self.store.run_transaction(partial(_charge_lease, lease_id, windows, cost))


def _reserve(
    hold_id: str,
    org_id: str,
    run_id: str | None,
    amount: float,
    at: float,
    expires_at: float,
    targets: list[Target],
    conn: sqlite3.Connection,
) -> Hold | Refused:
    found = _existing(conn, hold_id)
    if found is not None:
        return found
    keys = [(t.budget_id, t.window) for t in targets]
    expired = conn.execute(
        f"{EXPIRED} AND org_id = ? ORDER BY expires_at LIMIT 100", (at, org_id)
    ).fetchall()
    conn.execute(
        "INSERT INTO budget_usage (budget_id, window_key, spent, reserved) VALUES "
        + ", ".join("(?, ?, 0, 0)" for _ in keys)
        + " ON CONFLICT DO NOTHING",
        [v for k in sorted(keys) for v in k],
    )
    extra = {k for h in expired for k in windows_of(h[2])}
    usage = _read(conn, [*keys, *extra])
    touched = _release_expired(conn, usage, expired, at)
    soft = []
    for i, t in enumerate(targets):
        row = usage.get(keys[i])
        if row is None:
            continue  # its budget was deleted meanwhile
        spent, reserved = row
        if spent + reserved + amount <= t.limit + EPSILON:
            continue
        if t.hard:
            _write(conn, usage, touched)
            return Refused(i, spent, reserved)
        soft.append(t.budget_id)
    for k in keys:
        if k in usage:
            usage[k][1] += amount
    _write(conn, usage, [*touched, *keys])
    conn.execute(
        "INSERT INTO budget_holds (id, org_id, amount, windows, soft, status, created_at,"
        " expires_at, run_id) VALUES (?, ?, ?, ?, ?, 'held', ?, ?, ?)",
        (
            hold_id,
            org_id,
            amount,
            windows_json(keys),
            orjson.dumps(soft).decode(),
            at,
            expires_at,
            run_id,
        ),
    )
    return Hold(hold_id, amount, tuple(keys), expires_at, tuple(soft))


def _commit(
    hold: Hold, cost: float, at: float, org_id: str, conn: sqlite3.Connection
) -> list[Spent]:
    usage = _read(conn, hold.windows)
    row = conn.execute(_STATUS, (hold.id,)).fetchone()
    status = None if row is None else str(row[0])
    if status in ("committed", "released"):
        return []
    held = float(row[1]) if row is not None and status == "held" else 0.0
    out = []
    for key in hold.windows:
        if key not in usage:
            continue  # the budget was deleted
        before = usage[key][0]
        usage[key][0] += cost
        usage[key][1] -= held
        out.append(Spent(key[0], key[1], before, usage[key][0]))
    _write(conn, usage, hold.windows)
    if row is not None:
        conn.execute(
            "UPDATE budget_holds SET status = 'committed', cost = ?, settled_at = ? WHERE id = ?",
            (cost, at, hold.id),
        )
        return out
    # A hold this store never saw (its row lost): record the charge rather than lose it.
    conn.execute(
        "INSERT INTO budget_holds (id, org_id, amount, windows, soft, status, cost, created_at,"
        " expires_at, settled_at) VALUES (?, ?, ?, ?, ?, 'committed', ?, ?, ?, ?)",
        (
            hold.id,
            org_id,
            hold.amount,
            windows_json(hold.windows),
            orjson.dumps(list(hold.soft)).decode(),
            cost,
            at,
            hold.expires_at,
            at,
        ),
    )
    return out


def _release(hold: Hold, at: float, conn: sqlite3.Connection) -> None:
    row = conn.execute(_STATUS, (hold.id,)).fetchone()
    if row is None or row[0] != "held":
        return
    usage = _read(conn, hold.windows)
    for key in hold.windows:
        if key in usage:
            usage[key][1] -= float(row[1])
    _write(conn, usage, hold.windows)
    conn.execute(
        "UPDATE budget_holds SET status = 'released', cost = NULL, settled_at = ? WHERE id = ?",
        (at, hold.id),
    )


def _charge_lease(
    lease_id: str, windows: tuple[Key, ...], cost: float, conn: sqlite3.Connection
) -> list[Spent]:
    usage = _read(conn, windows)
    row = conn.execute(_STATUS, (lease_id,)).fetchone()
    taken = 0.0
    if row is not None and row[0] == "held":
        taken = min(cost, float(row[1]))
        conn.execute(
            "UPDATE budget_holds SET amount = ? WHERE id = ?", (float(row[1]) - taken, lease_id)
        )
    out = []
    for key in windows:
        if key not in usage:
            continue  # the budget was deleted
        before = usage[key][0]
        usage[key][0] += cost
        usage[key][1] -= taken
        out.append(Spent(key[0], key[1], before, usage[key][0]))
    _write(conn, usage, windows)
    return out


def _existing(conn: sqlite3.Connection, hold_id: str) -> Hold | None:
    row = conn.execute(
        "SELECT amount, windows, soft, expires_at FROM budget_holds WHERE id = ?", (hold_id,)
    ).fetchone()
    if row is None:
        return None
    windows = tuple(windows_of(row[1]))
    return Hold(hold_id, float(row[0]), windows, float(row[3]), tuple(orjson.loads(row[2])))


def _read(conn: sqlite3.Connection, keys: Iterable[Key]) -> _Usage:
    """``{key: [spent, reserved]}`` of the usage rows of ``keys`` that exist (the write lock
    is already held: no row lock needed)."""
    flat = sorted(set(keys))
    if not flat:
        return {}
    rows = conn.execute(
        "SELECT budget_id, window_key, spent, reserved FROM budget_usage"
        " WHERE (budget_id, window_key) IN (VALUES " + ", ".join("(?, ?)" for _ in flat) + ")",
        [v for k in flat for v in k],
    ).fetchall()
    return {(str(r[0]), str(r[1])): [float(r[2]), float(r[3])] for r in rows}


def _write(conn: sqlite3.Connection, usage: _Usage, keys: Iterable[Key]) -> None:
    # Rounded to 1e-12 USD, so float residue neither accumulates nor leaves "reserved" a hair
    # above zero once every hold is settled.
    rows = [
        (round(usage[k][0], 12), max(0.0, round(usage[k][1], 12)), k[0], k[1])
        for k in set(keys)
        if k in usage
    ]
    if rows:
        conn.executemany(
            "UPDATE budget_usage SET spent = ?, reserved = ? WHERE budget_id = ?"
            " AND window_key = ?",
            rows,
        )


def _release_expired(
    conn: sqlite3.Connection, usage: _Usage, holds: list[Any], at: float
) -> set[Key]:
    """Mark ``holds`` (id, amount, windows) expired and give their amounts back in ``usage``;
    return the windows changed."""
    touched: set[Key] = set()
    for hold_id, amount, raw in holds:
        n = conn.execute(
            "UPDATE budget_holds SET status = 'expired', settled_at = ? WHERE id = ?"
            " AND status = 'held'",
            (at, hold_id),
        ).rowcount
        if not n:
            continue
        for key in windows_of(raw):
            if key in usage:
                usage[key][1] -= float(amount)
                touched.add(key)
    return touched
