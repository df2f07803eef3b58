"""``RunContext``: the one door through which a durable program touches the world.

Every effect is a step at a position in the run's journal. When the program re-executes (after a
crash, a park, a retry) a step already in the journal returns its recorded result instead of
running again; a step that differs from the journal's at that position raises
``JournalDivergence``.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import random as _random
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson

from elevenfactor.errors import (
    ElevenFactorError,
    JournalDivergence,
    LeaseLost,
    RunCancelled,
    StepFailed,
)
from elevenfactor.runtime._codec import decode, encode
from elevenfactor.runtime._journal import Event, append_event, load_events
from elevenfactor.runtime._runs import Lease
from elevenfactor.store import Store

__all__ = ["Park", "RunContext", "StepRetry", "step_key"]

T = TypeVar("T")
_STEP_KEY: contextvars.ContextVar[str | None] = contextvars.ContextVar("step_key", default=None)


def step_key() -> str | None:
    """Inside a step: a key unique to this step of this run (``<run id>:<seq>``), the same on
    every re-execution. Side-effecting tools use it to make their effect idempotent."""
    return _STEP_KEY.get()


class Park(BaseException):
    """Raised inside a program to stop executing and free the worker until ``wake_at`` (or an
    outside event, when ``waiting``). A BaseException so ``except Exception`` cannot swallow it."""

    def __init__(self, *, wake_at: float | None, waiting: bool, reason: str) -> None:
        super().__init__(reason)
        self.wake_at = wake_at
        self.waiting = waiting
        self.reason = reason


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


class RunContext:
    """Passed to every durable program: ``step``, ``now``, ``random``, ``sleep``, and (through the
    approval and sub-run helpers) waits on the outside world."""

    def __init__(
        self, store: Store, lease: Lease, events: list[Event], payloads: dict[str, bytes]
    ) -> None:
        self.store = store
        self.lease = lease
        self.run_id = lease.run_id
        self.events = events
        self._payloads = payloads
        self._pos = 0
        self.head_hash = events[-1].hash if events else lease.genesis_hash
        self.lease_expires = lease.expires_at
        self.cancel_reason: str | None = None
        self.lease_lost = False
        self.executed = 0  # steps executed (not replayed) in this execution

    @classmethod
    async def open(cls, store: Store, lease: Lease) -> RunContext:
        """Load the run's journal and the payloads it references."""
        events = await load_events(store, lease.run_id)
        rows = await store.fetchall(
            "SELECT b.hash, b.content FROM blobs b JOIN journal j ON j.output_hash = b.hash"
            " WHERE j.run_id = ?",
            (lease.run_id,),
        )
        return cls(store, lease, events, {h: bytes(c) for h, c in rows if c is not None})

    @property
    def position(self) -> int:
        """The sequence number the next step will have."""
        return self._pos

    @property
    def replaying(self) -> bool:
        """True while the program is still re-reading recorded steps."""
        return self._pos < len(self.events)

    def _recorded(self, kind: str, name: str) -> Event | None:
        if self._pos >= len(self.events):
            return None
        ev = self.events[self._pos]
        if ev.kind != kind or ev.name != name:
            raise JournalDivergence(
                f"run {self.run_id}: step {self._pos} is {kind} {name!r} now, but the journal "
                f"recorded {ev.kind} {ev.name!r}",
                hint="a program must issue the same steps in the same order on every execution; "
                "deploy changes that reorder steps only for new runs",
            )
        return ev

    def check_live(self) -> None:
        """Raise if the lease has lapsed or the run was cancelled: no new effects after that."""
        if self.cancel_reason is not None:
            raise RunCancelled(f"run {self.run_id} was cancelled: {self.cancel_reason}")
        if time.time() >= self.lease_expires:
            raise LeaseLost(f"run {self.run_id}: lease expired before the next step")

    def _payload(self, ev: Event) -> bytes:
        assert ev.output_hash is not None
        data = self._payloads.get(ev.output_hash)
        if data is None:
            raise JournalDivergence(
                f"run {self.run_id}: payload of step {ev.seq} is missing",
                hint="retention dropped it; the run cannot resume",
            )
        return data

    def _replayed(self, ev: Event, result_type: type[Any] | None) -> Any:
        self._pos += 1
        if ev.status == "failed":
            err = orjson.loads(ev.error or "{}")
            raise StepFailed(
                f"step {ev.seq} ({ev.kind} {ev.name!r}) failed: {err.get('message')}",
                step=ev.name,
                error_type=err.get("type", "Exception"),
                error_code=err.get("code"),
            )
        if ev.output_hash is None:
            return None
        return decode(self._payload(ev), result_type)

    async def record(
        self, kind: str, name: str, status: str, output: bytes | None, error: str | None = None
    ) -> Event:
        """Append the event at the current position (fenced) and advance."""
        async with self.store.transaction() as tx:
            ev = await append_event(
                tx,
                run_id=self.run_id,
                seq=self._pos,
                kind=kind,
                name=name,
                status=status,
                output=output,
                error=error,
                fence=self.lease.fence,
                prev_hash=self.head_hash,
            )
        self.events.append(ev)
        if output is not None and ev.output_hash is not None:
            self._payloads[ev.output_hash] = output
        self.head_hash = ev.hash
        self._pos += 1
        self.executed += 1
        return ev

    async def step(
        self,
        name: str,
        fn: Callable[..., Awaitable[T] | T],
        *args: Any,
        kind: str = "step",
        result_type: type[T] | None = None,
        retry: StepRetry | None = None,
        **kwargs: Any,
    ) -> T:
        """Run ``fn(*args, **kwargs)`` once, durably; its result is journaled before it returns.

        A failure is journaled too and raised as ``StepFailed`` (identically on replay).
        """
        ev = self._recorded(kind, name)
        if ev is not None:
            return self._replayed(ev, result_type)  # type: ignore[no-any-return]
        self.check_live()
        token = _STEP_KEY.set(f"{self.run_id}:{self._pos}")
        attempt = 1
        try:
            while True:
                try:
                    value = fn(*args, **kwargs)
                    if inspect.isawaitable(value):
                        value = await value
                    break
                except Exception as exc:
                    if retry is None or attempt >= retry.attempts or not isinstance(exc, retry.on):
                        await self.record(kind, name, "failed", None, _error_json(exc))
                        raise StepFailed(
                            f"step {self._pos - 1} ({kind} {name!r}) failed: {exc}",
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
        await self.record(kind, name, "done", output)
        if result_type is None and isinstance(value, (str, int, float, bool, type(None))):
            return value
        return decode(output, result_type)  # type: ignore[no-any-return]

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
        """A durable timer: the run parks (holding no worker) until ``wake_at``, across restarts."""
        ev = self._recorded("sleep", name)
        if ev is not None:
            self._replayed(ev, None)
            return
        self.check_live()
        if time.time() >= wake_at:
            await self.record("sleep", name, "done", encode(wake_at))
            return
        raise Park(wake_at=wake_at, waiting=False, reason=f"sleeping until {wake_at:.3f}")

    async def sleep(self, seconds: float, name: str = "sleep") -> None:
        """Sleep ``seconds`` from now (the start time is journaled, so restarts don't extend it)."""
        start = await self.now()
        await self.sleep_until(start + seconds, name)
