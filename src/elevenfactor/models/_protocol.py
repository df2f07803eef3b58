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
    """One try at one deployment: where it went and how it ended (``ok``, an error class,
    ``cache_hit``, or ``semantic_hit`` with the ``similarity`` of the cached question)."""

    deployment: str
    provider: str
    model: str
    outcome: str
    latency_ms: float
    similarity: float | None = None


@dataclass(slots=True)
class Call:
    """What happened during one logical model call; filled in by providers and wrappers.

    ``org_id`` and ``user_id`` say on whose behalf it is made (the semantic cache's scope;
    empty: unknown, and the semantic cache is not used)."""

    trace_id: str = ""
    route: str = ""
    attempts: list[Attempt] = field(default_factory=list)
    cache_hit: bool = False
    started: float = field(default_factory=time.perf_counter)
    org_id: str = ""
    user_id: str = ""

    @property
    def final(self) -> Attempt | None:
        """The last attempt, which produced the answer or the error."""
        return self.attempts[-1] if self.attempts else None

    @property
    def path(self) -> list[str]:
        """The failover path, e.g. ``["primary:rate_limit", "backup:ok"]``; a semantic hit
        carries its similarity: ``"primary:semantic_hit@0.9731"``."""
        return [
            f"{a.deployment}:{a.outcome}"
            + (f"@{a.similarity:.4f}" if a.similarity is not None else "")
            for a in self.attempts
        ]


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
