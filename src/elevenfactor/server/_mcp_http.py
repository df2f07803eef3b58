"""``/mcp`` over streamable HTTP, answered the way the client asked.

A client that accepts ``text/event-stream`` (the official SDKs send ``application/json,
text/event-stream``) gets each answer as a short SSE stream, so the notifications a call makes on
its way — progress from an agent run's journal, log messages — reach it before the result. A
client that accepts only ``application/json`` (or ``*/*``: curl, scripts) gets one plain JSON
body, as before. Both are stateless: every POST stands alone.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from mcp.server.lowlevel.server import Server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from starlette.types import Receive, Scope, Send

__all__ = ["McpHttp", "wants_events"]

_EVENT_TYPES = frozenset({"text/event-stream", "text/*"})


def wants_events(scope: Scope) -> bool:
    """Whether the request's ``Accept`` names the SSE media type (``text/event-stream`` or
    ``text/*``) explicitly — a bare ``*/*`` gets plain JSON."""
    for name, value in scope.get("headers", ()):
        if name == b"accept":
            types = {part.split(";", 1)[0].strip().lower() for part in value.decode().split(",")}
            if types & _EVENT_TYPES:
                return True
    return False


class McpHttp:
    """Two stateless transports over one MCP server: SSE answers and plain JSON answers."""

    def __init__(self, server: Server[Any], security: TransportSecuritySettings) -> None:
        self.security_settings = security
        self._events = StreamableHTTPSessionManager(
            server, stateless=True, json_response=False, security_settings=security
        )
        self._json = StreamableHTTPSessionManager(
            server, stateless=True, json_response=True, security_settings=security
        )

    @asynccontextmanager
    async def run(self) -> AsyncIterator[None]:
        """Run both transports' task groups (once, for the server's lifetime)."""
        async with AsyncExitStack() as stack:
            await stack.enter_async_context(self._events.run())
            await stack.enter_async_context(self._json.run())
            yield

    async def handle_request(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ``/mcp`` request with the transport its ``Accept`` header asks for."""
        manager = self._events if wants_events(scope) else self._json
        await manager.handle_request(scope, receive, send)
