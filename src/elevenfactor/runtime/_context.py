"""``RunContext``: the one door through which a durable program touches the world.

Every effect is a step with a logical position (``step_id``) in the run's journal. When the
program re-executes (after a crash, a park, a retry) a step already in the journal returns its
recorded result instead of running again; a step that differs from the journal's at that
position raises ``JournalDivergence``. Positions are assigned when a step is issued, and parallel
branches get their own namespace ("3.0.0", "3.1.0"), so concurrency cannot reorder them.
"""

from __future__ import annotations

import asyncio
import inspect
import random as _random
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar, overload

import orjson

from elevenfactor.errors import (
    ElevenFactorError,
    JournalDivergence,
    LeaseLost,
    RunCancelled,
    StepFailed,
)
from elevenfactor.observe import _tracing
from elevenfactor.observe._trace_runs import step_span
from elevenfactor.runtime._codec import decode, encode
from elevenfactor.runtime._flow import run_parallel
from elevenfactor.runtime._flow import sleep_until as _sleep_until
from elevenfactor.runtime._journal import Event, append_event, append_inline
from elevenfactor.runtime._run_state import RunState, load_state
from elevenfactor.runtime._runs import Lease
from elevenfactor.runtime._steps import STEP_KEY, Park, StepRetry, error_json, step_key
from elevenfactor.store import Store

__all__ = ["Park", "RunContext", "StepRetry", "step_key"]

T = TypeVar("T")
R = TypeVar("R")
_SCALARS = (str, int, float, bool, type(None))
_PLAIN = frozenset({*_SCALARS, dict, list, tuple, bytes})
"""Result types a step function can return that are never awaitable (checked first: cheaper
than ``inspect.isawaitable``)."""


class RunContext:
    """Passed to every durable program: ``step``, ``now``, ``random``, ``sleep``, ``parallel``;
    approvals and sub-runs build on ``reserve`` and ``record``."""

    def __init__(self, shared: RunState, prefix: str = "") -> None:
        self._s = shared
        self._prefix = prefix
        self._counter = 0
        self.store = shared.store
        self.lease = shared.lease
        self.run_id = shared.lease.run_id

    @classmethod
    async def open(cls, store: Store, lease: Lease) -> RunContext:
        """Load the run's journal and the payloads it references (no query for a fresh run:
        ``lease.has_journal`` False)."""
        return cls(await load_state(store, lease))

    # -- shared state, exposed for the worker -----------------------------------------------

    @property
    def head_hash(self) -> str:
        """Hash of the last event written."""
        return self._s.head_hash

    @property
    def events_written(self) -> int:
        """Events in the journal now."""
        return self._s.written

    @property
    def executed(self) -> int:
        """Steps executed (not replayed) by this execution."""
        return self._s.executed

    @property
    def hooks(self) -> dict[str, Any]:
        """Callbacks the worker provides (e.g. ``approval_pending``)."""
        return self._s.hooks

    @property
    def cancel_reason(self) -> str | None:
        """Set when the run is being cancelled."""
        return self._s.cancel_reason

    @cancel_reason.setter
    def cancel_reason(self, value: str | None) -> None:
        self._s.cancel_reason = value

    @property
    def lease_lost(self) -> bool:
        """Set when a heartbeat found another worker owns the run."""
        return self._s.lease_lost

    @lease_lost.setter
    def lease_lost(self, value: bool) -> None:
        self._s.lease_lost = value

    @property
    def lease_expires(self) -> float:
        """When this worker's lease lapses unless renewed."""
        return self._s.lease_expires

    @lease_expires.setter
    def lease_expires(self, value: float) -> None:
        self._s.lease_expires = value

    # -- the step door ------------------------------------------------------------------------

    def reserve(self, kind: str, name: str) -> tuple[str, Event | None]:
        """Take the next position; return its id and the recorded event there, if any."""
        step_id = f"{self._prefix}{self._counter}"
        self._counter += 1
        ev = self._s.by_step.get(step_id)
        if ev is not None and ev.status == "failed" and ev.n < self.lease.attempt_start_n:
            ev = None  # failed in an earlier attempt of the run: this attempt runs it again
        if ev is not None and (ev.kind != kind or ev.name != name):
            raise JournalDivergence(
                f"run {self.run_id}: step {step_id} is {kind} {name!r} now, but the journal "
                f"recorded {ev.kind} {ev.name!r}",
                hint="a program must issue the same steps in the same order on every execution; "
                "deploy changes that reorder steps only for new runs",
            )
        return step_id, ev

    def check_live(self) -> None:
        """Raise if the lease has lapsed or the run was cancelled: no new effects after that.

        Called before every new step; the worker sets ``cancel_reason`` as soon as it learns of
        a cancel (from ``Worker.request_cancel``, its cancel watch, or a heartbeat)."""
        if self._s.cancel_reason is not None:
            raise RunCancelled(f"run {self.run_id} was cancelled: {self._s.cancel_reason}")
        if time.time() >= self._s.lease_expires:
            raise LeaseLost(f"run {self.run_id}: lease expired before the next step")

    def replayed(self, ev: Event, result_type: type[Any] | None = None) -> Any:
        """The recorded outcome of ``ev``: its decoded output, or ``StepFailed`` raised again."""
        if ev.status == "failed":
            err = orjson.loads(ev.error or "{}")
            raise StepFailed(
                f"step {ev.step_id} ({ev.kind} {ev.name!r}) failed: {err.get('message')}",
                step=ev.name,
                error_type=err.get("type", "Exception"),
                error_code=err.get("code"),
            )
        if ev.output_hash is None:
            return None
        data = self._s.payloads.get(ev.output_hash)
        if data is None:
            raise JournalDivergence(
                f"run {self.run_id}: payload of step {ev.step_id} is missing",
                hint="retention dropped it; the run cannot resume",
            )
        return decode(data, result_type)

    async def record(
        self,
        step_id: str,
        kind: str,
        name: str,
        status: str,
        output: bytes | None,
        error: str | None = None,
    ) -> Event:
        """Append the event for ``step_id`` (fenced) to the chain."""
        ev = self._record_inline(step_id, kind, name, status, output, error)
        if ev is None:
            ev = await self._record_waiting(step_id, kind, name, status, output, error)
        return ev

    def _record_inline(
        self,
        step_id: str,
        kind: str,
        name: str,
        status: str,
        output: bytes | None,
        error: str | None,
    ) -> Event | None:
        """``record`` without suspending where the store can (SQLite, the append not waiting
        for a lock): the event, or None when ``_record_waiting`` has to write it."""
        s = self._s
        if s.inline is None or s.lock.locked():
            return None
        # Inline, the append cannot suspend, so no other branch of the run can come between
        # reading the head and moving it: the run's lock is for appends that wait.
        ev = append_inline(
            s.inline,
            self.run_id,
            s.written,
            step_id,
            kind,
            name,
            status,
            output,
            error,
            s.lease.fence,
            s.head_hash,
        )
        if ev is not None:
            self._recorded(ev, output)
        return ev

    async def _record_waiting(
        self,
        step_id: str,
        kind: str,
        name: str,
        status: str,
        output: bytes | None,
        error: str | None,
    ) -> Event:
        s = self._s
        async with s.lock:
            # The store itself: append_event makes the write atomic (one statement on
            # PostgreSQL, one round trip).
            ev = await append_event(
                s.store,
                run_id=self.run_id,
                n=s.written,
                step_id=step_id,
                kind=kind,
                name=name,
                status=status,
                output=output,
                error=error,
                fence=s.lease.fence,
                prev_hash=s.head_hash,
            )
            self._recorded(ev, output)
        return ev

    def _recorded(self, ev: Event, output: bytes | None) -> None:
        """Move the run's head to ``ev``, just written."""
        s = self._s
        s.written += 1
        s.head_hash = ev.hash
        s.by_step[ev.step_id] = ev
        if output is not None and ev.output_hash is not None:
            s.payloads[ev.output_hash] = output
        s.executed += 1

    @overload
    async def step(
        self,
        name: str,
        fn: Callable[..., Awaitable[T]],
        *args: Any,
        kind: str = ...,
        result_type: type[T] | None = ...,
        retry: StepRetry | None = ...,
        **kwargs: Any,
    ) -> T: ...

    @overload
    async def step(
        self,
        name: str,
        fn: Callable[..., T],
        *args: Any,
        kind: str = ...,
        result_type: type[T] | None = ...,
        retry: StepRetry | None = ...,
        **kwargs: Any,
    ) -> T: ...

    async def step(
        self,
        name: str,
        fn: Callable[..., Any],
        *args: Any,
        kind: str = "step",
        result_type: type[Any] | None = None,
        retry: StepRetry | None = None,
        **kwargs: Any,
    ) -> Any:
        """Run ``fn(*args, **kwargs)`` once, durably; its result is journaled before it returns.

        A failure is journaled too and raised as ``StepFailed`` (identically on replay).
        """
        step_id, ev = self.reserve(kind, name)
        if ev is not None:
            return self.replayed(ev, result_type)
        self.check_live()
        token = STEP_KEY.set(f"{self.run_id}:{step_id}")
        sp = None if _tracing.TRACER is None else step_span(kind, name, step_id)  # live only
        current = None if sp is None else _tracing.activate(sp)
        failed: BaseException | None = None
        attempt = 1
        try:
            while True:
                try:
                    value = fn(*args, **kwargs)
                    if type(value) not in _PLAIN and inspect.isawaitable(value):
                        value = await value
                    break
                except Exception as exc:
                    retryable = retry is not None and isinstance(exc, retry.on)
                    if retry is None or not retryable or attempt >= retry.attempts:
                        await self.record(step_id, kind, name, "failed", None, error_json(exc))
                        raise StepFailed(
                            f"step {step_id} ({kind} {name!r}) failed: {exc}",
                            step=name,
                            error_type=type(exc).__name__,
                            error_code=exc.code if isinstance(exc, ElevenFactorError) else None,
                        ) from exc
                    await asyncio.sleep(retry.delay(attempt))
                    attempt += 1
                    self.check_live()
        except BaseException as exc:
            failed = exc
            raise
        finally:
            STEP_KEY.reset(token)
            if sp is not None:
                _tracing.deactivate(current)
                _tracing.end_span(sp, failed)
        output = encode(value)
        if self._record_inline(step_id, kind, name, "done", output, None) is None:
            await self._record_waiting(step_id, kind, name, "done", output, None)
        if result_type is None:
            if isinstance(value, _SCALARS):
                return value
            return orjson.loads(output)  # what a replay returns: a copy, pydantic models as dicts
        return decode(output, result_type)

    async def now(self) -> float:
        """Wall-clock seconds, journaled: the same value on every re-execution."""
        return await self.step("now", time.time, kind="clock")

    async def random(self) -> float:
        """A uniform float in [0, 1), journaled."""
        return await self.step("random", _random.random, kind="random")

    async def uuid(self) -> str:
        """A random UUID (hex), journaled."""
        return await self.step("uuid", lambda: uuid.uuid4().hex, kind="random")

    async def sleep_until(self, wake_at: float, name: str = "sleep") -> None:
        """A durable timer: the run parks (holding no worker) until ``wake_at``, across
        restarts."""
        await _sleep_until(self, wake_at, name)

    async def sleep(self, seconds: float, name: str = "sleep") -> None:
        """Sleep ``seconds`` from now (the start is journaled, so restarts don't extend it)."""
        start = await self.now()
        await self.sleep_until(start + seconds, name)

    # -- structure ----------------------------------------------------------------------------

    def branch(self, step_id: str, index: int) -> RunContext:
        """A view whose steps live under ``<step_id>.<index>.``."""
        return RunContext(self._s, f"{step_id}.{index}.")

    async def parallel(
        self,
        branches: Sequence[Callable[[RunContext], Awaitable[R]]],
        *,
        limit: int | None = None,
        name: str = "parallel",
    ) -> list[R]:
        """Run ``branches`` concurrently (at most ``limit`` at once), each on its own branch
        context; return their results in order (fan-out, fan-in).

        If a branch raises, the others finish their current work and the first error (in
        branch order) is raised; if a branch parks, the run parks after the others settle.
        No branches return ``[]`` (the position is still taken, so later steps keep theirs).
        """
        return await run_parallel(self, branches, limit, name)

    async def map(
        self,
        fn: Callable[[RunContext, T], Awaitable[R]],
        items: Sequence[T],
        *,
        limit: int | None = None,
        name: str = "map",
    ) -> list[R]:
        """``fn(branch_ctx, item)`` for each item, concurrently up to ``limit``."""

        def bind(item: T) -> Callable[[RunContext], Awaitable[R]]:
            return lambda ctx: fn(ctx, item)

        return await self.parallel([bind(i) for i in items], limit=limit, name=name)
