"""A real OTLP/HTTP trace receiver on loopback, for integration tests.

It accepts ``POST /v1/traces`` with ``application/x-protobuf`` bodies (gzip or deflate when the
exporter compresses), decodes them with the OpenTelemetry protocol's own
``ExportTraceServiceRequest`` and keeps every span for assertions, flattened to ``Span``. It
runs an aiohttp server in a thread of its own, so a test can use it from sync or async code.

    with OTLPReceiver() as rx:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": rx.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "50"}
        ...
        span = rx.wait_for(lambda s: s.name == "POST /v1/chat/completions")
"""

from __future__ import annotations

import asyncio
import gzip
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from tests.conftest import free_port

__all__ = ["OTLPReceiver", "Span"]


@dataclass
class Span:
    """One received span, ids in lower-case hex (``parent_id`` empty for a root)."""

    name: str
    trace_id: str
    span_id: str
    parent_id: str
    kind: int
    attributes: dict[str, Any]
    events: list[tuple[str, dict[str, Any]]]
    service: str
    status_code: int = 0
    resource: dict[str, Any] = field(default_factory=dict)


def _value(v: AnyValue) -> Any:
    which = v.WhichOneof("value")
    if which == "array_value":
        return [_value(x) for x in v.array_value.values]
    if which == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, which) if which else None


def _attrs(kvs: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in kvs}


class OTLPReceiver:
    """The receiver; ``endpoint`` is the base URL for ``OTEL_EXPORTER_OTLP_ENDPOINT``."""

    def __init__(self) -> None:
        self.port = free_port()
        self.spans: list[Span] = []
        self.requests = 0
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:PORT`` (the exporter appends ``/v1/traces``)."""
        return f"http://127.0.0.1:{self.port}"

    async def _traces(self, request: web.Request) -> web.Response:
        body = await request.read()
        encoding = request.headers.get("Content-Encoding", "").lower()
        if encoding == "gzip":
            body = gzip.decompress(body)
        elif encoding == "deflate":
            body = zlib.decompress(body)
        if request.content_type != "application/x-protobuf":
            return web.Response(status=415, text="only application/x-protobuf")
        decoded = ExportTraceServiceRequest()
        decoded.ParseFromString(body)
        got: list[Span] = []
        for rs in decoded.resource_spans:
            resource = _attrs(rs.resource.attributes)
            for ss in rs.scope_spans:
                for s in ss.spans:
                    got.append(
                        Span(
                            name=s.name,
                            trace_id=s.trace_id.hex(),
                            span_id=s.span_id.hex(),
                            parent_id=s.parent_span_id.hex(),
                            kind=s.kind,
                            attributes=_attrs(s.attributes),
                            events=[(e.name, _attrs(e.attributes)) for e in s.events],
                            service=str(resource.get("service.name", "")),
                            status_code=s.status.code,
                            resource=resource,
                        )
                    )
        with self._lock:
            self.requests += 1
            self.spans.extend(got)
        return web.Response(
            body=ExportTraceServiceResponse().SerializeToString(),
            content_type="application/x-protobuf",
        )

    def _serve(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/traces", self._traces)
        self._runner = web.AppRunner(app, access_log=None)
        loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        loop.run_until_complete(site.start())
        self._ready.set()
        loop.run_forever()
        loop.run_until_complete(self._runner.cleanup())
        loop.close()

    def start(self) -> OTLPReceiver:
        """Listen (in a thread) until ``stop``."""
        self._thread = threading.Thread(target=self._serve, name="otlp-receiver", daemon=True)
        self._thread.start()
        assert self._ready.wait(10), "the OTLP receiver did not start"
        return self

    def stop(self) -> None:
        """Stop listening."""
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._thread = None

    def __enter__(self) -> OTLPReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def received(self) -> list[Span]:
        """Every span so far."""
        with self._lock:
            return list(self.spans)

    def wait_for(
        self, match: Callable[[Span], bool], what: str = "a span", timeout: float = 20.0
    ) -> Span:
        """The first received span ``match`` accepts, waiting up to ``timeout`` seconds."""
        found = self.wait_all(match, 1, what, timeout)
        return found[0]

    def wait_all(
        self, match: Callable[[Span], bool], n: int, what: str = "spans", timeout: float = 20.0
    ) -> list[Span]:
        """At least ``n`` received spans ``match`` accepts (all of them), waiting up to
        ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            found = [s for s in self.received() if match(s)]
            if len(found) >= n:
                return found
            if time.monotonic() > deadline:
                names = sorted({s.name for s in self.received()})
                raise AssertionError(f"no {what} within {timeout}s; received: {names}")
            time.sleep(0.02)
