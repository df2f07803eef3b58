"""Trace context on our MCP client's requests.

A tool call to an MCP server gets a client span ``tools/call {tool}`` (``mcp.method.name``,
``gen_ai.tool.name``) and carries its ``traceparent`` in the request's ``_meta`` — the place the
MCP convention gives it, and the only one a stdio server can read. Requests are written by the
SDK's own tasks, which do not see our span, so for streamable HTTP an ``httpx`` request hook
copies ``_meta.traceparent`` of the JSON-RPC body into the ``traceparent`` HTTP header as well.
Our own MCP server answers ``tools/call`` in a server span that continues the caller's trace.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable
from typing import Any, TypeVar

from elevenfactor.observe import _tracing as tracing

__all__ = ["mcp_attrs", "traced_tool_call", "traceparent_header"]

T = TypeVar("T")

_TRACEPARENT = re.compile(rb'"traceparent"\s*:\s*"(00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2})"')


def mcp_attrs(server: str, tool: str) -> dict[str, Any]:
    """The attributes of a ``tools/call`` client span."""
    return {
        "mcp.method.name": "tools/call",
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": tool,
        "elevenfactor.mcp.server": server,
    }


async def traceparent_header(request: Any) -> None:
    """``httpx`` request hook: send ``_meta.traceparent`` of the body as the header too."""
    if tracing.TRACER is None or "traceparent" in request.headers:
        return
    try:
        body = request.content
    except Exception:  # a streamed body not read yet: nothing to copy
        return
    if b'"traceparent"' not in body:
        return
    found = _TRACEPARENT.search(body)
    if found is not None:
        request.headers["traceparent"] = found.group(1).decode()


async def traced_tool_call(tool: str, request: Any, params: Any, call: Awaitable[T]) -> T:
    """Await ``call`` (our MCP server answering ``tools/call``; just that when tracing is off)
    in a server span, child of the HTTP ``request``'s span (``/mcp``, which continued its
    ``traceparent``) or, over stdio, of the ``traceparent`` in the request's ``_meta``."""
    if tracing.TRACER is None:
        return await call
    parent = None
    scope = getattr(request, "scope", None)
    sp = scope.get("otel_span") if isinstance(scope, dict) else None
    if sp is not None:
        from opentelemetry import trace

        parent = trace.set_span_in_context(sp)
    else:
        meta = getattr(params, "meta", None)
        if meta is not None and not isinstance(meta, dict):
            meta = meta.model_dump() if hasattr(meta, "model_dump") else None
        found = meta.get("traceparent") if isinstance(meta, dict) else None
        parent = tracing.extract(found if isinstance(found, str) else None)
    attrs = {**mcp_attrs("elevenfactor", tool), "elevenfactor.mcp.server": "self"}
    with tracing.span(f"tools/call {tool}", "server", attrs, parent=parent):
        return await call
