"""The store-derived gauges of ``/metrics``, computed when a scraper asks.

Runs by status, worker leases, queue lag, pending approvals, budget use and paused agents are
facts of the store shared by every process, so the process that answers a scrape reads them
(with a few grouped queries) instead of every process counting them. The answer is reused for
``ttl`` seconds per organisation filter, and concurrent scrapes share one computation, so many
scrapers never hammer the store. An admin's scrape reads its own organisation only: the
organisation filter is in each query.

Label values are bounded: queues outside the configured ones are ``other``; past ``limit``
distinct reviewer groups or budgets, the rest are left out (logged once).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from elevenfactor.governance import budget_status
from elevenfactor.governance._agent_breaker import paused_agents
from elevenfactor.governance._budgets import BUDGET_COLUMNS, budget_from_row
from elevenfactor.observe._metrics_defs import STORE
from elevenfactor.store import Store

__all__ = ["StoreGauges", "Usage"]

logger = logging.getLogger("elevenfactor.metrics")

Usage = Callable[[str, str], Awaitable[tuple[float, float]]]
"""A budget gate's ``usage(budget id, window key) -> (spent, reserved)`` (exact with Redis)."""
Samples = dict[str, dict[tuple[str, ...], float]]
"""Metric name -> label values -> value."""

_P = "elevenfactor_"


def _org(value: Any) -> str:
    return str(value) if value else "none"


@dataclass
class StoreGauges:
    """Computes (and caches for ``ttl`` seconds) the ``STORE`` gauges from ``store``.

    ``queues``: the configured queue names (others are labelled ``other``); ``usage``: the
    budget gate's exact usage, else the store's committed spend; ``lease_seconds``: the run
    lease, for "expiring" leases (less than a third left: a heartbeat is late)."""

    store: Store
    queues: frozenset[str] = frozenset({"default"})
    ttl: float = 5.0
    usage: Usage | None = None
    lease_seconds: float = 15.0
    limit: int = 500
    clock: Callable[[], float] = time.time
    _cache: dict[str | None, tuple[float, Samples]] = field(default_factory=dict, repr=False)
    _busy: dict[str | None, asyncio.Future[Samples]] = field(default_factory=dict, repr=False)

    async def samples(self, org_id: str | None = None) -> Samples:
        """The gauges of ``org_id``'s rows (every organisation's when None)."""
        now = time.monotonic()
        cached = self._cache.get(org_id)
        if cached is not None and now - cached[0] < self.ttl:
            return cached[1]
        running = self._busy.get(org_id)
        if running is not None:
            return await asyncio.shield(running)
        future: asyncio.Future[Samples] = asyncio.get_running_loop().create_future()
        self._busy[org_id] = future
        try:
            found = await self._compute(org_id)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning without waiters
            raise
        finally:
            del self._busy[org_id]
        future.set_result(found)
        if len(self._cache) > 1000:
            self._cache.clear()
        self._cache[org_id] = (time.monotonic(), found)
        return found

    async def families(self, org_id: str | None = None) -> list[Any]:
        """The gauges as ``prometheus_client`` metric families."""
        from prometheus_client.core import GaugeMetricFamily

        data = await self.samples(org_id)
        out = []
        for s in STORE:
            family = GaugeMetricFamily(s.name, s.help, labels=s.labels)
            for labels, value in sorted(data.get(s.name, {}).items()):
                family.add_metric(labels, value)
            out.append(family)
        return out

    # -- the queries ------------------------------------------------------------------------

    def _queue(self, value: Any) -> str:
        return str(value) if value in self.queues else "other"

    async def _compute(self, org_id: str | None) -> Samples:
        data: Samples = {s.name: {} for s in STORE}
        now = self.clock()
        await self._runs(data, org_id, now)
        await self._approvals(data, org_id, now)
        await self._budgets(data, org_id)
        for state in await paused_agents(self.store, org_id):
            data[_P + "agents_paused"][(state.org_id, state.agent)] = 1.0
        return data

    def _where(self, org_id: str | None, column: str = "org_id") -> tuple[str, tuple[Any, ...]]:
        return (f" AND {column} = ?", (org_id,)) if org_id is not None else ("", ())

    async def _runs(self, data: Samples, org_id: str | None, now: float) -> None:
        where, params = self._where(org_id)
        runs = data[_P + "runs"]
        seen: set[tuple[str, str]] = set()
        rows = await self.store.fetchall(
            "SELECT org_id, queue, status, COUNT(*) FROM runs WHERE 1 = 1"
            f"{where} GROUP BY org_id, queue, status",
            params,
        )
        for org, queue, status, count in rows:
            key = (_org(org), self._queue(queue))
            seen.add(key)
            runs[(*key, str(status))] = runs.get((*key, str(status)), 0.0) + float(count)
        late = now + self.lease_seconds / 3
        rows = await self.store.fetchall(
            "SELECT org_id, queue,"
            " SUM(CASE WHEN lease_expires_at >= ? THEN 1 ELSE 0 END),"
            " SUM(CASE WHEN lease_expires_at < ? THEN 1 ELSE 0 END),"
            " SUM(CASE WHEN lease_expires_at >= ? AND lease_expires_at < ? THEN 1 ELSE 0 END)"
            f" FROM runs WHERE status = 'running'{where} GROUP BY org_id, queue",
            (now, now, now, late, *params),
        )
        leased, expired, expiring = (
            data[_P + "runs_leased"],
            data[_P + "runs_lease_expired"],
            data[_P + "runs_lease_expiring"],
        )
        for org, queue, ok, gone, soon in rows:
            key = (_org(org), self._queue(queue))
            leased[key] = leased.get(key, 0.0) + float(ok or 0)
            expired[key] = expired.get(key, 0.0) + float(gone or 0)
            expiring[key] = expiring.get(key, 0.0) + float(soon or 0)
        lag = data[_P + "queue_lag_seconds"]
        for key in seen:
            lag[key] = 0.0
        rows = await self.store.fetchall(
            "SELECT org_id, queue, MIN(COALESCE(wake_at, created_at)) FROM runs"
            f" WHERE status = 'queued' AND (wake_at IS NULL OR wake_at <= ?){where}"
            " GROUP BY org_id, queue",
            (now, *params),
        )
        for org, queue, since in rows:
            key = (_org(org), self._queue(queue))
            lag[key] = max(lag.get(key, 0.0), max(0.0, now - float(since)))

    async def _approvals(self, data: Samples, org_id: str | None, now: float) -> None:
        where, params = self._where(org_id)
        rows = await self.store.fetchall(
            "SELECT org_id, reviewer_group, COUNT(*), MIN(created_at) FROM approvals"
            f" WHERE status = 'pending'{where} GROUP BY org_id, reviewer_group",
            params,
        )
        pending, age = (
            data[_P + "approvals_pending"],
            data[_P + "approvals_oldest_pending_age_seconds"],
        )
        for org, group, count, oldest in _bounded(rows, self.limit, "reviewer groups"):
            key = (_org(org), str(group) if group else "none")
            pending[key] = float(count)
            age[key] = max(0.0, now - float(oldest))

    async def _budgets(self, data: Samples, org_id: str | None) -> None:
        where, params = self._where(org_id)
        rows = await self.store.fetchall(
            f"SELECT {BUDGET_COLUMNS} FROM budgets WHERE 1 = 1{where} ORDER BY org_id, scope",
            params,
        )
        spent, reserved, limit = (
            data[_P + "budget_spent_usd"],
            data[_P + "budget_reserved_usd"],
            data[_P + "budget_limit_usd"],
        )
        for row in _bounded(rows, self.limit, "budgets"):
            budget = budget_from_row(row)
            try:
                status = await budget_status(self.store, budget, usage=self.usage)
            except Exception:  # the budget backend is down: what the store knows
                status = await budget_status(self.store, budget)
            key = (budget.org_id, budget.id, budget.scope, budget.window)
            spent[key] = status.spent
            reserved[key] = status.reserved
            limit[key] = budget.limit


_warned: set[str] = set()


def _bounded(rows: Iterable[Any], limit: int, what: str) -> list[Any]:
    out = list(rows)
    if len(out) > limit:
        if what not in _warned:
            _warned.add(what)
            logger.warning("metrics: %d %s, only the first %d are exported", len(out), what, limit)
        out = out[:limit]
    return out
