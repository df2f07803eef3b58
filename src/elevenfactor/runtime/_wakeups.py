"""How an idle worker on SQLite learns of work: a wake-up in this process, or another
process's commit that left a run runnable.

SQLite has no LISTEN/NOTIFY: the worker watches ``PRAGMA data_version`` (a read of shared
memory that changes when another connection commits) every ``SQLITE_WATCH`` seconds, and only
when it changed probes for a runnable run (read-only: no write lock).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence

from elevenfactor.store import Store

__all__ = ["SQLITE_WATCH", "watch_sqlite"]

logger = logging.getLogger("elevenfactor.worker")

SQLITE_WATCH = 0.01
"""Seconds between an idle SQLite worker's looks at ``PRAGMA data_version``."""


async def watch_sqlite(
    store: Store, wake: asyncio.Event, queues: Sequence[str], wait: float
) -> bool:
    """Wait up to ``wait`` seconds for ``wake`` (set in this process), or for another
    process's commit that left a run of ``queues`` runnable; True if woken."""
    end = time.monotonic() + wait
    try:
        row = await store.fetchone("PRAGMA data_version")
    except Exception:
        row = None
    version = row[0] if row else None
    while (left := end - time.monotonic()) > 0:
        step = left if version is None else min(left, SQLITE_WATCH)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), step)
        if wake.is_set() or version is None:
            return wake.is_set()
        try:
            row = await store.fetchone("PRAGMA data_version")
            if row is None or row[0] == version:
                continue
            version = row[0]
            marks = ", ".join("?" for _ in queues)
            if await store.fetchone(
                f"SELECT 1 FROM runs WHERE status = 'queued' AND queue IN ({marks})"
                " AND (wake_at IS NULL OR wake_at <= ?) LIMIT 1",
                (*queues, time.time()),
            ):
                return True
        except Exception:
            logger.exception("watching the SQLite database failed")
            return False
    return False
