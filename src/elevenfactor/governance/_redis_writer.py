"""Writes the holds committed in Redis to the store, in batches in the background.

The store then knows what was spent (``budget_holds`` rows and the spent of ``budget_usage``) for
reports, and for seeding Redis counters that went missing. Each hold is written once (its id is
the key; the spent is added only when the row is new). The writer also claims alert thresholds
in the store (``budget_alerts``), so each fires once per window across processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from dataclasses import dataclass

import orjson

from elevenfactor.governance._alerts import Alerts, crossed
from elevenfactor.governance._budgets import Budget
from elevenfactor.governance._gate_defs import Definitions
from elevenfactor.governance._spend import Hold
from elevenfactor.store import Store

__all__ = ["Committed", "StoreWriter"]

logger = logging.getLogger("elevenfactor.budgets")

_Key = tuple[str, str]


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

    async def _write(self, batch: list[Committed]) -> list[tuple[Budget, str, float, float]]:
        fire: list[tuple[Budget, str, float, float]] = []
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

    async def aclose(self) -> None:
        """Stop the background task and write what is left."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()
