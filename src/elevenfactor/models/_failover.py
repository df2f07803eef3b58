"""``Failover``: try an ordered chain of models, moving on by error class."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable, Sequence

from elevenfactor.config import FailoverConfig
from elevenfactor.errors import ModelError
from elevenfactor.models._messages import Message, ModelSettings, Response, StreamChunk
from elevenfactor.models._protocol import Call, Model

__all__ = ["Failover", "Weighted"]


class Failover:
    """Try ``candidates`` in order.

    An error whose class is in ``config.on`` moves to the next candidate. ``context_window``
    skips to the next candidate with a larger context window (policy ``larger``), to the next one
    (``next``), or fails (``fail``). Other errors (a bad request, say) are raised at once. A
    stream fails over only before its first chunk: after that the caller has seen output.
    """

    def __init__(
        self, name: str, candidates: Sequence[Model], config: FailoverConfig | None = None
    ) -> None:
        if not candidates:
            raise ValueError("a failover chain needs at least one model")
        self._name = name
        self.candidates = list(candidates)
        self.config = config or FailoverConfig()
        self._on = frozenset(self.config.on)

    @property
    def name(self) -> str:
        """The route name."""
        return self._name

    @property
    def context_window(self) -> int | None:
        """The largest context window in the chain."""
        known = [c.context_window for c in self.candidates if c.context_window]
        return max(known) if known else None

    def order(self) -> list[Model]:
        """The candidates in the order this request will try them."""
        return self.candidates

    def _next_index(self, order: list[Model], i: int, exc: ModelError) -> int | None:
        if exc.error_class == "context_window":
            policy = self.config.context_window
            if policy == "fail":
                return None
            if policy == "next":
                return i + 1 if i + 1 < len(order) else None
            current = order[i].context_window or 0
            for j in range(i + 1, len(order)):
                window = order[j].context_window
                if window is None or window > current:
                    return j
            return None
        if exc.error_class in self._on and i + 1 < len(order):
            return i + 1
        return None

    async def request(
        self, messages: Sequence[Message], settings: ModelSettings, call: Call
    ) -> Response:
        """Answer from the first candidate that succeeds."""
        order = self.order()
        i = 0
        while True:
            try:
                return await order[i].request(messages, settings, call)
            except ModelError as exc:
                nxt = self._next_index(order, i, exc)
                if nxt is None:
                    raise
                i = nxt

    def request_stream(
        self, messages: Sequence[Message], settings: ModelSettings, call: Call
    ) -> AsyncIterator[StreamChunk]:
        """Stream from the first candidate that yields a first chunk.

        A chain of one has nowhere to fail over to: its stream is the candidate's own, without
        one more generator between every chunk and the client.
        """
        if len(self.candidates) == 1:
            return self.candidates[0].request_stream(messages, settings, call)
        return self._stream(messages, settings, call)

    async def _stream(
        self, messages: Sequence[Message], settings: ModelSettings, call: Call
    ) -> AsyncIterator[StreamChunk]:
        order = self.order()
        i = 0
        while True:
            stream = aiter(order[i].request_stream(messages, settings, call))
            try:
                first = await anext(stream)
            except StopAsyncIteration:
                return
            except ModelError as exc:
                nxt = self._next_index(order, i, exc)
                if nxt is None:
                    raise
                i = nxt
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


class Weighted(Failover):
    """Spread requests over targets by weight; a failing target fails over to the others."""

    def __init__(
        self,
        name: str,
        targets: Sequence[tuple[Model, float]],
        config: FailoverConfig | None = None,
        *,
        rng: Callable[[], float] | None = None,
    ) -> None:
        super().__init__(name, [m for m, _ in targets], config)
        self.weights = [w for _, w in targets]
        self._random = rng or random.random

    def order(self) -> list[Model]:
        """A weighted random order (Efraimidis-Spirakis keys), fresh for each request."""
        keyed = [(self._random() ** (1.0 / w), i) for i, w in enumerate(self.weights)]
        keyed.sort(reverse=True)
        return [self.candidates[i] for _, i in keyed]
