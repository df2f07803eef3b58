"""``RunContext``: the one door through which a durable program touches the world.

Every effect is a step with a logical position (``step_id``) in the run's journal. When the
program re-executes (after a crash, a park, a retry) a step already in the journal returns its
recorded result instead of running again; a step that differs from the journal's at that
position raises ``JournalDivergence``. Positions are assigned when a step is issued, and parallel
branches get their own namespace ("3.0.0", "3.1.0"), so concurrency cannot reorder them.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import random as _random
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, overload

import orjson

from elevenfactor.errors import (
    ElevenFactorError,
    JournalDivergence,
    LeaseLost,
    RunCancelled,
    StepFailed,
)
from elevenfactor.runtime._codec import decode, encode
from elevenfactor.runtime._journal import Event, append_event, load_events, load_payloads
from elevenfactor.runtime._runs import Lease
from elevenfactor.store import Store

__all__ = ["Park", "RunContext", "StepRetry", "step_key"]

T = TypeVar("T")
R = TypeVar("R")
_STEP_KEY: contextvars.ContextVar[str | None] = contextvars.ContextVar("step_key", default=None)


def step_key() -> str | None:
    """Inside a step: a key unique to this step of this run (``<run id>:<step id>``), the same
    on every re-execution. Side-effecting tools use it to make their effect idempotent."""
    return _STEP_KEY.get()


class Park(BaseException):
    """Stop executing and free the worker until ``wake_at``, or until an outside event when
    ``waiting``. ``wake_when`` holds SQL conditions (with parameters); if any holds as the run
    parks, it is queued at once, so an event that arrived meanwhile is not missed. A
    BaseException so ``except Exception`` in a program cannot swallow it."""

    def __init__(
        self,
        *,
        wake_at: float | None,
        waiting: bool,
        reason: str,
        wake_when: Sequence[tuple[str, tuple[Any, ...]]] = (),
    ) -> None:
        super().__init__(reason)
        self.wake_at = wake_at
        self.waiting = waiting
        self.reason = reason
        self.wake_when = list(wake_when)


@dataclass(frozen=True, slots=True)
class StepRetry:
    """Retry a failing step before its failure is journaled."""

    attempts: int = 3
    backoff: float = 0.5
    max_backoff: float = 30.0
    on: tuple[type[BaseException], ...] = (Exception,)

    def delay(self, attempt: int) -> float:
        """Full-jitter exponential backoff before retry ``attempt`` (1-based)."""
        return _random.uniform(0, min(self.max_backoff, self.backoff * 2 ** (attempt - 1)))


def _error_json(exc: BaseException) -> str:
    code = exc.code if isinstance(exc, ElevenFactorError) else None
    return orjson.dumps({"type": type(exc).__name__, "message": str(exc), "code": code}).decode()


@dataclass
class _Shared:
    """State shared by a run's context and its branch views."""

    store: Store
    lease: Lease
    by_step: dict[str, Event]
    payloads: dict[str, bytes]
    written: int
    head_hash: str
    lease_expires: float
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    cancel_reason: str | None = None
    lease_lost: bool = False
    executed: int = 0
    hooks: dict[str, Any] = field(default_factory=dict)


class RunContext:
    """Passed to every durable program: ``step``, ``now``, ``random``, ``sleep``, ``parallel``;
    approvals and sub-runs build on ``reserve`` and ``record``."""

    def __init__(self, shared: _Shared, prefix: str = "") -> None:
        self._s = shared
        self._prefix = prefix
        self._counter = 0
        self.store = shared.store
        self.lease = shared.lease
        self.run_id = shared.lease.run_id

    @classmethod
    async def open(cls, store: Store, lease: Lease) -> RunContext:
        """Load the run's journal and the payloads it references."""
        events = await load_events(store, lease.run_id)
        payloads = await load_payloads(store, [lease.run_id])
        shared = _Shared(
            store=store,
            lease=lease,
            by_step={e.step_id: e for e in events},
            payloads=payloads,
            written=len(events),
            head_hash=events[-1].hash if events else lease.genesis_hash,
            lease_expires=lease.expires_at,
            cancel_reason="cancelled by request" if lease.cancel_requested else None,
        )
        return cls(shared)

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
            s.written += 1
            s.head_hash = ev.hash
        s.by_step[step_id] = ev
        if output is not None and ev.output_hash is not None:
            s.payloads[ev.output_hash] = output
        s.executed += 1
        return ev

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
        token = _STEP_KEY.set(f"{self.run_id}:{step_id}")
        attempt = 1
        try:
            while True:
                try:
                    value = fn(*args, **kwargs)
                    if inspect.isawaitable(value):
                        value = await value
                    break
                except Exception as exc:
                    retryable = retry is not None and isinstance(exc, retry.on)
                    if retry is None or not retryable or attempt >= retry.attempts:
                        await self.record(step_id, kind, name, "failed", None, _error_json(exc))
                        raise StepFailed(
                            f"step {step_id} ({kind} {name!r}) failed: {exc}",
                            step=name,
                            error_type=type(exc).__name__,
                            error_code=exc.code if isinstance(exc, ElevenFactorError) else None,
                        ) from exc
                    await asyncio.sleep(retry.delay(attempt))
                    attempt += 1
                    self.check_live()
        finally:
            _STEP_KEY.reset(token)
        output = encode(value)
        await self.record(step_id, kind, name, "done", output)
        if result_type is None and isinstance(value, (str, int, float, bool, type(None))):
            return value
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
        step_id, ev = self.reserve("sleep", name)
        if ev is not None:
            self.replayed(ev)
            return
        self.check_live()
        if time.time() >= wake_at:
            await self.record(step_id, "sleep", name, "done", encode(wake_at))
            return
        raise Park(wake_at=wake_at, waiting=False, reason=f"sleeping until {wake_at:.3f}")

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
        step_id, _ = self.reserve("parallel", name)
        if not branches:
            return []
        sem = asyncio.Semaphore(limit) if limit else None

        async def one(i: int, fn: Callable[[RunContext], Awaitable[R]]) -> R:
            ctx = self.branch(step_id, i)
            if sem is None:
                return await fn(ctx)
            async with sem:
                return await fn(ctx)

        tasks = [asyncio.ensure_future(one(i, fn)) for i, fn in enumerate(branches)]
        try:
            await asyncio.wait(tasks)
        except asyncio.CancelledError:
            for t in tasks:
                t.cancel()
            raise
        parks = [e for t in tasks if isinstance(e := t.exception(), Park)]
        if parks:
            wake = [p.wake_at for p in parks if p.wake_at is not None]
            raise Park(
                wake_at=min(wake) if wake else None,
                waiting=any(p.waiting for p in parks),
                reason=f"{len(parks)} parallel branches parked",
                wake_when=[c for p in parks for c in p.wake_when],
            )
        for t in tasks:
            exc = t.exception()
            if exc is not None:
                raise exc
        return [t.result() for t in tasks]

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
