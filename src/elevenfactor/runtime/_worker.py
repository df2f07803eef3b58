"""``Worker``: leases runs, executes their programs over the journal, heartbeats, and settles
each run (succeeded, failed, retried, parked or cancelled).

Several workers, in one process or many, share a store: leases with fencing tokens guarantee a
run is executed by one worker at a time, and an expired lease (a dead worker) is taken over.

A cancel is honoured at the run's next step: ``request_cancel`` flags a run executing in this
process at once; for a cancel from another process one query per ``cancel_poll_interval`` (for
all the runs a worker executes) finds it, and each heartbeat also interrupts a run mid-step.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from elevenfactor.errors import (
    DeadlineExceeded,
    ElevenFactorError,
    LeaseLost,
    RunCancelled,
    StepFailed,
)
from elevenfactor.governance import append_entry
from elevenfactor.observe import log_event
from elevenfactor.runtime._codec import encode
from elevenfactor.runtime._context import Park, RunContext
from elevenfactor.runtime._programs import Programs
from elevenfactor.runtime._runs import Lease, claim_run, record_end, run_input
from elevenfactor.store import BLOB_INSERT, Store, blob_hash

__all__ = ["Worker", "WorkerOptions"]

logger = logging.getLogger("elevenfactor.worker")


@dataclass(frozen=True)
class WorkerOptions:
    """How a worker behaves."""

    queues: tuple[str, ...] = ("default",)
    concurrency: int = 8
    lease_seconds: float = 15.0
    poll_interval: float = 0.05
    max_poll_interval: float = 1.0
    queue_limits: dict[str, int] = field(default_factory=dict)
    cancel_poll_interval: float = 0.5
    """How often a worker looks for cancels of its runs requested from other processes."""


def _err(code: str, message: str) -> str:
    return orjson.dumps({"code": code, "message": message}).decode()


class Worker:
    """Executes runs from ``queues`` with up to ``concurrency`` at a time."""

    def __init__(
        self,
        store: Store,
        programs: Programs,
        options: WorkerOptions | None = None,
        *,
        worker_id: str | None = None,
        hooks: dict[str, Any] | None = None,
    ) -> None:
        self.store = store
        self.programs = programs
        self.options = options or WorkerOptions()
        self.id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._tasks: set[asyncio.Task[None]] = set()
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self.completed = 0
        self.hooks: dict[str, Any] = dict(hooks or {})
        self._live: dict[str, RunContext] = {}
        self._watch: asyncio.Task[None] | None = None

    def notify(self) -> None:
        """Poll now (a run was just submitted or woken in this process)."""
        self._wake.set()

    def request_cancel(self, run_id: str, reason: str = "cancelled by request") -> bool:
        """Stop ``run_id`` at its next step if this worker is executing it (call after
        ``cancel_run``); False if it is not executing here."""
        ctx = self._live.get(run_id)
        if ctx is None:
            return False
        if ctx.cancel_reason is None:
            ctx.cancel_reason = reason
        return True

    async def _claim(self) -> Lease | None:
        return await claim_run(
            self.store,
            self.id,
            list(self.options.queues),
            self.options.lease_seconds,
            self.options.queue_limits or None,
        )

    async def run_once(self) -> bool:
        """Claim and execute one run to its next settle point; False if none was runnable."""
        lease = await self._claim()
        if lease is None:
            return False
        await self.execute(lease)
        return True

    async def run_until_idle(self) -> None:
        """Execute runnable runs until none is left (for tests and one-off admin tasks)."""
        while await self.run_once():
            pass

    async def serve(self) -> None:
        """Poll and execute until ``stop()``; then wait for in-flight runs to settle."""
        sem = asyncio.Semaphore(self.options.concurrency)
        idle = self.options.poll_interval
        log_event(
            logger,
            "worker_started",
            worker=self.id,
            queues=list(self.options.queues),
            concurrency=self.options.concurrency,
        )
        while not self._stop.is_set():
            await sem.acquire()
            try:
                lease = await self._claim()
            except Exception:
                sem.release()
                logger.exception("claiming a run failed")
                lease = None
            else:
                if lease is None:
                    sem.release()
            if lease is None:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), idle)
                idle = min(idle * 2, self.options.max_poll_interval)
                continue
            idle = self.options.poll_interval
            task = asyncio.create_task(self._guarded(lease, sem), name=f"run-{lease.run_id}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        log_event(logger, "worker_stopped", worker=self.id, completed=self.completed)

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

    async def _guarded(self, lease: Lease, sem: asyncio.Semaphore) -> None:
        try:
            await self.execute(lease)
        except Exception:
            logger.exception("executing run %s failed", lease.run_id)
        finally:
            sem.release()

    async def execute(self, lease: Lease) -> None:
        """Run the program of ``lease`` until it finishes, parks or loses the lease."""
        ctx = await RunContext.open(self.store, lease)
        ctx.hooks.update(self.hooks)
        task = asyncio.current_task()
        assert task is not None
        beat = asyncio.create_task(self._heartbeat(ctx, task))
        self._live[lease.run_id] = ctx
        if self._watch is None:
            self._watch = asyncio.create_task(self._watch_cancels(), name="cancel-watch")
        try:
            await self._execute(ctx, lease)
        finally:
            if self._live.get(lease.run_id) is ctx:
                del self._live[lease.run_id]
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat
            if not self._live and self._watch is not None:
                watch, self._watch = self._watch, None
                watch.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watch

    async def _watch_cancels(self) -> None:
        """While runs execute here: one query per interval finds those cancelled elsewhere."""
        while True:
            await asyncio.sleep(self.options.cancel_poll_interval)
            ids = [rid for rid, ctx in self._live.items() if ctx.cancel_reason is None]
            if not ids:
                continue
            marks = ", ".join("?" for _ in ids)
            try:
                rows = await self.store.fetchall(
                    f"SELECT id FROM runs WHERE id IN ({marks}) AND cancel_requested = 1", ids
                )
            except Exception:
                logger.exception("looking for cancelled runs failed")
                continue
            for (rid,) in rows:
                self.request_cancel(rid)

    async def _execute(self, ctx: RunContext, lease: Lease) -> None:
        try:
            program = self.programs.get(lease.program)
            payload = await run_input(self.store, lease)
            remaining = None if lease.deadline_at is None else lease.deadline_at - time.time()
            if remaining is not None and remaining <= 0:
                raise DeadlineExceeded(f"run {lease.run_id} passed its deadline")
            try:
                async with asyncio.timeout(remaining):
                    result = await program(ctx, payload)
            except TimeoutError:
                raise DeadlineExceeded(f"run {lease.run_id} passed its deadline") from None
        except Park as park:
            if ctx.cancel_reason is not None:
                # Parking would queue the run again: end it now instead.
                await self._settle(ctx, "cancelled", error=_err("run_cancelled", ctx.cancel_reason))
                return
            status = "waiting" if park.waiting else "queued"
            await self._settle(ctx, status, wake_at=park.wake_at, wake_when=park.wake_when)
            log_event(
                logger,
                "run_parked",
                run_id=lease.run_id,
                status=status,
                reason=park.reason,
                wake_at=park.wake_at,
            )
            return
        except asyncio.CancelledError:
            if ctx.cancel_reason is None and not ctx.lease_lost:
                raise
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            if ctx.lease_lost:
                log_event(logger, "lease_lost", run_id=lease.run_id, message="heartbeat failed")
                return
            await self._settle(
                ctx, "cancelled", error=_err("run_cancelled", ctx.cancel_reason or "cancelled")
            )
            return
        except LeaseLost as exc:
            log_event(logger, "lease_lost", run_id=lease.run_id, message=str(exc))
            return
        except RunCancelled as exc:
            await self._settle(ctx, "cancelled", error=_err(exc.code, exc.message))
            return
        except DeadlineExceeded as exc:
            await self._settle(ctx, "failed", error=_err(exc.code, exc.message))
            return
        except Exception as exc:
            code = exc.code if isinstance(exc, ElevenFactorError) else "program_error"
            kinds = {code, type(exc).__name__}
            if isinstance(exc, StepFailed):
                kinds |= {exc.error_type, exc.error_code or ""}
            await self._fail_or_retry(ctx, lease, _err(code, f"{type(exc).__name__}: {exc}"), kinds)
            return
        await self._settle(ctx, "succeeded", result=encode(result))

    async def _fail_or_retry(
        self, ctx: RunContext, lease: Lease, error: str, kinds: set[str]
    ) -> None:
        row = await self.store.fetchone(
            "SELECT max_attempts, retry_backoff, retry_on FROM runs WHERE id = ?", (lease.run_id,)
        )
        assert row is not None
        max_attempts, backoff = int(row[0]), float(row[1])
        retry_on = None if row[2] is None else set(orjson.loads(row[2]))
        retryable = retry_on is None or bool(retry_on & kinds)
        # ``lease.attempt`` is the attempt that just failed (1-based); the claim that starts the
        # retry counts the next one (it sees the run queued with this error).
        if retryable and lease.attempt < max_attempts:
            wake = time.time() + backoff * 2 ** (lease.attempt - 1)
            await self._settle(ctx, "queued", wake_at=wake, error=error, new_attempt=True)
            log_event(logger, "run_retry", run_id=lease.run_id, attempt=lease.attempt + 1)
        else:
            await self._settle(ctx, "failed", error=error)

    async def _settle(
        self,
        ctx: RunContext,
        status: str,
        *,
        wake_at: float | None = None,
        result: bytes | None = None,
        error: str | None = None,
        new_attempt: bool = False,
        wake_when: list[tuple[str, tuple[Any, ...]]] | None = None,
    ) -> None:
        """Write the run's new status, fenced: a worker that lost the lease changes nothing.

        ``new_attempt``: the run is queued for a retry; the journal's events so far belong to
        the failed attempt. A run cancelled while running that would park or retry ends
        ``cancelled`` instead."""
        now = time.time()
        result_hash = blob_hash(result) if result is not None else None
        actor = {"worker": self.id, "via": "system"}
        async with self.store.transaction() as tx:
            if result is not None:
                await tx.execute(BLOB_INSERT, (result_hash, len(result), result, now))
            row = await tx.fetchone(
                "UPDATE runs SET status = ?, wake_at = ?, result_hash = COALESCE(?, result_hash),"
                " error = ?, head_hash = ?, lease_owner = NULL, lease_expires_at = NULL,"
                " updated_at = ?,"
                " attempt_start_n = CASE WHEN ? = 1 THEN ? ELSE attempt_start_n END"
                " WHERE id = ? AND fence = ? RETURNING cancel_requested",
                (
                    status,
                    wake_at,
                    result_hash,
                    error,
                    ctx.head_hash,
                    now,
                    int(new_attempt),
                    ctx.events_written,
                    ctx.run_id,
                    ctx.lease.fence,
                ),
            )
            changed = 0 if row is None else 1
            if changed == 1 and row is not None and row[0] and status in ("queued", "waiting"):
                status, error = "cancelled", _err("run_cancelled", "cancelled by request")
                await tx.execute(
                    "UPDATE runs SET status = 'cancelled', wake_at = NULL, error = ? WHERE id = ?",
                    (error, ctx.run_id),
                )
                wake_when = None
            if changed == 1 and status == "cancelled":
                # An approval requested after the cancel was asked for (as the run parked).
                approvals = await tx.fetchall(
                    "UPDATE approvals SET status = 'cancelled' WHERE run_id = ?"
                    " AND status = 'pending' RETURNING id",
                    (ctx.run_id,),
                )
                for (approval_id,) in approvals:
                    await append_entry(
                        tx, "approval.cancelled", approval_id, actor, {"run_id": ctx.run_id}
                    )
            for condition, params in wake_when or ():
                # Something we park on may have happened while we were deciding to park.
                if changed == 1 and await tx.fetchone(f"SELECT 1 WHERE {condition}", params):
                    await tx.execute(
                        "UPDATE runs SET status = 'queued', wake_at = NULL"
                        " WHERE id = ? AND status = 'waiting'",
                        (ctx.run_id,),
                    )
                    break
            if changed == 1:
                await record_end(
                    tx,
                    ctx.run_id,
                    actor,
                    status,
                    ctx.head_hash,
                    result_hash,
                    error,
                    events=ctx.events_written,
                )
            if changed == 1 and status in ("succeeded", "failed", "cancelled"):
                # Wake a parent waiting on this run.
                await tx.execute(
                    "UPDATE runs SET status = 'queued', wake_at = NULL, updated_at = ?"
                    " WHERE status = 'waiting' AND id = (SELECT parent_id FROM runs WHERE id = ?)",
                    (now, ctx.run_id),
                )
        if changed == 1 and status in ("succeeded", "failed", "cancelled"):
            self.completed += 1
            log_event(
                logger,
                "run_finished",
                run_id=ctx.run_id,
                status=status,
                steps=ctx.events_written,
                executed=ctx.executed,
            )

    async def _heartbeat(self, ctx: RunContext, task: asyncio.Task[None]) -> None:
        interval = self.options.lease_seconds / 3
        while True:
            await asyncio.sleep(interval)
            expires = time.time() + self.options.lease_seconds
            try:
                row = await self.store.fetchone(
                    "UPDATE runs SET lease_expires_at = ? WHERE id = ? AND fence = ?"
                    " RETURNING cancel_requested",
                    (expires, ctx.run_id, ctx.lease.fence),
                )
            except Exception:
                logger.exception("heartbeat for run %s failed", ctx.run_id)
                if time.time() + interval >= ctx.lease_expires:
                    # The lease may lapse before the next beat and another worker may take the
                    # run over: stop now, even mid-step, rather than overlap with it.
                    ctx.lease_expires = 0.0
                    ctx.lease_lost = True
                    task.cancel()
                    return
                continue
            if row is None:
                ctx.lease_expires = 0.0  # lost: no further effects
                ctx.lease_lost = True
                task.cancel()
                return
            ctx.lease_expires = expires
            if row[0]:
                if ctx.cancel_reason is None:
                    ctx.cancel_reason = "cancelled by request"
                task.cancel()
                return


def queues_from(names: Iterable[str]) -> tuple[str, ...]:
    """Normalise a list of queue names."""
    out = tuple(dict.fromkeys(n.strip() for n in names if n.strip()))
    return out or ("default",)
