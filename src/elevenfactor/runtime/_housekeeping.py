"""The housekeeper: deletes what has expired — memories past their TTL, cached answers past
theirs, runs' placeholder maps past theirs (the guard vault) — on a schedule, in every
``serve`` and ``worker`` process.

Expired rows are never served (every read filters on ``expires_at``); purging removes them
physically, which is what a TTL promises the people whose data it is. Each job is one
idempotent ``DELETE``, so several processes purging at once only repeat each other's work.
A failing job is logged and retried at the next tick; it never stops the others.

Given the project's ``retention:`` with a period set, it also runs a retention purge
(``governance._retention``: content past its period erased, hashes kept, one ledger entry per
chunk) as the job ``retention``.

``ELEVENFACTOR_PURGE_INTERVAL`` sets the period (seconds, default 300; 0 turns it off).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping

from elevenfactor.config import RetentionConfig
from elevenfactor.governance._cost_rollup import roll_up as roll_up_costs
from elevenfactor.governance._guard_vault import purge_guard_vault
from elevenfactor.governance._retention import retention_job
from elevenfactor.governance._ui_sessions import purge_ui_sessions
from elevenfactor.memory import purge_expired as purge_memories
from elevenfactor.models import purge_expired as purge_cache
from elevenfactor.models import purge_semantic_expired
from elevenfactor.observe import log_event
from elevenfactor.store import Store

__all__ = ["Housekeeper", "PurgeJob", "default_jobs"]

logger = logging.getLogger("elevenfactor.housekeeping")

PurgeJob = Callable[[Store, float], Awaitable[int]]
"""Deletes what expired at ``now`` (seconds since the epoch) and says how many rows went."""


def default_jobs() -> dict[str, PurgeJob]:
    """Memories past their TTL, expired answers of the store's response caches (exact and
    semantic), expired placeholder maps of runs (the guard vault) and expired dashboard
    sign-ins; and the cost rollup (``cost_rollup``: sums the closed hours of ``model_calls``
    for the cost report, and counts the rows it wrote)."""
    return {
        "memories": purge_memories,
        "response_cache": purge_cache,
        "semantic_cache": purge_semantic_expired,
        "guard_vault": purge_guard_vault,
        "ui_sessions": purge_ui_sessions,
        "cost_rollup": roll_up_costs,
    }


class Housekeeper:
    """Runs ``jobs`` every ``interval`` seconds (never when ``interval`` is 0), and a retention
    purge when ``retention`` sets a period."""

    def __init__(
        self,
        store: Store,
        interval: float,
        jobs: Mapping[str, PurgeJob] | None = None,
        *,
        retention: RetentionConfig | None = None,
    ) -> None:
        self.store = store
        self.interval = interval
        self.jobs = dict(default_jobs() if jobs is None else jobs)
        if retention is not None and retention.configured:
            self.jobs["retention"] = retention_job(retention)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the loop on the running event loop (a no-op when turned off)."""
        if self._task is None and self.interval > 0:
            self._task = asyncio.create_task(self._run(), name="housekeeper")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.tick()

    async def tick(self, now: float | None = None) -> dict[str, int]:
        """Run every job once; the rows each deleted (a failed job is left out and logged)."""
        ts = time.time() if now is None else now
        done: dict[str, int] = {}
        for name, job in self.jobs.items():
            try:
                done[name] = await job(self.store, ts)
            except Exception as exc:  # retried next tick; the other jobs still run
                logger.warning(
                    "purge_failed",
                    extra={
                        "event": "purge_failed",
                        "job": name,
                        "error": f"{type(exc).__name__}: {exc}",
                    },
                )
        if any(done.values()):
            log_event(logger, "purged", **{k: v for k, v in done.items() if v})
        return done

    async def aclose(self) -> None:
        """Stop the loop."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
