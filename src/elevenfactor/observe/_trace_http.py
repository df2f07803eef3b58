"""The server span of an HTTP request (the gateway, the runs API, our MCP endpoint).

Called by ``GatewayApp`` only while tracing is on. The span continues the caller's trace when
the request carries a valid ``traceparent`` (and ``tracestate``); it is current while the app
handles the request, so model calls, budget and guard events, and runs submitted by it nest
under it, and ``trace_id_from`` reads the request's trace id from it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from elevenfactor.observe import _tracing as tracing

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["traced_request"]

SPAN_KEY = "otel_span"  # the request's server span, in the ASGI scope


def _headers(scope: Scope) -> tuple[str | None, str | None]:
    parent = state = None
    for name, value in scope["headers"]:
        if name == b"traceparent":
            parent = value.decode("latin-1")
        elif name == b"tracestate":
            state = value.decode("latin-1")
    return parent, state


async def traced_request(app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
    """Serve the request with ``app`` inside a server span named ``{method} {route}``."""
    method: str = scope["method"]
    path: str = scope["path"]
    parent, state = _headers(scope)
    sp = tracing.start_span(
        method,
        "server",
        {
            "http.request.method": method,
            "url.path": path,
            "url.scheme": scope.get("scheme", "http"),
        },
        parent=tracing.extract(parent, state),
    )
    if sp is None:  # tracing was turned off meanwhile
        await app(scope, receive, send)
        return
    scope[SPAN_KEY] = sp
    if not sp.is_recording():  # not sampled: only its ids matter (logs, the upstream)
        token = tracing.activate(sp)
        try:
            await app(scope, receive, send)
        finally:
            tracing.deactivate(token)
        return
    status: list[int] = []

    async def send_traced(message: Message) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])
        await send(message)

    token = tracing.activate(sp)
    error: BaseException | None = None
    try:
        await app(scope, receive, send_traced)
    except BaseException as exc:
        error = exc
        raise
    finally:
        tracing.deactivate(token)
        route = _route(scope, path)
        sp.update_name(f"{method} {route}")
        attrs: dict[str, Any] = {"http.route": route}
        if status:
            attrs["http.response.status_code"] = status[0]
        sp.set_attributes(attrs)
        if error is None and status and status[0] >= 500:
            from opentelemetry.trace import Status, StatusCode

            sp.set_attribute("error.type", str(status[0]))
            sp.set_status(Status(StatusCode.ERROR))
        tracing.end_span(sp, error)


def _route(scope: Scope, path: str) -> str:
    """The route template (``/v1/runs/{run_id}``), not the path: low cardinality."""
    if path in ("/v1/chat/completions", "/mcp", "/mcp/"):
        return path
    route = scope.get("route")
    template = getattr(route, "path", None)
    return template if isinstance(template, str) else path
