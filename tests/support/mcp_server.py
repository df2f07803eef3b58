"""A tiny MCP server on the official SDK's ``MCPServer``, over streamable HTTP or stdio.

``python -m tests.support.mcp_server http PORT`` or ``python -m tests.support.mcp_server stdio``.
Its tools exercise what the client toolsets must handle: arguments, tool errors, slow calls
(which touch a marker file when they start, so a test can wait for "the call is in flight"),
risk annotations, request headers, the ``_meta`` our client sends, and the server's pid.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.types import ToolAnnotations

server = MCPServer("elevenfactor-test", log_level="WARNING")


@server.tool(annotations=ToolAnnotations(read_only_hint=True))
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool(annotations=ToolAnnotations(read_only_hint=True))
def fail(message: str) -> str:
    """Always fails with the given message."""
    raise ValueError(message)


def _mark(marker: str) -> None:
    with Path(marker).open("a") as f:
        f.write(f"{os.getpid()}\n")


@server.tool(annotations=ToolAnnotations(read_only_hint=True))
async def sleep(seconds: float, marker: str | None = None) -> str:
    """Sleep, then answer. Appends a line to the ``marker`` file first, if given."""
    if marker:
        _mark(marker)
    await asyncio.sleep(seconds)
    return f"slept {seconds}"


@server.tool(annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False))
def append_note(text: str) -> str:
    """Append a note (an additive write)."""
    return f"noted: {text}"


@server.tool(annotations=ToolAnnotations(read_only_hint=False, destructive_hint=True))
def delete_everything() -> str:
    """Pretend to delete everything."""
    return "deleted"


@server.tool()
def unannotated() -> str:
    """A tool with no annotations at all."""
    return "ok"


@server.tool(annotations=ToolAnnotations(read_only_hint=True))
def whoami(ctx: Context) -> dict[str, Any]:
    """The request's Authorization header, the server pid and the ``_meta`` the client sent."""
    request = ctx.request_context.request
    headers = getattr(request, "headers", {})
    meta = ctx.request_context.meta or {}
    return {
        "authorization": headers.get("authorization"),
        "pid": os.getpid(),
        "meta": {k: v for k, v in dict(meta).items() if k.startswith("elevenfactor")},
    }


if __name__ == "__main__":
    if sys.argv[1] == "stdio":
        server.run("stdio")
    else:
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
