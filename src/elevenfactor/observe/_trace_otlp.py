"""OTLP/protobuf encoding of lean spans, by hand, and the OTLP/HTTP exporter's sending half.

The SDK's OTLP exporter builds a protobuf object for every span, attribute and value, then
serializes them: ~60 µs of CPU per gateway span, spent in the export thread, which holds the
GIL the request path needs. ``OTLPEncoder`` writes the same bytes directly from a batch of
``LeanSpan``s — an ``ExportTraceServiceRequest`` with one resource and one scope, fields in
field-number order as the protobuf runtime writes them — and remembers the encoded form of
the attribute pairs that repeat from span to span (method, route, model, provider...), so a
span costs a few microseconds. The tests decode its output with the protocol's own message
types and compare it with what the SDK's encoder makes of the same spans.

It encodes what OTLP carries for our spans: string, bool, int (64-bit), float, bytes and None
values and sequences of them, events, status, parent, trace state and the remote-parent flags.
A batch holding anything else — a link, a mapping or another type as a value, more attributes or
events than the span limits allow, limits on value lengths — raises ``Unsupported`` and goes
the generic way (``LeanSpan.readable`` and the exporter's own ``export``), which cleans and
bounds it as the SDK would.

``bytes_sender`` hands the encoded request to the SDK's OTLP/HTTP exporter's HTTP client (the
same endpoint, headers, compression, timeout, TLS and retries the exporter was configured with
from ``OTEL_EXPORTER_OTLP_*``), or returns None for any other exporter or an exporter version
without that client, which then gets ``ReadableSpan``s as usual.
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from opentelemetry.trace import SpanKind

from elevenfactor.observe._trace_spans import UNSET, LeanSpan, LeanTracer

__all__ = ["OTLPEncoder", "Unsupported", "bytes_sender", "encode_all"]

_SMALL = [bytes((i,)) for i in range(128)]
_Q = struct.Struct("<Q").pack
_I = struct.Struct("<I").pack
_D = struct.Struct("<d").pack
_INT64 = 1 << 63
_UINT64 = (1 << 64) - 1
_CACHE_MAX = 4096  # encoded attribute pairs kept
_CACHE_STR = 256  # longest string value kept
_REMOTE_FLAGS = {  # SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE (| SPAN_FLAGS_CONTEXT_IS_REMOTE)
    False: b"\x85\x01" + _I(0x100),
    True: b"\x85\x01" + _I(0x300),
}


_IDS = struct.Struct(">BBQQBBQ").pack  # trace_id (field 1) and span_id (field 2)
_PARENT = struct.Struct(">BBQ").pack  # parent_span_id (field 4)
_TIMES = struct.Struct("<BQBQ").pack  # start and end time (fields 7 and 8, fixed64)
_KIND = {kind: b"\x30" + _SMALL[kind.value + 1] for kind in SpanKind}  # OTLP: SDK's + 1
_UNSET_TAIL = {remote: b"\x7a\x00" + flags for remote, flags in _REMOTE_FLAGS.items()}


def _or(limit: int | None, default: int) -> int:
    return default if limit is None else limit


class Unsupported(Exception):
    """Something the hand encoder does not write; the batch takes the generic path."""


def _varint(n: int) -> bytes:
    if n < 0x80:
        return _SMALL[n]
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _ld(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: ``tag``, the payload's length, the payload."""
    n = len(payload)
    return tag + (_SMALL[n] if n < 0x80 else _varint(n)) + payload


def _utf8(text: str) -> bytes:
    try:
        return text.encode()
    except UnicodeEncodeError:  # a lone surrogate: protobuf refuses it too
        raise Unsupported("a string that is not valid UTF-8") from None


def _any(value: Any) -> bytes:
    """The fields of an ``AnyValue`` holding ``value``."""
    t = type(value)
    if t is str:
        return _ld(b"\x0a", _utf8(value))
    if t is bool:
        return b"\x10\x01" if value else b"\x10\x00"
    if t is int:
        if not -_INT64 <= value < _INT64:
            raise Unsupported("an int beyond 64 bits")
        return b"\x18" + _varint(value & _UINT64)
    if t is float:
        return b"\x21" + _D(value)
    if t is bytes:
        return _ld(b"\x3a", value)
    if value is None:
        return b""
    if t is list or t is tuple:
        return _ld(b"\x2a", b"".join([_ld(b"\x0a", _any(v)) for v in value]))
    raise Unsupported(f"a {t.__name__} value")


def _kv(key: str, value: Any) -> bytes:
    """A ``KeyValue``."""
    if type(key) is not str or not key:
        raise Unsupported("an attribute key that is not a non-empty string")
    return _ld(b"\x0a", _utf8(key)) + _ld(b"\x12", _any(value))


def _kvs(tag: bytes, attrs: Mapping[str, Any]) -> list[bytes]:
    return [_ld(tag, _kv(k, v)) for k, v in attrs.items()]


class OTLPEncoder:
    """Encodes batches of one tracer's ``LeanSpan``s as an ``ExportTraceServiceRequest``."""

    def __init__(self, tracer: LeanTracer) -> None:
        self.tracer = tracer
        limits = tracer.limits
        unlimited = 1 << 62
        self.max_attrs = _or(limits.max_span_attributes, unlimited)
        self.max_events = _or(limits.max_events, unlimited)
        self.max_event_attrs = _or(limits.max_event_attributes, unlimited)
        # A length limit truncates values: left to the SDK's cleaning (the generic path).
        self.enabled = (
            limits.max_attribute_length is None and limits.max_span_attribute_length is None
        )
        # Encoded attribute pairs of spans and of events, by value type (True == 1: one dict
        # per type keeps them apart), keyed by the (key, value) pair of ``dict.items()``.
        self._span_cache: dict[type, dict[tuple[str, Any], bytes]] = {str: {}, int: {}, bool: {}}
        self._event_cache: dict[type, dict[tuple[str, Any], bytes]] = {str: {}, bool: {}}
        self._names: dict[str, bytes] = {}  # span name -> its encoded field
        resource, scope = tracer.resource, tracer.scope
        try:
            res = b"".join(_kvs(b"\x0a", resource.attributes))
            sc = _ld(b"\x0a", _utf8(scope.name))
            if scope.version:
                sc += _ld(b"\x12", _utf8(scope.version))
            sc += b"".join(_kvs(b"\x1a", scope.attributes or {}))
        except Unsupported:
            self.enabled = False
            res = sc = b""
        self._resource = _ld(b"\x0a", res)
        schema = resource.schema_url
        self._resource_schema = _ld(b"\x1a", _utf8(schema)) if schema else b""
        self._scope = _ld(b"\x0a", sc)
        self._scope_schema = _ld(b"\x1a", _utf8(scope.schema_url)) if scope.schema_url else b""

    def encode(self, spans: Iterable[LeanSpan]) -> bytes:
        """The serialized request; raises ``Unsupported`` for a batch the SDK must clean."""
        if not self.enabled:
            raise Unsupported("span limits on value lengths")
        return self.request(self.body(spans))

    def body(self, spans: Iterable[LeanSpan]) -> bytes:
        """The ``spans`` fields of a ``ScopeSpans`` (parts of a request's body concatenate)."""
        return b"".join([_ld(b"\x12", self.span(s)) for s in spans])

    def request(self, body: bytes) -> bytes:
        """The request around ``body`` (the spans' fields): our resource and scope."""
        scope_spans = _ld(b"\x12", self._scope + body + self._scope_schema)
        return _ld(b"\x0a", self._resource + scope_spans + self._resource_schema)

    @staticmethod
    def _attrs(
        caches: dict[type, dict[tuple[str, Any], bytes]],
        tag: bytes,
        attrs: Mapping[str, Any],
        parts: list[bytes],
    ) -> None:
        """Append ``attrs`` as ``KeyValue`` fields ``tag`` to ``parts`` (``caches``: their
        encoded form, by value type, for this tag)."""
        for item in attrs.items():
            value = item[1]
            cache = caches.get(type(value))
            if cache is None or (type(value) is str and len(value) > _CACHE_STR):
                parts.append(_ld(tag, _kv(item[0], value)))
                continue
            found = cache.get(item)
            if found is None:
                found = _ld(tag, _kv(item[0], value))
                if len(cache) >= _CACHE_MAX:
                    cache.clear()
                cache[item] = found
            parts.append(found)

    def span(self, s: LeanSpan) -> bytes:
        """One ``Span`` message."""
        if s._tracer is not self.tracer or s.links or s.end_time is None:
            raise Unsupported("a link, an unended span or another tracer's span")
        attrs, events = s.attributes, s.events
        if len(attrs) > self.max_attrs or len(events) > self.max_events:
            raise Unsupported("more attributes or events than the limits allow")
        ctx, parent = s._context, s.parent
        trace_id = ctx.trace_id
        parts = [_IDS(0x0A, 0x10, trace_id >> 64, trace_id & _UINT64, 0x12, 0x08, ctx.span_id)]
        state = ctx.trace_state
        if state:
            parts.append(_ld(b"\x1a", _utf8(",".join([f"{k}={v}" for k, v in state.items()]))))
        if parent is not None:
            parts.append(_PARENT(0x22, 0x08, parent.span_id))
        name = self._names.get(s.name)
        if name is None:
            name = _ld(b"\x2a", _utf8(s.name))
            if len(self._names) >= _CACHE_MAX:
                self._names.clear()
            self._names[s.name] = name
        parts.append(name)
        parts.append(_KIND[s.kind])
        parts.append(_TIMES(0x39, s.start_time, 0x41, s.end_time))
        self._attrs(self._span_cache, b"\x4a", attrs, parts)
        for event_name, event_attrs, ts in events:
            parts.append(_ld(b"\x5a", self._event(event_name, event_attrs, ts)))
        remote = parent is not None and parent.is_remote
        status = s.status
        if status is UNSET:
            parts.append(_UNSET_TAIL[remote])
        else:
            code, description = status.status_code.value, status.description
            st = (_ld(b"\x12", _utf8(description)) if description else b"") + (
                b"\x18" + _SMALL[code] if code else b""
            )
            parts.append(_ld(b"\x7a", st))
            parts.append(_REMOTE_FLAGS[remote])
        return b"".join(parts)

    def _event(self, name: str, attrs: Mapping[str, Any] | None, ts: int) -> bytes:
        parts = [b"\x09" + _Q(ts), _ld(b"\x12", _utf8(name))]
        if attrs:
            if len(attrs) > self.max_event_attrs:
                raise Unsupported("more event attributes than the limits allow")
            self._attrs(self._event_cache, b"\x1a", attrs, parts)
        return b"".join(parts)


def bytes_sender(exporter: Any) -> Callable[[bytes], bool] | None:
    """A function that sends an encoded request the way ``exporter`` (the SDK's OTLP/HTTP span
    exporter) would, True when it was delivered; None for any other exporter, or when the
    exporter's own metrics are on (``OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED``: they count
    what its ``export`` does)."""
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError:  # pragma: no cover - the exporter ships with our dependencies
        return None
    if type(exporter) is not OTLPSpanExporter:
        return None
    if os.environ.get("OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED", "").strip().lower() == "true":
        return None
    send = getattr(getattr(exporter, "_client", None), "export", None)
    limit = getattr(exporter, "_max_request_size", None)
    if send is None or not isinstance(limit, int):
        return None

    def post(data: bytes) -> bool:
        if getattr(exporter, "_shutdown", False):
            return False
        if limit > 0 and len(data) > limit:  # what the exporter refuses too
            return False
        return bool(send(data).success)

    return post


_SLICE = 64  # spans encoded between two chances for the request path to take the GIL


def encode_all(encoder: OTLPEncoder, spans: Sequence[LeanSpan]) -> bytes | None:
    """``encoder.encode(spans)``, or None when the batch must go the generic way.

    Called in the export thread: it encodes ``_SLICE`` spans at a time and lets go of the GIL
    in between (``time.sleep(0)``), so a request that arrives meanwhile waits for one slice
    (~0.3 ms), not for the whole batch (a few ms for 512 spans)."""
    try:
        if len(spans) <= _SLICE:
            return encoder.encode(spans)
        if not encoder.enabled:
            raise Unsupported("span limits on value lengths")
        parts = []
        for i in range(0, len(spans), _SLICE):
            if i:
                time.sleep(0)
            parts.append(encoder.body(spans[i : i + _SLICE]))
        return encoder.request(b"".join(parts))
    except Unsupported:
        return None
