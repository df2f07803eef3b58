"""``Limiter``: requests- and tokens-per-minute limits with a priority wait queue.

Semantics (GCRA, the generic cell rate algorithm): a limit of N per ``window`` (60 s) keeps one
number, the *theoretical arrival time* ``tat``. Each unit costs ``window / N`` seconds; a request
of cost ``c`` is admitted at ``now`` if ``max(tat, now) + c * window / N - now <= window`` and
then moves ``tat`` there. This is a bucket of N refilling continuously: a burst of N at once,
then N per window, so over any ``t`` seconds at most ``N + N * t / window`` units are admitted.
It is O(1) per limit, exact under contention (the check and the update are one atomic step: no
await in-process, one Lua script on Redis), and says exactly when a refused request would fit
(``tat + c * window / N - window``), so waiters sleep until then instead of polling.

A request asks for one unit of every ``rpm`` limit and its tokens of every ``tpm`` limit, all
or nothing. ``reconcile`` moves the ``tpm`` limits' ``tat`` by the difference between the real
and the reserved tokens (a refund gives capacity back at once, an excess is owed).

Over a limit, a request waits in a queue per limit, ordered by priority (higher first) and
arrival (FIFO within a priority). Only the head of a queue tries again, at the time the limit
predicted; the others sleep until woken. A request whose deadline falls before the predicted
time is refused at once with ``LimitExceeded`` and a ``retry_after`` of the predicted wait.
Across processes (Redis) each process keeps its own queue: priorities order a process's
waiters, and the processes' heads compete at the predicted times.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from elevenfactor.errors import LimitExceeded
from elevenfactor.models._limit_keys import (
    PRIORITIES,
    LimitKey,
    LimitWait,
    limit_wait,
    limits_for,
    priority_of,
)

if TYPE_CHECKING:
    from elevenfactor.config import ProjectConfig, Settings

__all__ = [
    "PRIORITIES",
    "LimitBackend",
    "LimitKey",
    "LimitWait",
    "Limiter",
    "LocalLimits",
    "Permit",
    "Verdict",
    "limit_exceeded",
    "limit_wait",
    "limits_for",
    "open_limiter",
    "priority_of",
]


class Verdict(NamedTuple):
    """A backend's answer: admitted (``ok``), or the seconds until it could be (``wait``) and
    the index of the limit that decides it (``blocking``). ``at``: the backend's clock;
    ``by``: the backend that decided, when not the one asked (a fallback)."""

    ok: bool
    wait: float
    blocking: int
    at: float
    by: LimitBackend | None = None


@dataclass(slots=True)
class Permit:
    """Capacity granted by ``Limiter.acquire``; hand it to ``reconcile`` after the call."""

    keys: tuple[LimitKey, ...]
    tokens: int
    at: float = 0.0
    """When the backend granted it, on the backend's clock (Redis TIME, or monotonic)."""
    waited: float = 0.0
    """Seconds the request waited for capacity."""
    backend: LimitBackend | None = field(default=None, repr=False)


class LimitBackend(Protocol):
    """Where the limits' state lives. Each method is one atomic step over all ``keys``."""

    async def try_acquire(
        self, keys: Sequence[LimitKey], costs: Sequence[int], *, commit: bool = True
    ) -> Verdict:
        """Take ``costs`` of ``keys`` if all fit now (``commit``), else say when they would."""
        ...

    async def adjust(self, keys: Sequence[LimitKey], deltas: Sequence[int]) -> None:
        """Add ``deltas`` (negative: refund) to ``keys``."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


class LocalLimits:
    """The limits of this process (no I/O): a ``tat`` per limit, in ``time.monotonic()``."""

    def __init__(self) -> None:
        self._tat: dict[str, float] = {}

    async def try_acquire(
        self, keys: Sequence[LimitKey], costs: Sequence[int], *, commit: bool = True
    ) -> Verdict:
        """The GCRA check over every key, then the update if all fit."""
        return self.check(keys, costs, commit=commit)

    def check(self, keys: Sequence[LimitKey], costs: Sequence[int], *, commit: bool) -> Verdict:
        """``try_acquire`` without the coroutine."""
        now = time.monotonic()
        worst, blocking = 0.0, 0
        new: list[float] = []
        for i, key in enumerate(keys):
            tat = max(self._tat.get(key.id, now), now) + costs[i] * key.window / key.value
            new.append(tat)
            wait = tat - key.window - now
            if wait > worst:
                worst, blocking = wait, i
        if worst > 0 or not commit:
            return Verdict(False, worst, blocking, now)
        for i, key in enumerate(keys):
            self._tat[key.id] = new[i]
        if len(self._tat) > 4096:
            self._tat = {k: v for k, v in self._tat.items() if v > now}  # full buckets go
        return Verdict(True, 0.0, 0, now)

    async def adjust(self, keys: Sequence[LimitKey], deltas: Sequence[int]) -> None:
        """Move each key's ``tat`` by its delta; a bucket refunded past full is simply full."""
        now = time.monotonic()
        for key, delta in zip(keys, deltas, strict=True):
            tat = max(self._tat.get(key.id, now), now) + delta * key.window / key.value
            if tat > now:
                self._tat[key.id] = tat
            else:
                self._tat.pop(key.id, None)

    async def aclose(self) -> None:
        """Nothing to release."""


class _Waiter:
    __slots__ = ("cost", "event", "order", "qid", "queue")

    def __init__(self, priority: int, seq: int) -> None:
        self.order = (-priority, seq)
        self.event = asyncio.Event()
        self.queue: list[_Waiter] | None = None
        self.qid = ""
        self.cost = 0

    @property
    def head(self) -> bool:
        """First in its queue (or in none)."""
        return self.queue is None or self.queue[0] is self

    def __lt__(self, other: _Waiter) -> bool:
        return self.order < other.order


class Limiter:
    """Admits requests against limits, queueing those that must wait (see the module doc)."""

    def __init__(self, backend: LimitBackend | None = None) -> None:
        self.backend: LimitBackend = backend if backend is not None else LocalLimits()
        self._queues: dict[str, list[_Waiter]] = {}
        self._seq = itertools.count()

    def waiting(self, key: LimitKey) -> int:
        """Requests of this process waiting for ``key``."""
        return len(self._queues.get(key.id, ()))

    async def acquire(
        self, keys: Sequence[LimitKey], tokens: int, *, deadline: float, priority: int = 0
    ) -> Permit:
        """Take one request and ``tokens`` of every limit in ``keys``, waiting (by priority,
        then first come) until ``deadline`` (``time.monotonic()``) at the latest.

        Raises ``LimitExceeded`` at once when the request can never fit a limit, or when the
        limit says capacity frees only after ``deadline``.
        """
        keys = tuple(keys)
        tokens = max(int(tokens), 0)
        if not keys:
            return Permit(keys, tokens)
        costs = [k.cost(tokens) for k in keys]
        for key, cost in zip(keys, costs, strict=True):
            if cost > key.value:
                raise limit_exceeded(
                    f"this request needs {cost} tokens but the limit {key.name} admits at most "
                    f"{key.value} tokens per {_period(key)}: it can never be admitted",
                    None,
                    "lower max_tokens or shorten the prompt, or raise the limit",
                    **key.details(),
                )
        start = time.monotonic()
        queued = [i for i, k in enumerate(keys) if self._queues.get(k.id)]
        if not queued:
            verdict = await self.backend.try_acquire(keys, costs)
            if verdict.ok:
                return Permit(keys, tokens, verdict.at, 0.0, verdict.by or self.backend)
            _refuse_if_late(keys[verdict.blocking], verdict.wait, deadline)
            blocking, wait = verdict.blocking, verdict.wait
        else:
            blocking, wait = queued[0], 0.0
        waiter = _Waiter(priority, next(self._seq))
        self._enqueue(waiter, keys[blocking], costs[blocking])
        try:
            if not waiter.head:  # behind others: could it fit before the deadline after them?
                estimate = await self._estimate(waiter, keys, costs, blocking)
                _refuse_if_late(keys[estimate.blocking], estimate.wait, deadline)
            while True:
                if not waiter.head:
                    await _sleep(waiter, deadline - time.monotonic())
                    if not waiter.head and time.monotonic() >= deadline:
                        estimate = await self._estimate(waiter, keys, costs, blocking)
                        raise _exceeded(keys[estimate.blocking], estimate.wait, deadline)
                    wait = 0.0  # head now: the one before left, capacity may be free
                    continue
                if wait > 0:  # until the predicted time, or until woken
                    await _sleep(waiter, wait)
                    wait = 0.0
                    continue  # is this still the head? (a higher priority may have come)
                verdict = await self.backend.try_acquire(keys, costs)
                if verdict.ok:
                    waited = time.monotonic() - start
                    return Permit(keys, tokens, verdict.at, waited, verdict.by or self.backend)
                _refuse_if_late(keys[verdict.blocking], verdict.wait, deadline)
                if verdict.blocking != blocking:
                    blocking = verdict.blocking
                    self._leave(waiter)
                    self._enqueue(waiter, keys[blocking], costs[blocking])
                wait = verdict.wait
        finally:
            self._leave(waiter)

    async def _estimate(
        self, waiter: _Waiter, keys: Sequence[LimitKey], costs: Sequence[int], blocking: int
    ) -> Verdict:
        """When the request would fit once the waiters ahead of it got theirs (no commit)."""
        ahead = sum(w.cost for w in waiter.queue or () if w < waiter)
        bigger = list(costs)
        bigger[blocking] += ahead
        return await self.backend.try_acquire(keys, bigger, commit=False)

    async def reconcile(self, permit: Permit, actual_tokens: int) -> None:
        """Correct the tokens of ``permit`` to ``actual_tokens`` (refund or add)."""
        delta = max(int(actual_tokens), 0) - permit.tokens
        if delta == 0 or permit.backend is None:
            return
        keys = [k for k in permit.keys if k.kind == "tpm"]
        if keys:
            await permit.backend.adjust(keys, [delta] * len(keys))
            permit.tokens += delta

    async def aclose(self) -> None:
        """Close the backend."""
        await self.backend.aclose()

    def _enqueue(self, waiter: _Waiter, key: LimitKey, cost: int) -> None:
        queue = self._queues.setdefault(key.id, [])
        bisect.insort(queue, waiter)
        waiter.queue, waiter.qid, waiter.cost = queue, key.id, cost

    def _leave(self, waiter: _Waiter) -> None:
        queue = waiter.queue
        if queue is None:
            return
        waiter.queue = None
        head = queue[0] is waiter
        queue.remove(waiter)
        if not queue:
            self._queues.pop(waiter.qid, None)
        elif head:
            queue[0].event.set()  # the next one tries now: capacity may be left


async def _sleep(waiter: _Waiter, seconds: float) -> bool:
    """Sleep up to ``seconds`` or until woken; True if woken."""
    if seconds > 0 and not waiter.event.is_set():
        try:
            async with asyncio.timeout(seconds):
                await waiter.event.wait()
        except TimeoutError:
            pass
    woken = waiter.event.is_set()
    waiter.event.clear()
    return woken


def _period(key: LimitKey) -> str:
    return "minute" if key.window == 60.0 else f"{key.window:g} s"


def _exceeded(key: LimitKey, wait: float, deadline: float) -> LimitExceeded:
    left = max(deadline - time.monotonic(), 0.0)
    what = "requests" if key.kind == "rpm" else "tokens"
    return limit_exceeded(
        f"rate limit {key.name} ({key.value} {what} per {_period(key)}) has no capacity for "
        f"this request within its deadline ({left:.3g} s left); capacity frees in "
        f"{wait:.3g} s",
        round(wait, 3),
        "retry after Retry-After seconds, send x-elevenfactor-timeout with more time, "
        "or ask for a higher limit",
        **key.details(),
    )


def limit_exceeded(
    message: str, retry_after: float | None, hint: str, **details: Any
) -> LimitExceeded:
    """A ``LimitExceeded`` with a hint (its constructor takes every keyword as a detail)."""
    exc = LimitExceeded(message, retry_after=retry_after, **details)
    exc.hint = hint
    return exc


def _refuse_if_late(key: LimitKey, wait: float, deadline: float) -> None:
    if time.monotonic() + wait > deadline:
        raise _exceeded(key, wait, deadline)


def open_limiter(
    settings: Settings, project: ProjectConfig | None = None, *, prefix: str | None = None
) -> Limiter:
    """The limiter of this deployment: shared through Redis when ``settings.redis_url`` is set
    (keys under ``{settings.redis_prefix}limits:`` unless ``prefix`` is given; Redis down: each
    process enforces the limits itself until it is back), else in-process. Opens no connection
    until first used; ``aclose()`` it on shutdown. ``project`` is accepted for symmetry with the
    other ``open_*`` helpers; the limits themselves come with each call's keys."""
    if not settings.redis_url:
        return Limiter(LocalLimits())
    from elevenfactor.models._limits_redis import RedisLimits

    prefix = prefix if prefix is not None else f"{settings.redis_prefix}limits:"
    return Limiter(RedisLimits(settings.redis_url, prefix=prefix))
