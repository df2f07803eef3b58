"""The bounded span processor: nothing blocks, nothing is lost silently."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from prometheus_client import REGISTRY

from elevenfactor.observe._trace_export import BoundedBatcher, dropped_spans

METRIC = "elevenfactor_trace_spans_dropped_total"


class Refusing(SpanExporter):
    """A collector that is down: every export fails."""

    def __init__(self) -> None:
        self.tried = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.tried += len(spans)
        return SpanExportResult.FAILURE


class Stuck(SpanExporter):
    """A collector that never answers (until released)."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.release.wait(30)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self.release.set()


def _ended(batcher: BoundedBatcher, n: int) -> None:
    provider = TracerProvider()
    provider.add_span_processor(batcher)
    tracer = provider.get_tracer("t")
    for i in range(n):
        tracer.start_span(f"s{i}").end()


def _metric() -> float:
    return REGISTRY.get_sample_value(METRIC) or 0.0


def test_spans_a_failed_export_loses_are_counted_and_exported_as_a_metric() -> None:
    counted: list[int] = []
    before = dropped_spans()
    exporter = Refusing()
    batcher = BoundedBatcher(
        exporter, schedule_delay_ms=10, max_queue_size=100, on_dropped=counted.append
    )
    _ended(batcher, 7)
    assert batcher.force_flush(5000)
    batcher.shutdown(1.0)
    assert exporter.tried == 7 and batcher.dropped == 7 and sum(counted) == 7
    assert dropped_spans() - before == 7


def test_the_metric_counts_drops_through_the_metrics_module() -> None:
    from elevenfactor.observe._tracing import _count_dropped

    before = _metric()
    _count_dropped(3)
    assert _metric() - before == 3


def test_a_full_queue_drops_and_counts_instead_of_blocking() -> None:
    exporter = Stuck()
    batcher = BoundedBatcher(
        exporter, schedule_delay_ms=10, max_queue_size=4, max_export_batch_size=2
    )
    _ended(batcher, 2)  # the first batch goes to the stuck exporter
    deadline = time.monotonic() + 5
    while batcher._queue and time.monotonic() < deadline:
        time.sleep(0.01)
    _ended(batcher, 10)  # 4 fit in the queue, 6 are dropped at once
    assert batcher.dropped == 6
    started = time.monotonic()
    batcher.shutdown(0.2)  # bounded: the stuck export does not hold it up
    assert time.monotonic() - started < 5
    assert batcher.dropped == 10  # the 4 still queued are counted too
