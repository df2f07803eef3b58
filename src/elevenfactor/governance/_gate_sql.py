"""``StoreSpendGate``: budgets reserved, committed and released in the store.

Each operation is one transaction and one request to the store: on PostgreSQL a call of a
PL/pgSQL function (one round trip: ``_gate_pg``), on SQLite a synchronous job in ``BEGIN
IMMEDIATE``, which takes the database's write lock first and so serialises writers across
processes (``_gate_sqlite``). On PostgreSQL the usage rows an operation touches are locked with
``SELECT ... FOR UPDATE`` in a fixed order (budget id, window key, byte order), so concurrent
holds serialise per budget window and never deadlock; rows are always locked before hold rows.

A reserve first releases the expired holds of its organisation (a process that died holding
them), then checks every hard budget, then holds the amount against all of them, or raises
``BudgetExceeded`` having held nothing. Settled holds stay settled: reserving an existing hold
id returns it, and committing or releasing a settled hold does nothing.

A commit reports each window's spend before and after; only when that crosses an alert
threshold does a second, short transaction claim the alert (once per threshold per window).

``expire_holds``, the periodic sweep, is the same on both stores: a batch per transaction.

Gateway calls (``pooled``) are served from leases as on Redis (``_leases``): a lease is an
ordinary hold of ``LEASE_CALLS`` worst cases, taken only while every budget keeps
``LEASE_HEADROOM - 1`` times as much free, and a call served from it costs no round trip to
reserve. Their commits are written in groups: while one group is being written, the commits
that arrive wait and go together in the next (one transaction per lease per group, which charges
the spend and shrinks the lease by as much); a commit returns once its group is written. A
lease is given back after its last call's charge, in the same group, so no process can reserve
capacity a charge is about to take.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
import uuid
from collections.abc import Iterable
from typing import Any, cast

import psycopg

from elevenfactor.errors import BudgetUnavailable
from elevenfactor.governance._alerts import Alerts, crossed
from elevenfactor.governance._budgets import Budget, now
from elevenfactor.governance._gate_defs import CachedGate, Definitions, check_money, exceeded
from elevenfactor.governance._gate_ops import (
    EXPIRED,
    BudgetOps,
    Key,
    Refused,
    Spent,
    Target,
    windows_of,
)
from elevenfactor.governance._gate_pg import PgBudgetOps
from elevenfactor.governance._gate_sqlite import SqliteBudgetOps, SyncTransactions
from elevenfactor.governance._leases import (
    LEASE_HEADROOM,
    LEASE_SECONDS,
    Lease,
    Leases,
    signature,
)
from elevenfactor.governance._spend import Charge, Hold
from elevenfactor.store import Executor, Store

__all__ = ["StoreSpendGate", "expire_holds"]

logger = logging.getLogger("elevenfactor.budgets")

_DB_ERRORS = (sqlite3.Error, psycopg.Error, OSError)


def _unavailable(exc: BaseException) -> BudgetUnavailable:
    hint = "the call was refused rather than let through unaccounted; check DATABASE_URL"
    if isinstance(exc, psycopg.errors.UndefinedFunction):
        hint = "the database lacks the budget functions: run `elevenfactor migrate`"
    return BudgetUnavailable(f"the budget store cannot be reached: {exc}", hint=hint)


def _ops(store: Store) -> BudgetOps:
    if store.dialect == "postgresql":
        return PgBudgetOps(store)
    if store.dialect == "sqlite" and hasattr(store, "run_transaction"):
        return SqliteBudgetOps(cast(SyncTransactions, store))
    raise ValueError(f"StoreSpendGate needs a SQLite or PostgreSQL store; got {store!r}")


# -- the periodic sweep (statement by statement, on either store) ----------------------------


async def _lock(tx: Executor, dialect: str, keys: Iterable[Key]) -> dict[Key, list[float]]:
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


async def _write(tx: Executor, usage: dict[Key, list[float]], keys: Iterable[Key]) -> None:
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


async def _release_expired(
    tx: Executor, usage: dict[Key, list[float]], holds: list[tuple[Any, ...]], at: float
) -> set[Key]:
    """Mark ``holds`` (id, amount, windows) expired and give their amounts back in ``usage``
    (whose rows are locked); return the windows changed."""
    touched: set[Key] = set()
    for hold_id, amount, raw in holds:
        n = await tx.execute(
            "UPDATE budget_holds SET status = 'expired', settled_at = ? WHERE id = ?"
            " AND status = 'held'",
            (at, hold_id),
        )
        if not n:
            continue
        for key in windows_of(raw):
            if key in usage:
                usage[key][1] -= float(amount)
                touched.add(key)
    return touched


async def expire_holds(db: Store, at: float | None = None, *, batch: int = 200) -> int:
    """Release every hold that expired before ``at`` (default: now), a batch per transaction;
    return how many. Reserves do this lazily for their organisation; call it periodically so
    idle budgets are whole again too."""
    ts = now() if at is None else at
    total = 0
    if await db.fetchone(f"{EXPIRED} LIMIT 1", (ts,)) is None:
        return 0  # the usual case: no write transaction (no SQLite write lock) for nothing
    while True:
        async with db.transaction() as tx:
            holds = await tx.fetchall(f"{EXPIRED} ORDER BY expires_at LIMIT ?", (ts, batch))
            if not holds:
                return total
            keys = {k for h in holds for k in windows_of(h[2])}
            usage = await _lock(tx, db.dialect, keys)
            touched = await _release_expired(tx, usage, holds, ts)
            await _write(tx, usage, touched)
        total += len(holds)
        if len(holds) < batch:
            return total


# -- the gate -------------------------------------------------------------------------------


class StoreSpendGate(CachedGate):
    """A ``SpendGate`` on the store (see the module docstring)."""

    def __init__(self, store: Store, *, refresh: float = 1.0, alerts: Alerts | None = None) -> None:
        self.store = store
        self.defs = Definitions(store, refresh=refresh)
        self.alerts = alerts or Alerts()
        self._ops = _ops(store)
        self.leases = Leases()
        self._group = _Group()
        self._writer: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()

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
        if pooled and not force:
            sig = signature(targets)
            lease, ended = self.leases.take(sig, amount, hold_id)
            self._group.give_back += ended
            if ended:
                self._write_soon()
            if self.leases.wants(sig):
                self.leases.pending.add(sig)
                self._spawn(
                    self._lease(sig, charge, targets, amount * self.leases.calls_for(sig), ttl)
                )
            if lease is not None:
                return Hold(hold_id, amount, lease.windows, lease.expires_at, lease=lease.id)
        plan = [Target(b.id, key, float(b.limit), not b.soft) for b, key in targets]
        try:
            out = await self._ops.reserve(
                hold_id, charge.org_id, charge.run_id, amount, at, at + ttl, plan
            )
        except _DB_ERRORS as exc:
            raise _unavailable(exc) from exc
        if isinstance(out, Refused):
            budget, key = targets[out.position]
            raise exceeded(budget, key, out.spent, max(0.0, out.reserved), amount)
        return out

    async def commit(self, hold: Hold, cost: float) -> None:
        """Charge ``cost`` and release the hold (once; an expired hold is still charged)."""
        cost = check_money(cost, "cost")
        if hold.empty:
            return
        if not self.defs.fresh():
            await self.defs.ensure()
        # The organisation is only written for a hold the store never saw.
        known = [b for b in (self.defs.budget(bid) for bid, _ in hold.windows) if b is not None]
        org = known[0].org_id if known else ""
        if hold.lease is not None:
            await self._charge_leased(hold, cost)
            return
        try:
            charged = await self._ops.commit(hold, cost, now(), org)
        except _DB_ERRORS as exc:
            raise _unavailable(exc) from exc
        await self._alert(charged)

    async def _alert(self, charged: list[Spent]) -> None:
        """Claim and fire the thresholds the commit crossed (rare: a transaction only then)."""
        hits: list[tuple[Budget, Spent, list[float]]] = []
        for s in charged:
            budget = self.defs.budget(s.budget_id)
            if budget is not None:
                thresholds = crossed(budget, s.before, s.after)
                if thresholds:
                    hits.append((budget, s, thresholds))
        if not hits:
            return
        fire: list[tuple[Budget, Spent, float]] = []
        try:
            async with self.store.transaction() as tx:
                for budget, s, thresholds in hits:
                    for t in await self.alerts.record(tx, budget, s.window, thresholds):
                        fire.append((budget, s, t))
        except _DB_ERRORS as exc:
            # The charge stands; only the alert is lost.
            logger.warning(
                "could not record the alerts of budgets %s: %r", [b.id for b, _, _ in hits], exc
            )
            return
        for budget, s, t in fire:
            self.alerts.fire(budget, s.window, t, s.after)

    async def release(self, hold: Hold) -> None:
        """Give the whole hold back (once; nothing for a settled or expired hold)."""
        if hold.empty:
            return
        if hold.lease is not None:  # back into its lease: nothing to write
            _, ended = self.leases.settle(hold.id, hold.lease, hold.amount, 0.0)
            if ended is not None:
                self._group.give_back.append(ended)
                self._write_soon()
            return
        try:
            await self._ops.release(hold, now())
        except _DB_ERRORS as exc:
            raise _unavailable(exc) from exc

    # -- leases ---------------------------------------------------------------------------

    def _spawn(self, job: Any) -> None:
        task = asyncio.ensure_future(job)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _lease(
        self,
        sig: tuple[Any, ...],
        charge: Charge,
        targets: list[tuple[Budget, str]],
        size: float,
        ttl: float,
    ) -> None:
        """Take a lease of ``size`` on ``targets``: a hold granted only while every budget
        (soft ones too) keeps ``LEASE_HEADROOM - 1`` times as much free after it."""
        lease_id = f"lease:{uuid.uuid4().hex}"
        plan = [
            Target(b.id, key, float(b.limit) - (LEASE_HEADROOM - 1) * size, True)
            for b, key in targets
        ]
        at = now()
        expires_at = at + ttl + LEASE_SECONDS
        try:
            out = await self._ops.reserve(lease_id, charge.org_id, None, size, at, expires_at, plan)
        except Exception:  # no lease: calls are reserved one by one meanwhile
            logger.debug("taking a budget lease failed", exc_info=True)
            self.leases.deny(sig)
            return
        if isinstance(out, Refused):
            self.leases.deny(sig)
            return
        until = time.monotonic() + LEASE_SECONDS
        ended = self.leases.add(sig, Lease(lease_id, out.windows, size, expires_at, until))
        if ended:
            self._group.give_back += ended
            self._write_soon()

    async def _charge_leased(self, hold: Hold, cost: float) -> None:
        """Charge a call served from a lease in the next group of writes; return once written
        (``BudgetUnavailable`` if that failed: the lease then expires with its calls' cost)."""
        assert hold.lease is not None
        first, ended = self.leases.settle(hold.id, hold.lease, hold.amount, cost)
        if not first:
            return  # settled before
        group = self._group
        entry = group.charges.get(hold.lease)
        if entry is None:
            group.charges[hold.lease] = (hold.windows, cost)
        else:
            group.charges[hold.lease] = (entry[0], entry[1] + cost)
        if ended is not None:  # after its last charge, in the same group
            group.give_back.append(ended)
        self._write_soon()
        await asyncio.shield(group.done)
        if group.failed is not None:
            raise _unavailable(group.failed)

    def _write_soon(self) -> None:
        if self._writer is None or self._writer.done():
            self._writer = asyncio.ensure_future(self._write_groups())

    async def _write_groups(self) -> None:
        """Write the groups one after another until none is waiting."""
        while self._group.charges or self._group.give_back:
            group, self._group = self._group, _Group()
            charged: list[Spent] = []
            try:
                for lease_id, (windows, cost) in group.charges.items():
                    charged += await self._ops.charge_lease(lease_id, windows, cost)
            except _DB_ERRORS as exc:
                group.failed = exc
                logger.warning("charging calls served from budget leases failed: %r", exc)
            for lease in group.give_back:
                try:
                    await self._ops.release(Hold(lease.id, lease.amount, lease.windows), now())
                except _DB_ERRORS:
                    logger.warning("giving back budget lease %s failed; it will expire", lease.id)
            group.finish()
            if charged:
                await self._alert(charged)

    async def give_back_leases(self) -> None:
        """Stop serving calls from leases; give back what is left of each once its calls have
        settled (those still running give theirs back as they settle)."""
        ended = self.leases.retire_all()
        if ended:
            self._group.give_back += ended
        await self.flush()

    async def flush(self) -> None:
        """Write the commits of leased calls not written yet, and give back retired leases."""
        self._write_soon()
        if self._writer is not None:
            await asyncio.shield(self._writer)

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
        """Give back the leases, let pending alert webhooks finish (briefly); the store is
        the caller's to close."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)
        await self.give_back_leases()
        await self.alerts.aclose()


class _Group:
    """Commits of leased calls written together, and leases given back after them."""

    __slots__ = ("_done", "charges", "failed", "give_back")

    def __init__(self) -> None:
        self.charges: dict[str, tuple[tuple[Key, ...], float]] = {}
        self.give_back: list[Lease] = []
        self.failed: BaseException | None = None
        self._done: asyncio.Future[None] | None = None

    @property
    def done(self) -> asyncio.Future[None]:
        """Set once the group is written (or failed: ``failed``)."""
        if self._done is None:
            self._done = asyncio.get_running_loop().create_future()
        return self._done

    def finish(self) -> None:
        """Wake those waiting for the group."""
        if self._done is not None and not self._done.done():
            self._done.set_result(None)
