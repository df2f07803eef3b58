"""MCP servers as toolsets, through the official ``mcp`` SDK: stdio and streamable HTTP.

The connection is opened lazily by the first ``list_tools`` or ``call_tool`` and kept until
``aclose()``. A broken connection is replaced once per call:

- if it was already known closed when the call started (the server died between calls), the
  call goes to a fresh connection as if nothing happened;
- if it broke while the call was in flight, the server may or may not have acted. A ``read``
  tool is retried on a fresh connection; any other tool gets an ``is_error`` result with code
  ``tool_connection_lost`` (repeating a write could do it twice), and the next call reconnects.

Each call carries the caller's run id and step key in the request ``_meta``
(``elevenfactor/run_id``, ``elevenfactor/step_key``) so a server can make effects idempotent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Self, TextIO, TypeVar, cast

import httpx2
import mcp.types as mt
from mcp import Client, MCPError, StdioServerParameters, stdio_client
from mcp.client import Transport
from mcp.client.session import IncomingMessage
from mcp.client.streamable_http import streamable_http_client

from elevenfactor._version import __version__
from elevenfactor.errors import ToolError, ToolServerUnavailable
from elevenfactor.observe import _tracing
from elevenfactor.observe._trace_mcp import mcp_attrs, traceparent_header
from elevenfactor.tools._base import Risk, Tool, ToolContext, ToolResult
from elevenfactor.tools._mcp_convert import to_tool, to_tool_result
from elevenfactor.tools._mcp_session import MCPConnection, WatchedTransport
from elevenfactor.tools._timeout import call_with_timeout

__all__ = ["MCPHttpToolset", "MCPStdioToolset", "MCPToolset"]

log = logging.getLogger("elevenfactor.tools.mcp")
_MAX_PAGES = 100
T = TypeVar("T")


class _ConnectionLost(Exception):
    """The connection broke while a request was in flight."""


class MCPToolset:
    """The tools of one MCP server. Subclasses say how to reach it (``_transport``)."""

    def __init__(
        self,
        *,
        name: str,
        timeout: float | None = 60.0,
        connect_timeout: float = 30.0,
        risk: Mapping[str, Risk] | None = None,
        trust_annotations: bool = True,
    ) -> None:
        """``timeout``: seconds per call (``None``: unbounded). ``risk``: risk levels by the
        server's tool name, overriding its annotations. ``trust_annotations=False`` ignores the
        server's ``readOnlyHint``/``destructiveHint``: every tool not in ``risk`` is destructive.
        """
        self.name = name
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.risk_overrides = dict(risk or {})
        self.trust_annotations = trust_annotations
        self._conn: MCPConnection | None = None
        self._lock: asyncio.Lock | None = None
        self._lock_loop: asyncio.AbstractEventLoop | None = None
        self._tools: dict[str, Tool] | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"

    def _transport(self) -> Transport:
        raise NotImplementedError

    @property
    def connected(self) -> bool:
        """True while a live connection is open."""
        return self._conn is not None and not self._conn.closed

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection (for stdio: stop the server process). Safe to call twice; a
        later call connects again."""
        conn, self._conn, self._tools = self._conn, None, None
        if conn is not None:
            await conn.aclose()

    # -- connection ---------------------------------------------------------------------------

    async def _connection(self) -> MCPConnection:
        conn = self._conn
        if conn is not None and not conn.closed:
            return conn
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock_loop is not loop:
            self._lock, self._lock_loop = asyncio.Lock(), loop
        async with self._lock:
            conn = self._conn
            if conn is not None and not conn.closed:
                return conn
            if conn is not None:
                log.info("tools: %r: connection closed; reconnecting", self)
                await self._drop(conn)
            self._conn = await self._connect()
            return self._conn

    async def _connect(self) -> MCPConnection:
        def make_client(transport: WatchedTransport) -> Client:
            return Client(
                transport,
                client_info=mt.Implementation(name="elevenfactor", version=__version__),
                message_handler=self._on_message,
                cache=None,
            )

        conn = MCPConnection(make_client, self._transport())
        try:
            await conn.open(self.connect_timeout, self.name)
        except Exception as exc:
            raise ToolServerUnavailable(
                f"MCP server {self.name!r} could not be reached: {_describe(exc)}",
                hint=self._hint(),
                server=self.name,
            ) from exc
        return conn

    def _hint(self) -> str:
        return "check that the server starts and speaks MCP"

    async def _drop(self, conn: MCPConnection) -> None:
        if self._conn is conn:
            self._conn, self._tools = None, None
        with contextlib.suppress(Exception):
            await conn.aclose()

    async def _on_message(self, message: IncomingMessage) -> None:
        if isinstance(message, mt.ToolListChangedNotification):
            self._tools = None
        elif isinstance(message, Exception):
            log.debug("tools: %r: transport reported %r", self, message)

    async def _request(
        self, op: str, send: Callable[[Client], Awaitable[T]], *, retry_in_flight: bool
    ) -> T:
        """Run ``send(client)`` on the connection, replacing a broken connection once."""
        for attempt in (1, 2):
            conn = await self._connection()
            started = time.monotonic()
            try:
                return await send(conn.client)
            except MCPError as exc:
                if exc.code != mt.CONNECTION_CLOSED:
                    raise
                in_flight = not conn.closed_before(started)
                await self._drop(conn)
                if in_flight and not retry_in_flight:
                    raise _ConnectionLost from exc
                if attempt == 2:
                    raise ToolServerUnavailable(
                        f"MCP server {self.name!r}: the connection broke again right after "
                        f"reconnecting ({op})",
                        hint=self._hint(),
                        server=self.name,
                    ) from exc
                log.info("tools: %r: connection lost during %s; reconnecting once", self, op)
        raise AssertionError("unreachable")  # pragma: no cover

    # -- Toolset ------------------------------------------------------------------------------

    async def list_tools(self, ctx: ToolContext) -> list[Tool]:
        tools = self._tools
        if tools is None:
            try:
                tools = await self._request("tools/list", self._list_all, retry_in_flight=True)
            except MCPError as exc:
                raise ToolError(
                    f"MCP server {self.name!r} could not list its tools: {exc.message}",
                    server=self.name,
                ) from exc
            self._tools = tools
        return list(tools.values())

    async def _list_all(self, client: Client) -> dict[str, Tool]:
        tools: dict[str, Tool] = {}
        cursor: str | None = None
        for _ in range(_MAX_PAGES):
            page = await client.list_tools(cursor=cursor)
            for tool in page.tools:
                tools[tool.name] = to_tool(
                    tool,
                    overrides=self.risk_overrides,
                    trust_annotations=self.trust_annotations,
                    timeout=self.timeout,
                )
            cursor = page.next_cursor
            if cursor is None:
                break
        return tools

    async def call_tool(self, name: str, args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        listed = (self._tools or await self._listing(ctx)).get(name)
        risk = listed.risk if listed else self.risk_overrides.get(name, "destructive")
        meta = {
            k: v
            for k, v in (
                ("elevenfactor/run_id", ctx.run_id),
                ("elevenfactor/step_key", ctx.step_key),
            )
            if v is not None
        }

        async def send(client: Client) -> mt.CallToolResult:
            return await client.call_tool(name, args, meta=cast(Any, meta) or None)

        async def call() -> ToolResult:
            try:
                result = await self._request(
                    f"tools/call {name}", send, retry_in_flight=risk == "read"
                )
            except _ConnectionLost:
                return ToolResult.error(
                    f"The connection to MCP server {self.name!r} broke while {name!r} was "
                    "running; it may or may not have taken effect. Check before retrying.",
                    code="tool_connection_lost",
                )
            except MCPError as exc:
                return ToolResult.error(
                    f"MCP server {self.name!r} rejected the call to {name!r}: {exc.message}",
                    code="tool_server_error",
                )
            return to_tool_result(result)

        if _tracing.TRACER is None:
            return await call_with_timeout(name, self.timeout, call)
        with _tracing.span(f"tools/call {name}", "client", mcp_attrs(self.name, name)) as sp:
            traceparent = _tracing.traceparent(sp)
            if traceparent is not None:  # the MCP convention: trace context in _meta
                meta["traceparent"] = traceparent
            out = await call_with_timeout(name, self.timeout, call)
            if out.is_error and sp is not None:
                sp.set_attribute("error.type", out.error_code or "tool_error")
            return out

    async def _listing(self, ctx: ToolContext) -> dict[str, Tool]:
        return {t.name: t for t in await self.list_tools(ctx)}


class MCPStdioToolset(MCPToolset):
    """An MCP server started as a subprocess, spoken to over its stdin/stdout.

    ``env`` is added to a minimal inherited environment (``HOME``, ``PATH``, ``USER``, ...; the
    SDK's choice: secrets in our environment do not leak to servers unless passed).
    ``stderr`` receives the server's stderr (default: ours).
    """

    def __init__(
        self,
        command: str,
        args: list[str] | tuple[str, ...] = (),
        env: Mapping[str, str] | None = None,
        cwd: str | Path | None = None,
        *,
        name: str | None = None,
        stderr: TextIO | None = None,
        timeout: float | None = 60.0,
        connect_timeout: float = 30.0,
        risk: Mapping[str, Risk] | None = None,
        trust_annotations: bool = True,
    ) -> None:
        super().__init__(
            name=name or " ".join([Path(command).name, *args]),
            timeout=timeout,
            connect_timeout=connect_timeout,
            risk=risk,
            trust_annotations=trust_annotations,
        )
        self.params = StdioServerParameters(
            command=command, args=list(args), env=dict(env) if env else None, cwd=cwd
        )
        self.stderr = stderr

    def _transport(self) -> Transport:
        return stdio_client(self.params, errlog=self.stderr or sys.stderr)

    def _hint(self) -> str:
        return f"check that `{self.params.command}` exists and starts an MCP server on stdio"


class MCPHttpToolset(MCPToolset):
    """An MCP server reached over streamable HTTP at ``url`` (e.g. ``http://host:8000/mcp``).
    ``headers`` go with every request (e.g. ``Authorization``)."""

    def __init__(
        self,
        url: str,
        headers: Mapping[str, str] | None = None,
        *,
        name: str | None = None,
        timeout: float | None = 60.0,
        connect_timeout: float = 30.0,
        risk: Mapping[str, Risk] | None = None,
        trust_annotations: bool = True,
    ) -> None:
        super().__init__(
            name=name or url,
            timeout=timeout,
            connect_timeout=connect_timeout,
            risk=risk,
            trust_annotations=trust_annotations,
        )
        self.url = url
        self.headers = dict(headers or {})

    def _transport(self) -> Transport:
        return _http_transport(self.url, self.headers)

    def _hint(self) -> str:
        return f"check that an MCP server answers streamable HTTP at {self.url}"


@contextlib.asynccontextmanager
async def _http_transport(url: str, headers: dict[str, str]) -> AsyncIterator[Any]:
    timeout = httpx2.Timeout(30.0, read=300.0)  # the SDK's defaults: SSE streams stay open
    async with (
        httpx2.AsyncClient(
            headers=headers, timeout=timeout, event_hooks={"request": [traceparent_header]}
        ) as http,
        streamable_http_client(url, http_client=http) as streams,
    ):
        yield streams


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_describe(e) for e in exc.exceptions)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
