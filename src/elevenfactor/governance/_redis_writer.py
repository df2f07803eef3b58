"""Writes the holds committed in Redis to the store, in batches in the background.

The store then knows what was spent (``budget_holds`` rows and the spent of ``budget_usage``) for
reports, and for seeding Redis counters that went missing. Each hold is written once (its id is
the key; the spent is added only when the row is new). The writer also claims alert thresholds
in the store (``budget_alerts``), so each fires once per window across processes.

On PostgreSQL a batch is one statement whatever its size (``_pg_write``): the holds, the spent
per window of the holds that were new and the alert claims, each unnested from one array per
column, so it is prepared once per connection and is its own transaction. On SQLite each hold is
a few statements in one transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import orjson

from elevenfactor.governance._alerts import Alerts, crossed
from elevenfactor.governance._budgets import Budget, now
from elevenfactor.governance._gate_defs import Definitions
from elevenfactor.governance._spend import Hold
from elevenfactor.store import Store

__all__ = ["Committed", "StoreWriter"]

logger = logging.getLogger("elevenfactor.budgets")

_Key = tuple[str, str]
_Fire = tuple[Budget, str, float, float]

_HOLD_TYPES = ("text", "text", "float8", "text", "text", "float8", "float8", "float8")
_WINDOW_TYPES = ("text", "text", "text", "float8")
_ALERT_TYPES = ("text", "text", "text", "float8", "float8")


@functools.cache
def _pg_write() -> str:
    """The statement writing a batch on PostgreSQL: returns ``('hold', id, NULL, NULL)`` for
    each new hold and ``('alert', budget_id, window_key, threshold)`` for each alert claimed.

    The spent of a window is added once per batch (the sum of its new holds' costs, in key
    order so concurrent writers lock rows in the same order); an alert is claimed only for a new
    hold, as the SQLite path does."""
    from elevenfactor.store._postgres import unnest

    return (
        "WITH h AS (INSERT INTO budget_holds (id, org_id, amount, windows, soft, status, cost,"
        " created_at, expires_at, settled_at)"
        " SELECT x.id, x.org_id, x.amount, x.windows, x.soft, 'committed', x.cost, x.done,"
        " x.expires_at, x.done"
        f" FROM {unnest(_HOLD_TYPES)}"
        " AS x(id, org_id, amount, windows, soft, cost, done, expires_at)"
        " ON CONFLICT DO NOTHING RETURNING id),"
        " u AS (INSERT INTO budget_usage (budget_id, window_key, spent, reserved)"
        " SELECT w.budget_id, w.window_key, sum(w.cost), 0"
        f" FROM {unnest(_WINDOW_TYPES)} AS w(hold_id, budget_id, window_key, cost)"
        " WHERE w.hold_id IN (SELECT id FROM h)"
        " GROUP BY w.budget_id, w.window_key ORDER BY w.budget_id, w.window_key"
        " ON CONFLICT (budget_id, window_key)"
        " DO UPDATE SET spent = budget_usage.spent + excluded.spent),"
        " a AS (INSERT INTO budget_alerts (budget_id, window_key, threshold, fired_at)"
        " SELECT c.budget_id, c.window_key, c.threshold, c.fired_at"
        f" FROM {unnest(_ALERT_TYPES)} AS c(hold_id, budget_id, window_key, threshold, fired_at)"
        " WHERE c.hold_id IN (SELECT id FROM h)"
        " ON CONFLICT DO NOTHING RETURNING budget_id, window_key, threshold)"
        " SELECT 'hold', id, NULL::text, NULL::float8 FROM h"
        " UNION ALL SELECT 'alert', budget_id, window_key, threshold FROM a"
    )


@dataclass(frozen=True, slots=True)
class Committed:
    """A hold committed in Redis: its cost, when, and each window's spent before and after."""

    hold: Hold
    cost: float
    at: float
    spent: tuple[tuple[float, float], ...]


class StoreWriter:
    """Batches ``Committed`` holds into store transactions every ``interval`` seconds."""

    def __init__(
        self, store: Store, defs: Definitions, alerts: Alerts, *, interval: float = 0.2
    ) -> None:
        self.store = store
        self.defs = defs
        self.alerts = alerts
        self.interval = interval
        self._items: list[Committed] = []
        self._costs: defaultdict[_Key, float] = defaultdict(float)
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._lock: asyncio.Lock | None = None

    def add(self, item: Committed) -> None:
        """Queue ``item`` (starting the background task on first use)."""
        self._items.append(item)
        for key in item.hold.windows:
            self._costs[key] += item.cost
        if self._task is None:
            self._wake = asyncio.Event()
            self._task = asyncio.create_task(self._loop())
        if len(self._items) >= 500 and self._wake is not None:
            self._wake.set()

    def pending_cost(self, key: _Key) -> float:
        """What is committed on ``key`` and not yet in the store (to seed Redis with)."""
        return self._costs.get(key, 0.0)

    async def _loop(self) -> None:
        assert self._wake is not None
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)
            self._wake.clear()
            try:
                await self.flush()
            except Exception:  # the store is down: keep the items, try again
                logger.exception("cannot write committed budget holds to the store")

    async def flush(self) -> None:
        """Write every queued hold now."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            batch, self._items = self._items, []
            if not batch:
                return
            try:
                fire = await self._write(batch)
            except BaseException:
                self._items[:0] = batch
                raise
            for item in batch:
                for key in item.hold.windows:
                    self._costs[key] -= item.cost
                    if self._costs[key] <= 1e-12:
                        del self._costs[key]
        for budget, wkey, t, spent in fire:
            self.alerts.fire(budget, wkey, t, spent)

    async def _write(self, batch: list[Committed]) -> list[_Fire]:
        if self.store.dialect == "postgresql":
            return await self._write_pg(batch)
        fire: list[_Fire] = []
        async with self.store.transaction() as tx:
            for item in batch:
                hold = item.hold
                budgets = [self.defs.budget(b) for b, _ in hold.windows]
                org = next((b.org_id for b in budgets if b is not None), "")
                n = await tx.execute(
                    "INSERT INTO budget_holds (id, org_id, amount, windows, soft, status, cost,"
                    " created_at, expires_at, settled_at) VALUES (?, ?, ?, ?, ?, 'committed',"
                    " ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    (
                        hold.id,
                        org,
                        hold.amount,
                        orjson.dumps([list(k) for k in hold.windows]).decode(),
                        orjson.dumps(list(hold.soft)).decode(),
                        item.cost,
                        item.at,
                        hold.expires_at,
                        item.at,
                    ),
                )
                if not n:
                    continue
                for (bid, key), budget, (before, after) in zip(
                    hold.windows, budgets, item.spent, strict=True
                ):
                    await tx.execute(
                        "INSERT INTO budget_usage (budget_id, window_key, spent, reserved)"
                        " VALUES (?, ?, ?, 0) ON CONFLICT (budget_id, window_key)"
                        " DO UPDATE SET spent = budget_usage.spent + excluded.spent",
                        (bid, key, item.cost),
                    )
                    if budget is not None:
                        hit = crossed(budget, before, after)
                        for t in await self.alerts.record(tx, budget, key, hit):
                            fire.append((budget, key, t, after))
        return fire

    async def _write_pg(self, batch: list[Committed]) -> list[_Fire]:
        from elevenfactor.store._postgres import arrays

        holds: list[tuple[Any, ...]] = []
        windows: list[tuple[Any, ...]] = []
        alerts: list[tuple[Any, ...]] = []
        hits: list[tuple[str, _Fire]] = []  # (hold id, alert), in the order SQLite fires them
        seen: set[str] = set()
        at = now()
        for item in batch:
            hold = item.hold
            if hold.id in seen:
                continue  # committed twice in one batch: the first wins, as on SQLite
            seen.add(hold.id)
            budgets = [self.defs.budget(b) for b, _ in hold.windows]
            holds.append(
                (
                    hold.id,
                    next((b.org_id for b in budgets if b is not None), ""),
                    hold.amount,
                    orjson.dumps([list(k) for k in hold.windows]).decode(),
                    orjson.dumps(list(hold.soft)).decode(),
                    item.cost,
                    item.at,
                    hold.expires_at,
                )
            )
            for (bid, key), budget, (before, after) in zip(
                hold.windows, budgets, item.spent, strict=True
            ):
                windows.append((hold.id, bid, key, item.cost))
                if budget is not None:
                    for t in crossed(budget, before, after):
                        alerts.append((hold.id, budget.id, key, t, at))
                        hits.append((hold.id, (budget, key, t, after)))
        params = [
            *arrays(holds, _HOLD_TYPES),
            *arrays(windows, _WINDOW_TYPES),
            *arrays(alerts, _ALERT_TYPES),
        ]
        rows = await self.store.fetchall(_pg_write(), params)
        new = {r[1] for r in rows if r[0] == "hold"}
        claimed = {(r[1], r[2], r[3]) for r in rows if r[0] == "alert"}
        fire: list[_Fire] = []
        for hold_id, hit in hits:
            claim = (hit[0].id, hit[1], hit[2])
            if hold_id in new and claim in claimed:
                claimed.discard(claim)
                fire.append(hit)
        return fire

    async def aclose(self) -> None:
        """Stop the background task and write what is left."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()
