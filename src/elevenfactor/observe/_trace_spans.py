"""The lean span recorder: what a span costs on the request path, and no more.

The SDK's span does a lot at every call — a lock and a validating, copying attribute container
for every ``set_attribute``, a ``ReadableSpan`` copy at its end — about 35 µs of CPU for one
span of a gateway call. ``LeanSpan`` keeps what a span is told in plain Python objects (its
attributes in a dict, its events in a tuple, timestamps from ``time.time_ns``, ids from
``random.getrandbits``) and, at its end, appends itself to the exporting batchers' queues. The
work the SDK does on the request path happens in the export thread instead: there the span is
encoded straight to OTLP (``_trace_otlp``) or turned into the SDK's ``ReadableSpan``
(``readable``), cleaned and bounded by the ``OTEL_*_LIMIT`` span limits, for any other exporter.

A ``LeanSpan`` is an ``opentelemetry.trace.Span``: it is made current with the API's context,
child spans (ours or another instrumentation's) see it as their parent, and its context
propagates as a ``traceparent``. ``LeanTracer.start`` asks the configured sampler
(``OTEL_TRACES_SAMPLER``) first; a span it does not sample is the API's ``NonRecordingSpan``,
which records nothing and is never queued, but still carries its ids (with the sampled flag
off) to the log lines and the upstream.

Only ``_tracing.setup_tracing`` imports this module (it imports the SDK).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from time import time_ns
from types import TracebackType
from typing import Any, cast

from opentelemetry import trace as trace_api
from opentelemetry.context import Context, get_current
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanLimits
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    Decision,
    ParentBased,
    Sampler,
    TraceIdRatioBased,
)
from opentelemetry.sdk.util import BoundedList
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)
from opentelemetry.util import types

__all__ = [
    "CONTEXT_VAR",
    "KINDS",
    "UNSET",
    "LeanSpan",
    "LeanTracer",
    "current_span",
    "fast_decider",
    "get_context",
]

KINDS: dict[str, SpanKind] = {
    "server": SpanKind.SERVER,
    "client": SpanKind.CLIENT,
    "internal": SpanKind.INTERNAL,
    "producer": SpanKind.PRODUCER,
    "consumer": SpanKind.CONSUMER,
}
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_NOT_SAMPLED = TraceFlags(TraceFlags.DEFAULT)
UNSET = Status(StatusCode.UNSET)
"""The status of a span nobody set one on (shared: the encoder tells it by identity)."""
_bits = random.getrandbits
_INVALID = trace_api.INVALID_SPAN


def _span_key() -> str | None:
    from opentelemetry.trace import propagation

    key = getattr(propagation, "_SPAN_KEY", None)
    return key if isinstance(key, str) else None


def _context_var() -> ContextVar[Context] | None:
    """The context variable the API's default runtime context keeps the current context in
    (None for another runtime context, e.g. one set by ``OTEL_PYTHON_CONTEXT``)."""
    from opentelemetry import context as context_api

    var = getattr(getattr(context_api, "_RUNTIME_CONTEXT", None), "_current_context", None)
    return var if isinstance(var, ContextVar) else None


_KEY = _span_key()
CONTEXT_VAR = _context_var()
get_context: Callable[[], Context] = CONTEXT_VAR.get if CONTEXT_VAR is not None else get_current
"""``opentelemetry.context.get_current``, as the one C call it comes down to when it can."""


def _current_span(context: Context | None = None) -> trace_api.Span:
    found = (context if context is not None else get_context()).get(_KEY)  # type: ignore[arg-type]
    return cast("trace_api.Span", found) if found is not None else _INVALID


current_span: Callable[[Context | None], trace_api.Span] = (
    _current_span if _KEY is not None else trace_api.get_current_span
)
"""The span in a context (None: the current context), else the invalid span: what
``opentelemetry.trace.get_current_span`` answers, with one lookup instead of four calls and
an ABC check (it runs several times per request); the API's own function if this API version
keeps the span under another key."""


def _span_id() -> int:
    span_id = _bits(64)
    while not span_id:
        span_id = _bits(64)
    return span_id


def _trace_id() -> int:
    trace_id = _bits(128)
    while not trace_id:
        trace_id = _bits(128)
    return trace_id


class LeanSpan(trace_api.Span):
    """A sampled span kept in plain objects until the export thread takes it."""

    __slots__ = (
        "_context",
        "_tracer",
        "attributes",
        "end_time",
        "events",
        "kind",
        "links",
        "name",
        "parent",
        "start_time",
        "status",
    )

    def __init__(
        self,
        tracer: LeanTracer,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        kind: SpanKind,
        attributes: dict[str, Any],
    ) -> None:
        self._tracer = tracer
        self._context = context
        self.name = name
        self.parent = parent
        self.kind = kind
        self.attributes = attributes
        # Tuples, empty and shared until something is added: a span waits in the export queue
        # for a while, and every container it holds there is more work for the GC.
        self.events: tuple[tuple[str, Mapping[str, Any] | None, int], ...] = ()
        self.links: tuple[Link, ...] = ()
        self.status = UNSET
        self.end_time: int | None = None
        self.start_time = time_ns()

    def get_span_context(self) -> SpanContext:
        """This span's ids and flags."""
        return self._context

    def set_attribute(self, key: str, value: types.AnyValue) -> None:
        """Set one attribute (ignored once the span ended)."""
        if self.end_time is None:
            self.attributes[key] = value

    def set_attributes(self, attributes: Mapping[str, types.AnyValue]) -> None:
        """Set attributes (ignored once the span ended)."""
        if self.end_time is None:
            self.attributes.update(attributes)

    def add_event(
        self, name: str, attributes: types.Attributes = None, timestamp: int | None = None
    ) -> None:
        """Add an event (its attributes copied; ignored once the span ended)."""
        if self.end_time is None:
            attrs = dict(attributes) if attributes else None
            self.events += ((name, attrs, timestamp or time_ns()),)

    def add_link(self, context: SpanContext, attributes: types.Attributes = None) -> None:
        """Link another span's context (ignored once the span ended)."""
        if self.end_time is None and context.is_valid:
            self.links += (Link(context, attributes),)

    def update_name(self, name: str) -> None:
        """Rename the span."""
        if self.end_time is None:
            self.name = name

    def is_recording(self) -> bool:
        """True until the span ends."""
        return self.end_time is None

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        """Set the status as the SDK does: an OK status is final, UNSET changes nothing."""
        if self.end_time is not None or self.status.status_code is StatusCode.OK:
            return
        if isinstance(status, StatusCode):
            status = Status(status, description)
        if status.status_code is not StatusCode.UNSET:
            self.status = status

    def record_exception(
        self,
        exception: BaseException,
        attributes: types.Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        """An ``exception`` event with the exception's type only: its message and traceback
        may quote user content, which never goes on our spans."""
        attrs: dict[str, Any] = {
            "exception.type": type(exception).__name__,
            "exception.escaped": str(escaped),
        }
        if attributes:
            attrs.update(attributes)
        self.add_event("exception", attrs, timestamp)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        """End the span, marked failed with the exception's type (as ``_tracing.end_span``
        does) when the block raised."""
        if exc_val is not None and self.end_time is None:
            code = getattr(exc_val, "code", None)
            self.attributes["error.type"] = (
                code if isinstance(code, str) else type(exc_val).__name__
            )
            self.set_status(Status(StatusCode.ERROR, type(exc_val).__name__))
        self.end()

    def end(self, end_time: int | None = None) -> None:
        """End the span and queue it for export (a second end does nothing)."""
        if self.end_time is not None:
            return
        self.end_time = end_time or time_ns()
        if self._context.trace_flags & 1:  # sampled (a record-only span is not exported)
            for add in self._tracer.sinks:
                add(self)

    def readable(self) -> ReadableSpan:
        """The SDK's form of this ended span, cleaned and bounded by the span limits (for
        exporters other than OTLP/HTTP; called in the export thread)."""
        from opentelemetry.attributes import BoundedAttributes

        t = self._tracer
        limits = t.limits
        events = [
            Event(
                name,
                BoundedAttributes(
                    limits.max_event_attributes, attrs, max_value_len=limits.max_attribute_length
                ),
                ts,
            )
            for name, attrs, ts in self.events
        ]
        return ReadableSpan(
            name=self.name,
            context=self._context,
            parent=self.parent,
            resource=t.resource,
            attributes=BoundedAttributes(
                limits.max_span_attributes,
                self.attributes,
                max_value_len=limits.max_span_attribute_length,
            ),
            events=BoundedList.from_seq(limits.max_events, events),
            links=BoundedList.from_seq(limits.max_links, self.links),
            kind=self.kind,
            status=self.status,
            start_time=self.start_time,
            end_time=self.end_time,
            instrumentation_scope=t.scope,
        )

    def __repr__(self) -> str:
        return f'LeanSpan(name="{self.name}", context={self._context})'


class LeanTracer:
    """Starts ``LeanSpan``s: the sampler decides first, ended spans go to ``sinks``."""

    def __init__(
        self,
        sampler: Sampler,
        resource: Resource,
        scope: InstrumentationScope,
        sinks: Sequence[Callable[[LeanSpan], None]] = (),
        limits: SpanLimits | None = None,
    ) -> None:
        self.sampler = sampler
        self.resource = resource
        self.scope = scope
        self.sinks = tuple(sinks)
        self.limits = limits or SpanLimits()
        self._decide = fast_decider(sampler)

    def start(
        self,
        name: str,
        kind: str = "internal",
        attributes: Mapping[str, Any] | None = None,
        context: Context | None = None,
        trace_id: int | None = None,
    ) -> trace_api.Span:
        """A started span: a child of the span in ``context`` (default: the current one),
        else a root with ``trace_id`` (default: a random one). Not made current."""
        span_kind = KINDS.get(kind, SpanKind.INTERNAL)
        parent: SpanContext | None = current_span(context).get_span_context()
        if parent is not None and parent.is_valid:
            trace_id = parent.trace_id
        else:
            parent = None
            if not trace_id or trace_id >> 128:
                trace_id = _trace_id()
        decide = self._decide
        if decide is not None:
            sampled = recording = decide(parent, trace_id)
            state = None if parent is None else parent.trace_state
            attrs = dict(attributes) if attributes else {}
        else:
            result = self.sampler.should_sample(context, trace_id, name, span_kind, attributes)
            sampled = result.decision is Decision.RECORD_AND_SAMPLE
            recording = result.decision is not Decision.DROP
            state = result.trace_state
            attrs = dict(result.attributes) if result.attributes else {}
        span_context = SpanContext(
            trace_id,
            _span_id(),
            is_remote=False,
            trace_flags=_SAMPLED if sampled else _NOT_SAMPLED,
            trace_state=state,
        )
        if not recording:
            return NonRecordingSpan(span_context)
        return LeanSpan(self, name, span_context, parent, span_kind, attrs)


def _root_decider(root: Sampler) -> Callable[[int], bool] | None:
    if root is ALWAYS_ON:
        return lambda trace_id: True
    if root is ALWAYS_OFF:
        return lambda trace_id: False
    if type(root) is TraceIdRatioBased:
        bound, limit = root.bound, root.TRACE_ID_LIMIT
        return lambda trace_id: trace_id & limit < bound
    return None


def fast_decider(sampler: Sampler) -> Callable[[SpanContext | None, int], bool] | None:
    """The sampling decision of the samplers ``OTEL_TRACES_SAMPLER`` can name (always on or
    off, trace id ratio, each parent-based with the default delegates) as one small function
    of the parent's context and the trace id: the same decisions, without the sampler's
    context lookups and result object. None for any other sampler (then it is asked)."""
    plain = _root_decider(sampler)
    if plain is not None:
        return lambda parent, trace_id: plain(trace_id)
    root = getattr(sampler, "_root", None)  # ParentBased keeps its root sampler there
    if not isinstance(sampler, ParentBased) or not isinstance(root, Sampler):
        return None
    decide_root = _root_decider(root)
    described = sampler.get_description()  # type: ignore[no-untyped-call]
    if decide_root is None or described != ParentBased(root).get_description():  # type: ignore[no-untyped-call]
        return None  # other delegates than the defaults: ask the sampler

    def parent_based(parent: SpanContext | None, trace_id: int) -> bool:
        if parent is None:
            return decide_root(trace_id)
        return bool(parent.trace_flags & 1)  # sampled parent: on; not sampled: off

    return parent_based
