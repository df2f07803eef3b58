"""Wake-ups for workers: new or woken runs reach an idle worker without waiting for its poll.

Two paths, both best effort; a worker's fallback poll is what guarantees no run is missed:

- **in process** (both stores): ``wake_local(url)`` sets every event subscribed for that
  database URL, so a run submitted or woken in this process starts at once.
- **across processes** (PostgreSQL): a trigger on ``runs`` (migration ``m004_run_notify``)
  calls ``pg_notify(CHANNEL, queue)`` whenever a row becomes ``queued`` and due — a submission,
  an approval decision, a child run ending, a park without a timer — so the notification is
  sent by the transaction that made the run runnable, at its commit, with no extra round trip.
  ``listen`` keeps one dedicated connection LISTENing and reconnects when it is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

__all__ = ["CHANNEL", "listen", "subscribe", "unsubscribe", "wake_local"]

CHANNEL = "elevenfactor_runs"
"""The PostgreSQL notification channel; the payload is the run's queue."""

logger = logging.getLogger("elevenfactor.store.notify")

_local: dict[str, set[asyncio.Event]] = {}


def subscribe(url: str, event: asyncio.Event) -> None:
    """Set ``event`` whenever a run becomes runnable in this process on database ``url``."""
    _local.setdefault(url, set()).add(event)


def unsubscribe(url: str, event: asyncio.Event) -> None:
    """Stop setting ``event``."""
    events = _local.get(url)
    if events is not None:
        events.discard(event)
        if not events:
            del _local[url]


def wake_local(url: str) -> None:
    """Wake the workers of this process serving database ``url`` (call after the commit)."""
    for event in _local.get(url, ()):
        event.set()


def conninfo(url: str) -> str:
    """A libpq connection string from a store URL."""
    info = url.replace("postgresql+psycopg://", "postgresql://", 1)
    if info.startswith("postgres://"):
        info = "postgresql://" + info[len("postgres://") :]
    return info


async def listen(
    url: str,
    on_notify: Callable[[str], None],
    *,
    connected: Callable[[int | None], None] | None = None,
    health_interval: float = 30.0,
    retry_max: float = 5.0,
) -> None:
    """LISTEN on ``CHANNEL`` over one dedicated connection until cancelled, calling
    ``on_notify(queue)`` for every notification.

    A lost connection (server restart, ``pg_terminate_backend``, network) is reopened with a
    capped backoff; ``connected(pid)`` is called after each successful LISTEN with the server
    process id of the connection (notifications sent while it was down are lost: the caller
    should poll once then) and ``connected(None)`` when it is lost. Every ``health_interval``
    seconds without a notification the connection is checked with a ``SELECT 1``, so a
    silently dead link is found too.
    """
    import psycopg

    delay = 0.1
    while True:
        conn: psycopg.AsyncConnection[Any] | None = None
        try:
            conn = await psycopg.AsyncConnection.connect(
                conninfo(url), autocommit=True, connect_timeout=10
            )
            await conn.execute(f"LISTEN {CHANNEL}")
            delay = 0.1
            if connected is not None:
                connected(conn.info.backend_pid)
            while True:
                got = False
                async for note in conn.notifies(timeout=health_interval):
                    got = True
                    on_notify(note.payload)
                if not got:
                    await conn.execute("SELECT 1")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if connected is not None:
                connected(None)
            logger.warning("LISTEN connection lost (%s); reconnecting in %.1f s", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, retry_max)
        finally:
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close()
