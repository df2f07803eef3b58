"""``Retry``: exponential backoff with full jitter that honours Retry-After."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Sequence

from elevenfactor.config import RetryConfig
from elevenfactor.errors import ModelError
from elevenfactor.models._messages import Message, ModelSettings, Response, StreamChunk
from elevenfactor.models._protocol import Call, Model

__all__ = ["Retry"]


class Retry:
    """Retry the inner model on the configured error classes.

    A Retry-After longer than ``max_retry_after`` is not waited out: the error is raised so a
    failover chain can move on at once. Streams are retried only before their first chunk.
    """

    def __init__(self, inner: Model, config: RetryConfig, *, rng: random.Random | None = None):
        self.inner = inner
        self.config = config
        self._on = frozenset(config.on)
        self._rng = rng or random.Random()

    @property
    def name(self) -> str:
        """The inner model's name."""
        return self.inner.name

    @property
    def context_window(self) -> int | None:
        """The inner model's context window."""
        return self.inner.context_window

    def delay(self, attempt: int, error: ModelError) -> float | None:
        """Seconds to wait before retry number ``attempt`` (1-based), or None to give up."""
        if attempt >= self.config.attempts or error.error_class not in self._on:
            return None
        if error.retry_after is not None:
            if error.retry_after > self.config.max_retry_after:
                return None
            return error.retry_after
        cap = min(self.config.backoff_max, self.config.backoff_base * (2 ** (attempt - 1)))
        return self._rng.uniform(0, cap)

    async def request(
        self, messages: Sequence[Message], settings: ModelSettings, call: Call
    ) -> Response:
        """Call with retries."""
        attempt = 1
        while True:
            try:
                return await self.inner.request(messages, settings, call)
            except ModelError as exc:
                wait = self.delay(attempt, exc)
                if wait is None:
                    raise
            await asyncio.sleep(wait)
            attempt += 1

    async def request_stream(
        self, messages: Sequence[Message], settings: ModelSettings, call: Call
    ) -> AsyncIterator[StreamChunk]:
        """Stream with retries before the first chunk."""
        attempt = 1
        while True:
            stream = aiter(self.inner.request_stream(messages, settings, call))
            try:
                first = await anext(stream)
            except StopAsyncIteration:
                return
            except ModelError as exc:
                wait = self.delay(attempt, exc)
                if wait is None:
                    raise
                await asyncio.sleep(wait)
                attempt += 1
                continue
            break
        try:
            yield first
            async for chunk in stream:
                yield chunk
        finally:
            closer = getattr(stream, "aclose", None)
            if closer is not None:
                await closer()
