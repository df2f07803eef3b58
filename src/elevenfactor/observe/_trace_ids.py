"""The span id generator that lets a root span take a trace id we chose.

The gateway answers every request with ``x-trace-id`` and records it on its call records; a run
keeps the trace id it was submitted with. When such a span has no parent, the SDK asks the id
generator for a trace id: ``ContextIds`` answers with the one ``_tracing.start_span`` put in the
context variable, else a random one (as the SDK's own generator does).
"""

from __future__ import annotations

import contextvars
import random

from opentelemetry.sdk.trace.id_generator import IdGenerator

__all__ = ["ContextIds"]

_bits = random.getrandbits


class ContextIds(IdGenerator):
    """Random span ids; the trace id from ``wanted`` when it holds one."""

    def __init__(self, wanted: contextvars.ContextVar[int | None]) -> None:
        self.wanted = wanted

    def generate_span_id(self) -> int:
        """A random non-zero 64-bit span id."""
        span_id = _bits(64)
        while not span_id:
            span_id = _bits(64)
        return span_id

    def generate_trace_id(self) -> int:
        """The wanted trace id, or a random non-zero 128-bit one."""
        wanted = self.wanted.get()
        if wanted:
            return wanted
        trace_id = _bits(128)
        while not trace_id:
            trace_id = _bits(128)
        return trace_id
