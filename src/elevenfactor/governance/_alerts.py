"""Budget alerts: when a commit takes a window's spend past a threshold (a fraction of the
limit), a ``budget_alert`` log event and, if the budget has a webhook, a JSON POST.

Each threshold fires once per window: an ``INSERT ... ON CONFLICT DO NOTHING`` into
``budget_alerts`` decides which process fires. Webhooks are sent in the background with a timeout
and a few retries; they never block or fail the call that crossed the threshold.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import aiohttp
import orjson

from elevenfactor.governance._budgets import Budget, now
from elevenfactor.governance._windows import iso, resets_at
from elevenfactor.observe import log_event
from elevenfactor.store import Executor

__all__ = ["Alerts", "crossed"]

logger = logging.getLogger("elevenfactor.budgets")


def crossed(budget: Budget, before: float, after: float) -> list[float]:
    """The thresholds of ``budget`` that spend going from ``before`` to ``after`` crosses."""
    lo, hi = before / budget.limit, after / budget.limit
    return [t for t in budget.thresholds if lo < t - 1e-12 and t <= hi + 1e-12]


class Alerts:
    """Records and fires alerts; owns the background webhook deliveries."""

    def __init__(self, *, timeout: float = 5.0, attempts: int = 3) -> None:
        self.timeout = timeout
        self.attempts = attempts
        self._tasks: set[asyncio.Task[None]] = set()

    async def record(
        self, db: Executor, budget: Budget, window_key: str, thresholds: list[float]
    ) -> list[float]:
        """Claim ``thresholds`` of ``budget``'s window; return those this caller fires."""
        mine = []
        for t in thresholds:
            n = await db.execute(
                "INSERT INTO budget_alerts (budget_id, window_key, threshold, fired_at)"
                " VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (budget.id, window_key, t, now()),
            )
            if n:
                mine.append(t)
        return mine

    def fire(self, budget: Budget, window_key: str, threshold: float, spent: float) -> None:
        """Log the alert and post it to the budget's webhook in the background."""
        payload: dict[str, Any] = {
            "event": "budget_alert",
            "budget_id": budget.id,
            "org_id": budget.org_id,
            "scope": budget.scope,
            "window": budget.window,
            "window_key": window_key,
            "threshold": threshold,
            "limit": budget.limit,
            "spent": spent,
            "soft": budget.soft,
            "resets_at": iso(resets_at(window_key)),
            "fired_at": now(),
        }
        log_event(logger, "budget_alert", **{k: v for k, v in payload.items() if k != "event"})
        if budget.webhook:
            task = asyncio.create_task(self._deliver(budget.webhook, payload))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _deliver(self, url: str, payload: dict[str, Any]) -> None:
        body = orjson.dumps(payload)
        headers = {"Content-Type": "application/json"}
        for attempt in range(self.attempts):
            try:
                async with (
                    aiohttp.ClientSession(
                        timeout=aiohttp.ClientTimeout(total=self.timeout)
                    ) as http,
                    http.post(url, data=body, headers=headers) as resp,
                ):
                    if resp.status < 300:
                        return
                    logger.warning("budget webhook %s answered %s", url, resp.status)
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                logger.warning("budget webhook %s failed: %r", url, exc)
            if attempt + 1 < self.attempts:
                await asyncio.sleep(0.5 * 2**attempt)
        logger.error("budget webhook %s: giving up on %s", url, payload["budget_id"])

    async def aclose(self, grace: float = 2.0) -> None:
        """Give pending deliveries ``grace`` seconds, then cancel them."""
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=grace)
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError):
                await task
