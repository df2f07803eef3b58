"""The lean span recorder and its hand-written OTLP encoding: what the request path records is
what a collector receives, byte for byte what the SDK's own encoder would send; sampling
decisions are the SDK samplers' decisions; a batch the hand encoder does not take goes the
SDK's way; an export that fails is counted, never silent."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace as trace_api
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits
from opentelemetry.sdk.trace import sampling as s
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
)

from elevenfactor.observe import _tracing as tracing
from elevenfactor.observe._trace_export import BoundedBatcher
from elevenfactor.observe._trace_otlp import OTLPEncoder, Unsupported, bytes_sender
from elevenfactor.observe._trace_spans import LeanSpan, LeanTracer, fast_decider
from tests.conftest import free_port

RESOURCE = Resource.create({"service.name": "svc", "deployment.environment": "test", "n": 3})
SCOPE = InstrumentationScope("elevenfactor", "1.2.3")


def tracer(sampler: s.Sampler = s.DEFAULT_ON, limits: SpanLimits | None = None) -> LeanTracer:
    return LeanTracer(sampler, RESOURCE, SCOPE, limits=limits)


def ended(t: LeanTracer, n: int = 1) -> list[LeanSpan]:
    """A request's spans: a server span continuing a remote caller, a client child with every
    kind of value, an event-carrying span that failed."""
    got: list[LeanSpan] = []
    t.sinks = (got.append,)
    caller = SpanContext(
        0x4BF92F3577B34DA6A3CE929D0E0E4736,
        0x00F067AA0BA902B7,
        is_remote=True,
        trace_flags=TraceFlags(1),
        trace_state=TraceState([("vendor", "v1"), ("other", "x")]),
    )
    parent = trace_api.set_span_in_context(NonRecordingSpan(caller))
    for i in range(n):
        server = t.start("POST", "server", {"http.request.method": "POST"}, parent)
        token = otel_context.attach(trace_api.set_span_in_context(server))
        client = t.start("chat m", "client", {"gen_ai.system": "openai", "i": i})
        client.set_attributes(
            {
                "flag": True,
                "off": False,
                "neg": -5,
                "big": (1 << 63) - 1,
                "ratio": 0.25,
                "raw": b"\x00\xff",
                "none": None,
                "reasons": ["stop", "length"],
                "ints": (1, 2, 3),
                "empty": [],
                "text": "é" * 300,  # longer than the cached strings, not ASCII
            }
        )
        client.add_event("gen_ai.content.prompt", {"gen_ai.prompt": "hi", "n": 1})
        client.add_event("bare")
        client.end()
        otel_context.detach(token)
        server.set_status(Status(StatusCode.ERROR, "boom"))
        server.update_name("POST /v1/chat/completions")
        server.end()
        internal = t.start("step", attributes={"a": "b"})
        internal.set_status(StatusCode.OK)
        internal.end()
    return got


def parsed(data: bytes) -> ExportTraceServiceRequest:
    message = ExportTraceServiceRequest()
    message.ParseFromString(data)
    return message


def sdk_bytes(spans: Sequence[LeanSpan]) -> bytes:
    return bytes(encode_spans([sp.readable() for sp in spans]).SerializePartialToString())


def test_the_hand_encoding_is_the_sdks_encoding() -> None:
    t = tracer()
    spans = ended(t, 3)
    ours = OTLPEncoder(t).encode(spans)
    assert ours == sdk_bytes(spans)
    message = parsed(ours)
    [rs] = message.resource_spans
    [ss] = rs.scope_spans
    assert ss.scope.name == "elevenfactor" and ss.scope.version == "1.2.3"
    server, client = ss.spans[1], ss.spans[0]
    assert server.name == "POST /v1/chat/completions" and server.kind == 2
    assert server.trace_state == "vendor=v1,other=x"
    assert server.parent_span_id.hex() == "00f067aa0ba902b7"
    assert server.flags == 0x300  # the parent is remote
    assert server.status.code == 2 and server.status.message == "boom"
    assert client.parent_span_id == server.span_id and client.flags == 0x100
    assert [e.name for e in client.events] == ["gen_ai.content.prompt", "bare"]
    values = {kv.key: kv.value for kv in client.attributes}
    assert values["neg"].int_value == -5 and values["ratio"].double_value == 0.25
    assert [v.string_value for v in values["reasons"].array_value.values] == ["stop", "length"]


def test_the_cache_keeps_true_and_1_apart_and_span_and_event_pairs_apart() -> None:
    t = tracer()
    got: list[LeanSpan] = []
    t.sinks = (got.append,)
    for value in (True, 1, 1.0, "1"):
        sp = t.start("x", attributes={"v": value})
        sp.add_event("e", {"v": value})
        sp.end()
    encoder = OTLPEncoder(t)
    for _ in range(2):  # the second time from the cache
        assert encoder.encode(got) == sdk_bytes(got)


def test_what_the_hand_encoder_does_not_take_goes_the_sdks_way() -> None:
    t = tracer(limits=SpanLimits(max_span_attributes=2))
    [sp] = [t.start("x", attributes={"a": 1, "b": 2, "c": 3})]
    assert isinstance(sp, LeanSpan)
    sp.end()
    with pytest.raises(Unsupported):
        OTLPEncoder(t).encode([sp])
    readable = sp.readable()
    assert dict(readable.attributes or {}) == {"b": 2, "c": 3} and readable.dropped_attributes == 1
    t = tracer()
    for attrs in ({"m": {"k": "v"}}, {"huge": 1 << 64}):
        odd = t.start("x", attributes=attrs)
        assert isinstance(odd, LeanSpan)
        odd.end()
        with pytest.raises(Unsupported):
            OTLPEncoder(t).encode([odd])
        assert encode_spans([odd.readable()]) is not None


class Counting(SpanExporter):
    def __init__(self) -> None:
        self.got: list[ReadableSpan] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.got.extend(spans)
        return SpanExportResult.SUCCESS


def test_the_samplers_decide_as_the_sdks_do() -> None:
    rng = random.Random(7)
    samplers = [
        s.ALWAYS_ON,
        s.ALWAYS_OFF,
        s.DEFAULT_ON,
        s.DEFAULT_OFF,
        s.TraceIdRatioBased(0.3),
        s.ParentBasedTraceIdRatio(0.1),
    ]
    parents: list[SpanContext | None] = [None]
    for remote in (True, False):
        for flags in (0, 1):
            parents.append(SpanContext(rng.getrandbits(128) or 1, 7, remote, TraceFlags(flags)))
    for sampler in samplers:
        decide = fast_decider(sampler)
        assert decide is not None, sampler.get_description()
        for parent in parents:
            ctx = None
            if parent is not None:
                ctx = trace_api.set_span_in_context(NonRecordingSpan(parent))
            for _ in range(200):
                trace_id = parent.trace_id if parent is not None else rng.getrandbits(128) or 1
                decision = sampler.should_sample(ctx, trace_id, "x").decision
                want = decision is s.Decision.RECORD_AND_SAMPLE
                assert decide(parent, trace_id) is want
    # Other delegates than the defaults, or a sampler of one's own: the sampler is asked.
    custom = s.ParentBased(s.ALWAYS_ON, remote_parent_not_sampled=s.ALWAYS_ON)
    assert fast_decider(custom) is None
    t = tracer(custom)
    remote_off = SpanContext(5, 6, True, TraceFlags(0))
    sp = t.start("x", context=trace_api.set_span_in_context(NonRecordingSpan(remote_off)))
    assert isinstance(sp, LeanSpan) and sp.get_span_context().trace_flags.sampled


def test_an_unsampled_span_records_nothing_but_still_propagates(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.5")
    exporter = Counting()
    assert tracing.setup_tracing(exporters=[exporter], content=False)
    try:
        kept = 0
        for _ in range(400):
            with tracing.span("root", trace_id=f"{random.getrandbits(128) | 1:032x}") as sp:
                assert sp is not None
                with tracing.span("child") as child:
                    assert child is not None
                    assert child.is_recording() == sp.is_recording()
                    header = tracing.traceparent(child)
                    assert header is not None
                    assert header.endswith("-01" if sp.is_recording() else "-00")
                kept += sp.is_recording()
        for b in tracing._batchers:
            assert b.force_flush(5000)
    finally:
        tracing.shutdown_tracing(1.0)
    assert 120 < kept < 280  # about half the traces
    assert len(exporter.got) == 2 * kept  # the sampled ones, root and child, nothing else


@pytest.fixture
def closed_exporter() -> Iterator[OTLPSpanExporter]:
    exporter = OTLPSpanExporter(endpoint=f"http://127.0.0.1:{free_port()}/v1/traces", timeout=0.5)
    yield exporter
    exporter.shutdown()  # type: ignore[no-untyped-call]


def test_a_failed_fast_export_is_counted(closed_exporter: OTLPSpanExporter) -> None:
    assert bytes_sender(InMemorySpanExporter()) is None  # other exporters: ReadableSpans
    assert bytes_sender(closed_exporter) is not None
    t = tracer()
    counted: list[int] = []
    batcher = BoundedBatcher(
        closed_exporter, schedule_delay_ms=10, encoder=OTLPEncoder(t), on_dropped=counted.append
    )
    t.sinks = (batcher.add,)
    for _ in range(3):
        t.start("x").end()
    assert batcher.force_flush(10_000)
    batcher.shutdown(1.0)
    assert batcher.dropped == 3 and sum(counted) == 3 and batcher.exported == 0


def test_a_span_used_as_a_context_manager_ends_failed_with_the_error_type_only() -> None:
    t = tracer()
    got: list[LeanSpan] = []
    t.sinks = (got.append,)
    with pytest.raises(ValueError), t.start("x"):
        raise ValueError("the card 4111 1111 1111 1111 was declined")
    [sp] = got
    readable = sp.readable()
    assert readable.status.status_code is StatusCode.ERROR
    assert readable.status.description == "ValueError"
    assert dict(readable.attributes or {}) == {"error.type": "ValueError"}
    assert "4111" not in repr(readable.to_json())
    sp.set_attribute("late", 1)  # ended: ignored
    assert "late" not in sp.attributes and not sp.is_recording()


def test_a_big_batch_encoded_in_slices_is_the_same_request() -> None:
    from elevenfactor.observe._trace_otlp import encode_all

    t = tracer()
    spans = ended(t, 100)  # 300 spans: several slices
    encoder = OTLPEncoder(t)
    assert encode_all(encoder, spans) == encoder.encode(spans) == sdk_bytes(spans)
    odd = t.start("x", attributes={"m": {"k": "v"}})
    assert isinstance(odd, LeanSpan)
    odd.end()
    assert encode_all(encoder, [*spans, odd]) is None  # the generic way
