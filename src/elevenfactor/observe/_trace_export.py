"""The span processor between our spans and the exporter: bounded, never blocking, counting.

``BoundedBatcher`` is what the SDK's ``BatchSpanProcessor`` is (a queue of ended spans, a
thread that exports them in batches every ``OTEL_BSP_SCHEDULE_DELAY`` ms or when a batch is
full), with the one property we need on top: **nothing is lost silently**. A span that finds
the queue full (``OTEL_BSP_MAX_QUEUE_SIZE``) is dropped and counted; so is every span of a batch
the exporter failed to deliver (a collector that is down, refuses or times out), and every span
still queued when shutdown's bounded wait runs out. The count goes to the Prometheus counter
``elevenfactor_trace_spans_dropped_total`` (``observe._metrics.spans_dropped``) and to
``dropped_spans()``; a warning is logged at most once a minute with the count so far.

Ending a span only appends to a deque (no lock, no I/O): a slow or dead collector costs the
request path nothing. Our own spans (``_trace_spans.LeanSpan``) are queued as they are and
turned into something an exporter takes only in the export thread: OTLP/protobuf bytes written
by ``_trace_otlp`` and posted by the OTLP/HTTP exporter's client, or the SDK's ``ReadableSpan``
for any other exporter (and for a batch the hand encoder does not take). This module imports the
SDK: only ``_tracing.setup_tracing`` imports it.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from elevenfactor.observe._trace_otlp import OTLPEncoder, bytes_sender, encode_all
from elevenfactor.observe._trace_spans import LeanSpan

__all__ = ["BoundedBatcher", "dropped_spans", "make_exporter"]

logger = logging.getLogger("elevenfactor.tracing")

_WARN_EVERY = 60.0  # seconds between two warnings about dropped spans
_dropped = 0  # spans dropped by this process (every batcher)
_lock = threading.Lock()
_forks = [0]  # forks this process went through (the export thread does not survive one)
_fork_hook = [False]


def _forked() -> None:
    _forks[0] += 1


def dropped_spans() -> int:
    """Spans this process dropped so far: queue full, export failed, or left at shutdown."""
    return _dropped


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(float(raw))
    except ValueError:
        from elevenfactor.errors import ConfigError

        raise ConfigError(
            f"{name} is not a number: {raw!r}", key=name, expected="a positive integer"
        ) from None
    if value <= 0:
        from elevenfactor.errors import ConfigError

        raise ConfigError(f"{name} must be positive: {raw!r}", key=name, expected="> 0")
    return value


class BoundedBatcher(SpanProcessor):
    """Queue ended spans (bounded) and export them in batches from one daemon thread.

    Reads ``OTEL_BSP_MAX_QUEUE_SIZE`` (2048), ``OTEL_BSP_SCHEDULE_DELAY`` (5000 ms),
    ``OTEL_BSP_MAX_EXPORT_BATCH_SIZE`` (512) and ``OTEL_BSP_EXPORT_TIMEOUT`` (30000 ms, the
    bound on shutdown's flush) unless given.
    """

    def __init__(
        self,
        exporter: SpanExporter,
        *,
        max_queue_size: int | None = None,
        schedule_delay_ms: int | None = None,
        max_export_batch_size: int | None = None,
        export_timeout_ms: int | None = None,
        on_dropped: Callable[[int], None] | None = None,
        encoder: OTLPEncoder | None = None,
    ) -> None:
        self.exporter = exporter
        self.encoder = encoder
        self._post = bytes_sender(exporter) if encoder is not None else None
        self.max_queue_size = max_queue_size or _env_int("OTEL_BSP_MAX_QUEUE_SIZE", 2048)
        self.schedule_delay = (schedule_delay_ms or _env_int("OTEL_BSP_SCHEDULE_DELAY", 5000)) / 1e3
        self.batch_size = min(
            max_export_batch_size or _env_int("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512),
            self.max_queue_size,
        )
        self.export_timeout = (
            export_timeout_ms or _env_int("OTEL_BSP_EXPORT_TIMEOUT", 30000)
        ) / 1e3
        self.on_dropped = on_dropped
        self.dropped = 0
        self.exported = 0
        self._queue: collections.deque[ReadableSpan | LeanSpan] = collections.deque()
        self._wake = threading.Event()
        self._flush_wanted = False  # set by force_flush: export what is queued, full or not
        self._idle = threading.Event()
        self._idle.set()
        self._shutdown = False
        self._warned_at = 0.0
        if not _fork_hook[0]:
            _fork_hook[0] = True
            os.register_at_fork(after_in_child=_forked)
        self._forks = _forks[0]
        self._thread = self._start()

    def _start(self) -> threading.Thread:
        thread = threading.Thread(
            target=self._worker, name="elevenfactor-trace-export", daemon=True
        )
        thread.start()
        return thread

    # -- the request path -------------------------------------------------------------------

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        """Nothing to do when a span starts."""

    def on_end(self, span: ReadableSpan) -> None:
        """Queue an SDK ``span`` (if sampled), or count it dropped when the queue is full."""
        ctx = span.context
        if ctx is None or not ctx.trace_flags.sampled:
            return
        self.add(span)

    def add(self, span: ReadableSpan | LeanSpan) -> None:
        """Queue an ended, sampled span, or count it dropped when the queue is full."""
        if self._shutdown:
            self._drop(1, "after shutdown")
            return
        if self._forks != _forks[0]:  # a forked child: the thread did not survive the fork
            self._forks = _forks[0]
            self._queue.clear()
            self._thread = self._start()
        queue = self._queue
        if len(queue) >= self.max_queue_size:
            self._drop(1, "queue full")
            return
        queue.append(span)
        if len(queue) >= self.batch_size and not self._wake.is_set():
            self._wake.set()

    # -- the export thread ------------------------------------------------------------------

    def _worker(self) -> None:
        while not self._shutdown:
            woken = self._wake.wait(self.schedule_delay)
            self._wake.clear()
            flush, self._flush_wanted = self._flush_wanted, False
            # Woken by a full batch: export full batches only. Spans that arrive while one is
            # sent wait for the next full batch or the timer, instead of going out a few at a
            # time (one HTTP request each, ~1 ms of CPU whatever its size, under the GIL).
            self._drain(everything=flush or not woken)

    def _drain(self, deadline: float | None = None, *, everything: bool = True) -> None:
        self._idle.clear()
        queue = self._queue
        try:
            while queue and (everything or len(queue) >= self.batch_size):
                if deadline is not None and time.monotonic() >= deadline:
                    return
                batch = [
                    self._queue.popleft() for _ in range(min(self.batch_size, len(self._queue)))
                ]
                self._export(batch)
        finally:
            self._idle.set()

    def _export(self, batch: Sequence[ReadableSpan | LeanSpan]) -> None:
        try:
            ok = self._send(batch)
        except Exception:  # an exporter must not raise; one that does loses its batch
            logger.debug("exporting spans raised", exc_info=True)
            ok = False
        if ok:
            self.exported += len(batch)
        else:
            self._drop(len(batch), "export failed")

    def _send(self, batch: Sequence[ReadableSpan | LeanSpan]) -> bool:
        """Encode and post the batch ourselves when we can, else hand the exporter
        ``ReadableSpan``s; True if it was delivered."""
        if self._post is not None and self.encoder is not None:
            lean = [s for s in batch if isinstance(s, LeanSpan)]
            data = encode_all(self.encoder, lean) if len(lean) == len(batch) else None
            if data is not None:
                return self._post(data)
        spans = [s.readable() if isinstance(s, LeanSpan) else s for s in batch]
        return self.exporter.export(spans) is SpanExportResult.SUCCESS

    def _drop(self, n: int, why: str) -> None:
        global _dropped
        with _lock:
            self.dropped += n
            _dropped += n
        if self.on_dropped is not None:
            try:
                self.on_dropped(n)
            except Exception:  # counting must never break tracing
                logger.debug("counting dropped spans failed", exc_info=True)
        now = time.monotonic()
        if now - self._warned_at >= _WARN_EVERY:
            self._warned_at = now
            logger.warning(
                "trace spans dropped",
                extra={
                    "event": "trace_spans_dropped",
                    "reason": why,
                    "dropped": self.dropped,
                    "queued": len(self._queue),
                },
            )

    # -- lifecycle --------------------------------------------------------------------------

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Export what is queued now, waiting at most ``timeout_millis``; True if all went."""
        deadline = time.monotonic() + timeout_millis / 1e3
        self._flush_wanted = True
        self._wake.set()
        while time.monotonic() < deadline:
            if not self._queue and self._idle.is_set():
                return True
            self._flush_wanted = True
            self._wake.set()
            time.sleep(0.005)
        return not self._queue and self._idle.is_set()

    def shutdown(self, timeout: float | None = None) -> None:
        """Stop accepting spans and export the rest within ``timeout`` seconds (default: the
        export timeout); spans still queued then are counted dropped. Never waits longer."""
        if self._shutdown:
            return
        wait = self.export_timeout if timeout is None else timeout
        deadline = time.monotonic() + wait
        self._shutdown = True
        self._wake.set()
        self._thread.join(max(0.0, deadline - time.monotonic()))
        if not self._thread.is_alive():
            self._drain(deadline)
        left = len(self._queue)
        if left:
            self._queue.clear()
            self._drop(left, "shutdown timed out")
        closer: Any = self.exporter.shutdown
        try:
            closer()
        except Exception:
            logger.debug("closing the span exporter failed", exc_info=True)


def make_exporter(name: str, env: Mapping[str, str]) -> Any:
    """The span exporter ``OTEL_TRACES_EXPORTER`` names (``otlp``: by
    ``OTEL_EXPORTER_OTLP[_TRACES]_PROTOCOL``); ``ConfigError`` for one that cannot work."""
    from elevenfactor.errors import ConfigError

    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if name != "otlp":
        raise ConfigError(
            f"OTEL_TRACES_EXPORTER names an unknown exporter: {name!r}",
            key="OTEL_TRACES_EXPORTER",
            expected="otlp, console or none",
        )
    protocol = (
        env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    if protocol == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # type: ignore[import-not-found,unused-ignore]
                OTLPSpanExporter as GrpcExporter,
            )
        except ImportError:
            raise ConfigError(
                "OTEL_EXPORTER_OTLP_PROTOCOL=grpc needs the gRPC exporter, which is not installed",
                key="OTEL_EXPORTER_OTLP_PROTOCOL",
                expected="http/protobuf (the default), or grpc with the package installed",
                hint="pip install opentelemetry-exporter-otlp-proto-grpc",
            ) from None
        return GrpcExporter()
    raise ConfigError(
        f"unsupported OTLP protocol {protocol!r}",
        key="OTEL_EXPORTER_OTLP_PROTOCOL",
        expected="http/protobuf or grpc",
    )
