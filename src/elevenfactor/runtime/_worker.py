"""``Worker``: leases runs in batches and executes them (see ``RunExecutor``), with up to
``concurrency`` at a time.

Several workers, in one process or many, share a store: leases with fencing tokens guarantee a
run is executed by one worker at a time, and an expired lease (a dead worker) is taken over.

An idle worker waits for work without polling hard (see ``_wakeups``): a run submitted or woken
in this process wakes it at once (both stores); on PostgreSQL it also LISTENs on one dedicated
connection for the notifications a trigger sends when a run becomes runnable anywhere, and
claims at once; on SQLite it watches ``PRAGMA data_version``. A slow fallback poll
(``poll_interval``, backing off to ``max_poll_interval``; with a live LISTEN connection
straight to ``max_poll_interval``) finds what no notification announces: due timers, expired
leases of dead workers, notifications lost while reconnecting. A claim takes as many runs as
the worker has free slots, in one statement on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from elevenfactor.observe import log_event
from elevenfactor.runtime._claims import claim_runs
from elevenfactor.runtime._execute import RunExecutor
from elevenfactor.runtime._programs import Programs
from elevenfactor.runtime._runs import Lease
from elevenfactor.runtime._wakeups import watch_sqlite
from elevenfactor.store import Store, subscribe, unsubscribe
from elevenfactor.store._notify import listen

__all__ = ["Worker", "WorkerOptions", "queues_from"]

logger = logging.getLogger("elevenfactor.worker")


@dataclass(frozen=True)
class WorkerOptions:
    """How a worker behaves."""

    queues: tuple[str, ...] = ("default",)
    concurrency: int = 8
    lease_seconds: float = 15.0
    poll_interval: float = 0.05
    """Seconds an idle worker first waits before polling again (doubling each empty poll)."""
    max_poll_interval: float = 1.0
    """The longest wait between polls; with a live LISTEN connection (PostgreSQL) the only one."""
    queue_limits: dict[str, int] = field(default_factory=dict)
    cancel_poll_interval: float = 0.5
    """How often a worker looks for cancels of its runs requested from other processes."""


class Worker(RunExecutor):
    """Claims runs from ``queues`` and executes them, up to ``concurrency`` at a time."""

    def __init__(
        self,
        store: Store,
        programs: Programs,
        options: WorkerOptions | None = None,
        *,
        worker_id: str | None = None,
        hooks: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(
            store, programs, options or WorkerOptions(), worker_id=worker_id, hooks=hooks
        )
        self._tasks: set[asyncio.Task[None]] = set()
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._slot = asyncio.Event()
        self.listen_pid: int | None = None
        """Server process of the live LISTEN connection (PostgreSQL), None while it is down."""
        self.claims = 0
        """Claim statements issued (each may lease several runs)."""

    def notify(self) -> None:
        """Poll now (a run was just submitted or woken in this process)."""
        self._wake.set()

    async def _claim(self, n: int = 1) -> list[Lease]:
        self.claims += 1
        return await claim_runs(
            self.store,
            self.id,
            list(self.options.queues),
            self.options.lease_seconds,
            self.options.queue_limits or None,
            n,
        )

    async def run_once(self) -> bool:
        """Claim and execute one run to its next settle point; False if none was runnable."""
        leases = await self._claim()
        if not leases:
            return False
        await self.execute(leases[0])
        return True

    async def run_until_idle(self) -> None:
        """Execute runnable runs until none is left (for tests and one-off admin tasks)."""
        while await self.run_once():
            pass

    async def serve(self) -> None:
        """Claim and execute until ``stop()``; then wait for in-flight runs to settle."""
        log_event(
            logger,
            "worker_started",
            worker=self.id,
            queues=list(self.options.queues),
            concurrency=self.options.concurrency,
        )
        subscribe(self.store.url, self._wake)
        listener = None
        if self.store.dialect == "postgresql":
            listener = asyncio.create_task(
                listen(self.store.url, self._on_notify, connected=self._on_listen),
                name="worker-listen",
            )
        try:
            await self._serve()
        finally:
            unsubscribe(self.store.url, self._wake)
            if listener is not None:
                listener.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await listener
                self.listen_pid = None
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        log_event(logger, "worker_stopped", worker=self.id, completed=self.completed)

    def _on_notify(self, queue: str) -> None:
        if queue in self.options.queues:
            self._wake.set()

    def _on_listen(self, pid: int | None) -> None:
        self.listen_pid = pid
        self._wake.set()  # (re)connected: what was announced meanwhile is lost, poll now

    async def _serve(self) -> None:
        idle = self.options.poll_interval
        while not self._stop.is_set():
            free = self.options.concurrency - len(self._tasks)
            if free <= 0:
                self._slot.clear()
                await self._slot.wait()
                continue
            # Cleared before the claim: a wake-up arriving while it runs is not lost.
            self._wake.clear()
            try:
                leases = await self._claim(free)
            except Exception:
                logger.exception("claiming a run failed")
                leases = []
            for lease in leases:
                task = asyncio.create_task(self._guarded(lease), name=f"run-{lease.run_id}")
                self._tasks.add(task)
                task.add_done_callback(self._done)
            if len(leases) == free:
                idle = self.options.poll_interval
                continue  # maybe more: claim again when a slot frees
            if leases:
                idle = self.options.poll_interval
            # Nothing more runnable now: wait for a wake-up or the fallback poll.
            wait = self.options.max_poll_interval if self.listen_pid is not None else idle
            if self.store.dialect == "sqlite":
                woken = await watch_sqlite(self.store, self._wake, self.options.queues, wait)
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait)
                woken = self._wake.is_set()
            if not woken:
                idle = min(idle * 2, self.options.max_poll_interval)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._slot.set()

    async def shutdown(self, grace: float) -> None:
        """Stop claiming; give in-flight runs ``grace`` seconds, then interrupt them and release
        their leases so another worker resumes them at once (from their journals)."""
        self.stop()
        pending = list(self._tasks)
        if pending:
            _, still = await asyncio.wait(pending, timeout=grace)
            for task in still:
                task.cancel()
            if still:
                await asyncio.wait(still)
                await self.store.execute(
                    "UPDATE runs SET lease_expires_at = 0 WHERE lease_owner = ?"
                    " AND status = 'running'",
                    (self.id,),
                )
                log_event(logger, "worker_interrupted", worker=self.id, runs=len(still))

    def stop(self) -> None:
        """Stop claiming; ``serve`` returns once in-flight runs settle."""
        self._stop.set()
        self._wake.set()
        self._slot.set()


def queues_from(names: Iterable[str]) -> tuple[str, ...]:
    """Normalise a list of queue names."""
    out = tuple(dict.fromkeys(n.strip() for n in names if n.strip()))
    return out or ("default",)
