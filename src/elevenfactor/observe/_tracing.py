"""OpenTelemetry tracing: setup from the standard ``OTEL_*`` variables and a tiny internal API.

Off by default, and then it costs nothing: tracing is on only when
``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set or
``OTEL_TRACES_EXPORTER`` names an exporter (``otlp``, ``console``), and ``OTEL_SDK_DISABLED`` is
not true. When off the SDK is never imported, ``TRACER`` stays None and every hook in the code
is one ``if`` on it (``span()`` hands back a shared no-op context manager).

When on, ``setup_tracing`` configures it the standard way — the resource from
``OTEL_SERVICE_NAME`` (default ``elevenfactor``) and ``OTEL_RESOURCE_ATTRIBUTES``, the sampler
from ``OTEL_TRACES_SAMPLER(_ARG)``, the span limits from ``OTEL_*_LIMIT``, the OTLP exporter
from ``OTEL_EXPORTER_OTLP_*`` (endpoint, headers, timeout, compression;
``OTEL_EXPORTER_OTLP_PROTOCOL``: ``http/protobuf``, the default, or ``grpc`` with
``opentelemetry-exporter-otlp-proto-grpc`` installed) — with our own bounded batch processor
(``_trace_export.BoundedBatcher``: ``OTEL_BSP_*``; dropped spans are counted, never silent).
Spans are the lean ones of ``_trace_spans`` (the SDK's cost moves off the request path, into
the export thread). ``shutdown_tracing`` flushes within a bounded time: a collector that is
down never holds up a shutdown.

Trace ids agree everywhere: a span started with ``trace_id=`` and no parent gets that id, so
the ``x-trace-id`` header, the call records' ``trace_id``, the log lines and the spans of one
request or run name the same trace.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.trace import Span

    from elevenfactor.observe._trace_export import BoundedBatcher
    from elevenfactor.observe._trace_spans import LeanTracer

__all__ = [
    "CONTENT",
    "TRACER",
    "activate",
    "configured",
    "current_ids",
    "deactivate",
    "dropped_spans",
    "end_span",
    "event",
    "extract",
    "set_attrs",
    "setup_tracing",
    "shutdown_tracing",
    "span",
    "start_span",
    "traceparent",
]

logger = logging.getLogger("elevenfactor.tracing")

TRACER: LeanTracer | None = None
"""The tracer while tracing is on; None when off (the cheap check every hook makes)."""
CONTENT = False
"""Whether prompts and completions go on spans as events (``ELEVENFACTOR_TRACE_CONTENT`` and
``ELEVENFACTOR_RECORD_PAYLOADS`` both on; the stored, guard-redacted form only)."""

_batchers: list[BoundedBatcher] = []
_NOOP: contextlib.nullcontext[None] = contextlib.nullcontext()
_EXPORTERS = ("otlp", "console")
# The API's context functions, bound at setup (no import on every call while on).
_attach: Callable[[Any], object] = lambda ctx: None  # noqa: E731
_detach: Callable[[Any], None] = lambda token: None  # noqa: E731
_in_context: Callable[[Any], Any] = lambda sp: None  # noqa: E731
_current_span: Callable[..., Any] = lambda ctx=None: None  # noqa: E731
_propagator: list[Any] = []  # the W3C trace context propagator, made at setup


def _off(value: str | None) -> bool:
    return (value or "").strip().lower() in ("true", "1", "yes", "on")


def _exporter_names(env: Mapping[str, str]) -> list[str]:
    raw = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if raw:
        return [n.strip() for n in raw.split(",") if n.strip() and n.strip() != "none"]
    if env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        return ["otlp"]
    return []


def configured(env: Mapping[str, str] | None = None) -> bool:
    """Whether the environment turns tracing on (see the module docstring)."""
    env = os.environ if env is None else env
    return not _off(env.get("OTEL_SDK_DISABLED")) and bool(_exporter_names(env))


def dropped_spans() -> int:
    """Spans this process dropped (queue full, export failed, left at shutdown); 0 when off."""
    from sys import modules

    if "elevenfactor.observe._trace_export" not in modules:
        return 0
    from elevenfactor.observe._trace_export import dropped_spans as count

    return count()


def _count_dropped(n: int) -> None:
    try:
        from elevenfactor.observe._metrics import spans_dropped
    except ImportError:  # the metrics module is optional: dropped_spans() still counts
        return
    spans_dropped(n)


def setup_tracing(
    *,
    content: bool | None = None,
    env: Mapping[str, str] | None = None,
    exporters: list[Any] | None = None,
) -> bool:
    """Turn tracing on if the environment asks for it (idempotent); True if this call did.

    ``content`` allows prompts and completions as span events (None: read
    ``ELEVENFACTOR_TRACE_CONTENT`` and ``ELEVENFACTOR_RECORD_PAYLOADS``). ``exporters``
    (span exporters, e.g. the SDK's in-memory one in tests) turn it on whatever the
    environment says. Raises ``ConfigError`` for an exporter or protocol that cannot work.
    The caller that got True calls ``shutdown_tracing`` when it stops.
    """
    global TRACER, CONTENT
    env = os.environ if env is None else env
    if TRACER is not None or (exporters is None and not configured(env)):
        return False
    if exporters is None:
        from elevenfactor.observe._trace_export import make_exporter

        exporters = [make_exporter(n, env) for n in _exporter_names(env)]
    from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope

    from elevenfactor._version import __version__
    from elevenfactor.observe._trace_export import BoundedBatcher
    from elevenfactor.observe._trace_otlp import OTLPEncoder
    from elevenfactor.observe._trace_spans import LeanTracer

    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: "elevenfactor"}))
    if not resource.attributes.get(SERVICE_VERSION):
        resource = resource.merge(Resource({SERVICE_VERSION: __version__}))
    # The provider only reads the sampler from the environment (OTEL_TRACES_SAMPLER[_ARG]).
    sampler = TracerProvider(resource=resource, shutdown_on_exit=False).sampler
    tracer = LeanTracer(sampler, resource, InstrumentationScope("elevenfactor", __version__))
    encoder = OTLPEncoder(tracer)
    batchers = [BoundedBatcher(e, on_dropped=_count_dropped, encoder=encoder) for e in exporters]
    tracer.sinks = tuple(b.add for b in batchers)
    if content is None:
        content = _off(env.get("ELEVENFACTOR_TRACE_CONTENT")) and not _false(
            env.get("ELEVENFACTOR_RECORD_PAYLOADS")
        )
    CONTENT = bool(content)
    _bind_context()
    _batchers[:] = batchers
    TRACER = tracer
    # A malformed or oversized traceparent is ignored (the request starts a new trace); the
    # propagator would log a warning for each one, which any client could use to flood logs.
    logging.getLogger("opentelemetry.trace.propagation.tracecontext").setLevel(logging.ERROR)
    # While a collector is down the OTLP exporter logs every retry and every lost batch; the
    # batcher counts those spans and warns once a minute instead (``trace_spans_dropped``).
    logging.getLogger("opentelemetry.exporter.otlp").setLevel(logging.CRITICAL)
    logger.info(
        "tracing on",
        extra={"event": "tracing_on", "exporters": _exporter_names(env), "content": CONTENT},
    )
    return True


def _bind_context() -> None:
    global _attach, _detach, _in_context, _current_span
    from opentelemetry import context, trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    from elevenfactor.observe._trace_spans import CONTEXT_VAR, current_span

    _attach, _detach = context.attach, context.detach
    if CONTEXT_VAR is not None:  # the API's default runtime context: its variable directly
        _attach, _detach = CONTEXT_VAR.set, _resetter(CONTEXT_VAR)
    _in_context, _current_span = trace.set_span_in_context, current_span
    _propagator[:] = [TraceContextTextMapPropagator()]


def _resetter(var: Any) -> Callable[[Any], None]:
    """``var.reset`` that, like ``opentelemetry.context.detach``, logs instead of raising
    when the token belongs to another context (e.g. a generator closed elsewhere)."""

    def reset(token: Any) -> None:
        try:
            var.reset(token)
        except Exception:
            logger.debug("detaching a trace context failed", exc_info=True)

    return reset


def _false(value: str | None) -> bool:
    return (value or "").strip().lower() in ("false", "0", "no", "off")


def shutdown_tracing(timeout: float = 5.0) -> None:
    """Flush and stop the exporters, waiting ``timeout`` seconds at most (spans still queued
    then are counted dropped); tracing is off afterwards."""
    global TRACER
    TRACER = None
    batchers, _batchers[:] = list(_batchers), []
    for proc in batchers:
        try:
            proc.shutdown(timeout)
        except Exception:
            logger.debug("shutting a span processor down failed", exc_info=True)


# -- the internal API ---------------------------------------------------------------------------


def start_span(
    name: str,
    kind: str = "internal",
    attrs: Mapping[str, Any] | None = None,
    *,
    parent: Context | None = None,
    trace_id: str | None = None,
) -> Span | None:
    """Start a span (not made current; see ``activate``); None when tracing is off.

    ``parent``: an extracted context (else the current span). ``trace_id``: for a span without
    a parent, the trace id to use (32 hex digits) instead of a random one.
    """
    tracer = TRACER
    if tracer is None:
        return None
    wanted = None
    if trace_id is not None:
        with contextlib.suppress(ValueError):
            wanted = int(trace_id, 16)
    return tracer.start(name, kind, attrs, parent, wanted)


def activate(sp: Span) -> object:
    """Make ``sp`` the current span; return the token for ``deactivate``."""
    return _attach(_in_context(sp))


def deactivate(token: object) -> None:
    """Undo ``activate`` (in the same task)."""
    _detach(token)


def end_span(sp: Span | None, error: BaseException | None = None) -> None:
    """End ``sp``, marking it failed with ``error``'s type (and its stable code if it has one)
    — never its message, which may carry user content."""
    if sp is None:
        return
    if error is not None:
        from opentelemetry.trace import Status, StatusCode

        code = getattr(error, "code", None)
        sp.set_attribute("error.type", code if isinstance(code, str) else type(error).__name__)
        sp.set_status(Status(StatusCode.ERROR, type(error).__name__))
    sp.end()


@contextlib.contextmanager
def _span(
    name: str,
    kind: str,
    attrs: Mapping[str, Any] | None,
    parent: Context | None,
    trace_id: str | None,
) -> Iterator[Span]:
    sp = start_span(name, kind, attrs, parent=parent, trace_id=trace_id)
    assert sp is not None
    token = activate(sp)
    try:
        yield sp
    except BaseException as exc:
        deactivate(token)
        token = None
        end_span(sp, None if isinstance(exc, GeneratorExit) else exc)
        raise
    finally:
        if token is not None:
            deactivate(token)
            sp.end()


def span(
    name: str,
    kind: str = "internal",
    attrs: Mapping[str, Any] | None = None,
    *,
    parent: Context | None = None,
    trace_id: str | None = None,
) -> contextlib.AbstractContextManager[Span | None]:
    """A current span for the ``with`` block (ended, and marked failed on an exception);
    yields None, doing nothing, when tracing is off."""
    if TRACER is None:
        return _NOOP
    return _span(name, kind, attrs, parent, trace_id)


def _current() -> Span | None:
    sp: Span = _current_span()
    return sp if sp.get_span_context().is_valid else None


def current_ids() -> tuple[str, str] | None:
    """``(trace_id, span_id)`` in hex of the current span, or None (or tracing off)."""
    if TRACER is None:
        return None
    sp = _current()
    if sp is None:
        return None
    ctx = sp.get_span_context()
    return f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"


def traceparent(sp: Span | None = None) -> str | None:
    """The W3C ``traceparent`` header value of ``sp`` (default: the current span), or None."""
    if TRACER is None:
        return None
    if sp is None:
        sp = _current()
        if sp is None:
            return None
    ctx = sp.get_span_context()
    if not ctx.is_valid:
        return None
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def extract(header: str | None, state: str | None = None) -> Context | None:
    """The parent context a ``traceparent`` (and ``tracestate``) header names; None when
    tracing is off or the header is missing or malformed."""
    if TRACER is None or not header:
        return None
    carrier = {"traceparent": header}
    if state:
        carrier["tracestate"] = state
    ctx = _propagator[0].extract(carrier)
    return ctx if _current_span(ctx).get_span_context().is_valid else None


def set_attrs(attrs: Mapping[str, Any], sp: Span | None = None) -> None:
    """Set ``attrs`` on ``sp`` (default: the current span); nothing when off."""
    if TRACER is None:
        return
    target = sp if sp is not None else _current()
    if target is not None:
        target.set_attributes(attrs)


def event(name: str, attrs: Mapping[str, Any] | None = None, sp: Span | None = None) -> None:
    """Add event ``name`` to ``sp`` (default: the current span); nothing when off."""
    if TRACER is None:
        return
    target = sp if sp is not None else _current()
    if target is not None:
        target.add_event(name, attrs)
