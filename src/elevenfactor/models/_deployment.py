"""``Deployment``: the innermost wrapper. Enforces timeouts and records each attempt on the Call."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence

from elevenfactor.errors import MalformedResponse, ModelError, ModelTimeout
from elevenfactor.models._messages import Message, ModelSettings, Response, StreamChunk
from elevenfactor.models._protocol import Attempt, Call, Model

__all__ = ["Deployment"]


class Deployment:
    """Wraps a raw provider model with a per-attempt timeout and attempt recording.

    For streams, ``first_token_timeout`` bounds the wait for the first chunk and ``timeout``
    bounds each gap between chunks, so long generations are not cut off. Chunks that carry
    nothing (OpenAI-compatible servers open every stream with a role-only chunk) are not the
    first token: they are held back, so the first-token deadline and the "already streamed"
    boundary that retry and failover respect both mean real output. A stream that ends without
    a chunk carrying ``finish_reason`` was cut off and fails with ``MalformedResponse``.
    """

    def __init__(
        self,
        inner: Model,
        *,
        provider: str,
        model_id: str,
        timeout: float,
        first_token_timeout: float | None = None,
    ) -> None:
        self.inner = inner
        self.provider = provider
        self.model_id = model_id
        self.timeout = timeout
        self.first_token_timeout = first_token_timeout or timeout

    @property
    def name(self) -> str:
        """The deployment name."""
        return self.inner.name

    @property
    def context_window(self) -> int | None:
        """The inner model's context window."""
        return self.inner.context_window

    def _record(self, call: Call, outcome: str, start: float) -> None:
        call.attempts.append(
            Attempt(
                self.name,
                self.provider,
                self.model_id,
                outcome,
                (time.perf_counter() - start) * 1000,
            )
        )

    def _timeout_error(self, what: str, seconds: float) -> ModelTimeout:
        return ModelTimeout(
            f"{self.name}: no {what} within {seconds:g}s",
            deployment=self.name,
            hint="raise the deployment's timeout or fail over to another",
        )

    async def request(
        self, messages: Sequence[Message], settings: ModelSettings, call: Call
    ) -> Response:
        """Call the inner model within ``timeout``; record the attempt."""
        start = time.perf_counter()
        # A bare timer, as for streams: asyncio.timeout costs several microseconds a call.
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        fired: list[bool] = []
        handle = loop.call_at(loop.time() + self.timeout, _expire, task, fired)
        try:
            response = await self.inner.request(messages, settings, call)
        except asyncio.CancelledError:
            if not fired:
                raise
            task.uncancel()
            self._record(call, "timeout", start)
            raise self._timeout_error("answer", self.timeout) from None
        except TimeoutError:
            self._record(call, "timeout", start)
            raise self._timeout_error("answer", self.timeout) from None
        except ModelError as exc:
            self._record(call, exc.error_class, start)
            raise
        except Exception:
            self._record(call, "error", start)
            raise
        finally:
            handle.cancel()
        if fired:  # expired just as the answer came: the answer stands (as asyncio.timeout)
            task.uncancel()
        if not response.model:
            response.model = self.model_id
        self._record(call, "ok", start)
        return response

    async def request_stream(
        self, messages: Sequence[Message], settings: ModelSettings, call: Call
    ) -> AsyncIterator[StreamChunk]:
        """Stream from the inner model, bounding the first-token wait and each gap."""
        start = time.perf_counter()
        stream = aiter(self.inner.request_stream(messages, settings, call))
        limit, what = self.first_token_timeout, "first token"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        held_model: str | None = None
        finished = False
        guard = _Guard(loop)
        try:
            while True:
                # The task is looked up each time: a stream may be consumed by a different task
                # than the one that started it.
                task = asyncio.current_task()
                assert task is not None
                guard.arm(task, deadline)
                try:
                    chunk = await anext(stream)
                except StopAsyncIteration:
                    if not finished:
                        raise MalformedResponse(
                            f"{self.name}: the stream ended without a finish reason",
                            deployment=self.name,
                            hint="the upstream closed the stream early or sent no valid chunks",
                        ) from None
                    break
                except asyncio.CancelledError:
                    if not guard.fired:
                        raise
                    task.uncancel()
                    raise TimeoutError from None
                finally:
                    guard.waiting = False
                finished = finished or chunk.finish_reason is not None
                if what == "first token":
                    if _carries_nothing(chunk):
                        held_model = chunk.model or held_model
                        continue  # the first-token deadline keeps running
                    if chunk.model is None and held_model is not None:
                        chunk = chunk.model_copy(update={"model": held_model})
                    limit, what = self.timeout, "chunk"
                yield chunk
                deadline = loop.time() + limit
        except TimeoutError:
            self._record(call, "timeout", start)
            raise self._timeout_error(what, limit) from None
        except ModelError as exc:
            self._record(call, exc.error_class, start)
            raise
        except (GeneratorExit, asyncio.CancelledError):
            self._record(call, "cancelled", start)
            raise
        except Exception:
            self._record(call, "error", start)
            raise
        finally:
            guard.disarm()
            closer = getattr(stream, "aclose", None)
            if closer is not None:
                await closer()
        self._record(call, "ok", start)


class _Guard:
    """The deadline of a stream's waits, with one timer for many chunks.

    A timer per chunk (``call_at`` and ``cancel``) costs a couple of microseconds; this one stays
    armed while the deadline only moves later, and when it fires early (the deadline moved on)
    it re-arms itself for the new deadline. It cancels the waiting task only if the task is
    waiting (``waiting``) and the current deadline has passed; outside a wait it lapses and the
    next wait arms it again.
    """

    __slots__ = ("at", "deadline", "fired", "handle", "loop", "task", "waiting")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.task: asyncio.Task[object] | None = None
        self.waiting = False
        self.deadline = 0.0
        self.at = 0.0  # when the armed timer fires
        self.handle: asyncio.TimerHandle | None = None
        self.fired = False

    def arm(self, task: asyncio.Task[object], deadline: float) -> None:
        """Bound the wait that ``task`` starts now by ``deadline`` (loop time)."""
        self.task = task
        self.deadline = deadline
        self.waiting = True
        if self.handle is None or deadline < self.at:
            if self.handle is not None:
                self.handle.cancel()
            self.at = deadline
            self.handle = self.loop.call_at(deadline, self._fire)

    def _fire(self) -> None:
        self.handle = None
        if not self.waiting:
            return
        if self.deadline > self.at:  # the deadline moved on since this timer was armed
            self.at = self.deadline
            self.handle = self.loop.call_at(self.deadline, self._fire)
            return
        self.fired = True
        assert self.task is not None
        self.task.cancel()

    def disarm(self) -> None:
        """Stop the timer."""
        self.waiting = False
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None


def _expire(task: asyncio.Task[object], fired: list[bool]) -> None:
    fired.append(True)
    task.cancel()


def _carries_nothing(chunk: StreamChunk) -> bool:
    """True for a chunk with no text, tool call, finish reason or usage (a role-only chunk)."""
    return not (chunk.text or chunk.tool_calls or chunk.finish_reason or chunk.usage)
