"""A minimal OTLP/HTTP trace receiver for the benchmark, in its own process.

``POST /v1/traces`` takes ``application/x-protobuf`` bodies (gzip or not), decodes them with
the OpenTelemetry protocol's own message type and counts spans; ``GET /stats`` answers
``{"requests": N, "spans": M, "bad": K}``. It keeps counts only, so a long run stays small.
"""

from __future__ import annotations

import argparse
import gzip
import json

from aiohttp import web

__all__ = ["main"]


def _app() -> web.Application:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
        ExportTraceServiceResponse,
    )

    counts = {"requests": 0, "spans": 0, "bad": 0}
    ok = ExportTraceServiceResponse().SerializeToString()

    async def traces(request: web.Request) -> web.Response:
        body = await request.read()
        if request.headers.get("Content-Encoding", "") == "gzip":
            body = gzip.decompress(body)
        message = ExportTraceServiceRequest()
        try:
            message.ParseFromString(body)
        except Exception:  # a malformed export is counted, not fatal
            counts["bad"] += 1
            return web.Response(status=400)
        counts["requests"] += 1
        counts["spans"] += sum(
            len(scope.spans) for rs in message.resource_spans for scope in rs.scope_spans
        )
        return web.Response(body=ok, content_type="application/x-protobuf")

    async def stats(request: web.Request) -> web.Response:
        return web.Response(text=json.dumps(counts), content_type="application/json")

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/traces", traces)
    app.router.add_get("/stats", stats)
    return app


def main() -> None:
    """Serve on ``--port`` until killed."""
    ap = argparse.ArgumentParser(prog="python -m bench.observe.receiver")
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args()
    web.run_app(_app(), host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
