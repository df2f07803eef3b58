"""Executing one run: its program over the journal, its heartbeat, the watch for cancels
requested elsewhere, and settling it (succeeded, failed, retried, parked or cancelled).

``RunExecutor`` is the part of a ``Worker`` that runs a leased run; the worker adds the claim
loop. A cancel is honoured at the run's next step: ``request_cancel`` flags a run executing in
this process at once; for a cancel from another process one query per ``cancel_poll_interval``
(for all the runs a worker executes) finds it, and each heartbeat also interrupts a run
mid-step.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from typing import TYPE_CHECKING, Any

import orjson

from elevenfactor.errors import (
    DeadlineExceeded,
    ElevenFactorError,
    LeaseLost,
    RunCancelled,
    StepFailed,
)
from elevenfactor.observe import _tracing, log_event
from elevenfactor.observe._trace_runs import execution_span
from elevenfactor.runtime._breakers import BLOCKING_CODES, run_ended
from elevenfactor.runtime._codec import encode
from elevenfactor.runtime._context import Park, RunContext
from elevenfactor.runtime._programs import Programs
from elevenfactor.runtime._runs import Lease, run_input
from elevenfactor.runtime._settle import FINAL, end_error, settle_run
from elevenfactor.store import Store, wake_local

if TYPE_CHECKING:
    from elevenfactor.runtime._worker import WorkerOptions

__all__ = ["RunExecutor"]

logger = logging.getLogger("elevenfactor.worker")
_OUTCOMES = {"waiting": "parked", "queued": "parked"}  # a run that settles unfinished parked


class RunExecutor:
    """Executes leased runs; tracks those executing here (for cancels and heartbeats)."""

    def __init__(
        self,
        store: Store,
        programs: Programs,
        options: WorkerOptions,
        *,
        worker_id: str | None = None,
        hooks: dict[str, Any] | None = None,
    ) -> None:
        self.store = store
        self.programs = programs
        self.options = options
        self.id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.completed = 0
        """Runs this worker ended (succeeded, failed or cancelled)."""
        self.hooks: dict[str, Any] = dict(hooks or {})
        self._live: dict[str, RunContext] = {}
        self._watch: asyncio.Task[None] | None = None

    def request_cancel(self, run_id: str, reason: str = "cancelled by request") -> bool:
        """Stop ``run_id`` at its next step if this worker is executing it (call after
        ``cancel_run``); False if it is not executing here."""
        ctx = self._live.get(run_id)
        if ctx is None:
            return False
        if ctx.cancel_reason is None:
            ctx.cancel_reason = reason
        return True

    async def _guarded(self, lease: Lease) -> None:
        try:
            await self.execute(lease)
        except Exception:
            logger.exception("executing run %s failed", lease.run_id)

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
            if _tracing.TRACER is None:
                await self._execute(ctx, lease)
            else:
                await self._traced(ctx, lease)
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

    async def _traced(self, ctx: RunContext, lease: Lease) -> None:
        """``_execute`` inside the execution's span, in the trace the run was submitted in."""
        row = await self.store.fetchone(
            "SELECT trace_id, traceparent FROM runs WHERE id = ?", (lease.run_id,)
        )
        trace_id, parent = (row[0], row[1]) if row is not None else (None, None)
        try:
            agent = hasattr(self.programs.get(lease.program), "spec")  # an Agent: not a workflow
        except ElevenFactorError:  # an unknown program: _execute fails the run
            agent = False
        sp = execution_span(
            lease.run_id, lease.program, lease.attempt, trace_id, parent, agent=agent
        )
        if sp is None:
            await self._execute(ctx, lease)
            return
        token = _tracing.activate(sp)
        error: BaseException | None = None
        try:
            await self._execute(ctx, lease)
        except BaseException as exc:
            error = exc
            raise
        finally:
            _tracing.deactivate(token)
            outcome = ctx.hooks.pop("_trace_outcome", "lease_lost")  # set by _settle
            sp.set_attribute("elevenfactor.run.outcome", outcome)
            _tracing.end_span(sp, error)

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
                await self._settle(
                    ctx, "cancelled", error=end_error("run_cancelled", ctx.cancel_reason)
                )
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
                log_event(logger, "lease_lost", run_id=lease.run_id, error="heartbeat failed")
                return
            await self._settle(
                ctx, "cancelled", error=end_error("run_cancelled", ctx.cancel_reason or "cancelled")
            )
            return
        except LeaseLost as exc:
            log_event(logger, "lease_lost", run_id=lease.run_id, error=str(exc))
            return
        except RunCancelled as exc:
            await self._settle(ctx, "cancelled", error=end_error(exc.code, exc.message))
            return
        except DeadlineExceeded as exc:
            await self._settle(ctx, "failed", error=end_error(exc.code, exc.message))
            return
        except Exception as exc:
            code = exc.code if isinstance(exc, ElevenFactorError) else "program_error"
            kinds = {code, type(exc).__name__}
            if isinstance(exc, StepFailed):
                kinds |= {exc.error_type, exc.error_code or ""}
            await self._fail_or_retry(
                ctx, lease, end_error(code, f"{type(exc).__name__}: {exc}"), kinds
            )
            return
        stopped = result.get("stopped") if isinstance(result, dict) else None
        await self._settle(ctx, "succeeded", result=encode(result), blocked=stopped == "blocked")

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
            await self._settle(ctx, "failed", error=error, blocked=bool(kinds & BLOCKING_CODES))

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
        blocked: bool = False,
    ) -> None:
        """Write the run's new status, fenced (see ``settle_run``); a run of an agent that
        ended (``blocked``: stopped by a guard or a breaker) counts in the agent's breaker.
        A run about to end is first given to the ``run_ending`` hook (online evaluation
        submits its scoring runs there, idempotently, before the end is written)."""
        ending = self.hooks.get("run_ending") if status in FINAL else None
        if ending is not None:
            await ending(self.store, ctx.lease, status)
        if _tracing.TRACER is not None:  # read by _traced: the execution span's outcome
            ctx.hooks["_trace_outcome"] = (
                _OUTCOMES.get(status, status) if not new_attempt else "retrying"
            )
        status, changed, woke = await settle_run(
            self.store,
            ctx.run_id,
            ctx.lease.fence,
            {"worker": self.id, "via": "system"},
            status,
            head_hash=ctx.head_hash,
            events=ctx.events_written,
            wake_at=wake_at,
            result=result,
            error=error,
            new_attempt=new_attempt,
            wake_when=wake_when,
        )
        self._ended(ctx, status, changed, woke)
        if changed and status in ("succeeded", "failed"):
            await run_ended(self.programs, self.store, ctx.lease, status, blocked)

    def _ended(self, ctx: RunContext, status: str, changed: bool, woke: bool) -> None:
        if woke:
            wake_local(self.store.url)
        if changed and status in FINAL:
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
