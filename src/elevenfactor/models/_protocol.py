"""The ``Model`` protocol and the ``Call`` record that wrappers annotate."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from elevenfactor.models._messages import Message, ModelSettings, Response, StreamChunk

__all__ = ["Attempt", "Call", "Model"]


@dataclass(slots=True)
class Attempt:
    """One try at one deployment: where it went and how it ended (``ok`` or an error class)."""

    deployment: str
    provider: str
    model: str
    outcome: str
    latency_ms: float


@dataclass(slots=True)
class Call:
    """What happened during one logical model call; filled in by providers and wrappers."""

    trace_id: str = ""
    route: str = ""
    attempts: list[Attempt] = field(default_factory=list)
    cache_hit: bool = False
    started: float = field(default_factory=time.perf_counter)

    @property
    def final(self) -> Attempt | None:
        """The last attempt, which produced the answer or the error."""
        return self.attempts[-1] if self.attempts else None

    @property
    def path(self) -> list[str]:
        """The failover path, e.g. ``["primary:rate_limit", "backup:ok"]``."""
        return [f"{a.deployment}:{a.outcome}" for a in self.attempts]


@runtime_checkable
class Model(Protocol):
    """Anything that answers messages. Providers and every wrapper implement this."""

    @property
    def name(self) -> str:
        """The deployment (or wrapper) name used in logs."""
        ...

    @property
    def context_window(self) -> int | None:
        """Maximum tokens in + out, if known."""
        ...

    async def request(
        self, messages: Sequence[Message], settings: ModelSettings, call: Call
    ) -> Response:
        """Answer ``messages`` in one piece."""
        ...

    def request_stream(
        self, messages: Sequence[Message], settings: ModelSettings, call: Call
    ) -> AsyncIterator[StreamChunk]:
        """Answer ``messages`` as a stream of chunks."""
        ...
