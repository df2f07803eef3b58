"""One live connection to an MCP server, owned by a background task.

The SDK's ``Client`` holds anyio task groups that must be entered and exited by the same task.
A toolset is called from many tasks (and connects lazily inside whichever calls first), so a
dedicated owner task enters the client, waits until asked to stop, and exits it. Callers only
send requests through the session, which is safe from any task.

The transport's read stream is watched: once it reaches end-of-stream (the server process died,
the HTTP stream failed) the connection is known to be closed, and when. A call that started
after that moment was never delivered and can be retried safely on a new connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any

import anyio
from mcp import Client
from mcp.client import Transport

if TYPE_CHECKING:  # private SDK modules: imported for types only
    from mcp.client._transport import TransportStreams
    from mcp.shared._stream_protocols import ReadStream
    from mcp.shared.message import SessionMessage

__all__ = ["MCPConnection", "WatchedTransport"]

log = logging.getLogger("elevenfactor.tools.mcp")


class _WatchedReadStream:
    """Delegates to the transport's read stream and records when it ends."""

    def __init__(self, inner: ReadStream[SessionMessage | Exception], owner: WatchedTransport):
        self._inner = inner
        self._owner = owner

    @property
    def last_context(self) -> Any:
        return getattr(self._inner, "last_context", None)

    async def receive(self) -> SessionMessage | Exception:
        try:
            return await self._inner.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
            self._owner.mark_closed()
            raise

    async def aclose(self) -> None:
        self._owner.mark_closed()
        await self._inner.aclose()

    def __aiter__(self) -> _WatchedReadStream:
        return self

    async def __anext__(self) -> SessionMessage | Exception:
        try:
            return await self._inner.__anext__()
        except (StopAsyncIteration, anyio.ClosedResourceError, anyio.BrokenResourceError):
            self._owner.mark_closed()
            raise

    async def __aenter__(self) -> _WatchedReadStream:
        await self._inner.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> bool | None:
        self._owner.mark_closed()
        return await self._inner.__aexit__(exc_type, exc_val, exc_tb)


class WatchedTransport:
    """A ``Transport`` that knows when its server stopped answering (``closed_at``)."""

    def __init__(self, inner: Transport) -> None:
        self._inner = inner
        self.closed_at: float | None = None

    def mark_closed(self) -> None:
        if self.closed_at is None:
            self.closed_at = time.monotonic()

    async def __aenter__(self) -> TransportStreams:
        read, write = await self._inner.__aenter__()
        return _WatchedReadStream(read, self), write

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> bool | None:
        self.mark_closed()
        return await self._inner.__aexit__(exc_type, exc_val, exc_tb)


class MCPConnection:
    """A connected ``Client`` whose context lives in its own task."""

    def __init__(self, make_client: Callable[[WatchedTransport], Client], transport: Transport):
        self.transport = WatchedTransport(transport)
        self._client = make_client(self.transport)
        self._ready = asyncio.Event()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.error: BaseException | None = None

    @property
    def client(self) -> Client:
        return self._client

    @property
    def closed(self) -> bool:
        """True once the server stopped answering or the connection was shut down."""
        return (
            self.transport.closed_at is not None
            or self._task is None
            or self._task.done()
            or self._stop.is_set()
        )

    def closed_before(self, moment: float) -> bool:
        """True if the connection was already known closed at ``moment`` (``time.monotonic``)."""
        closed_at = self.transport.closed_at
        return closed_at is not None and closed_at <= moment

    async def open(self, within: float, label: str) -> None:
        """Connect and complete the handshake within ``within`` seconds; raise what failed."""
        task = self._task = asyncio.create_task(self._run(), name=f"mcp-connection:{label}")
        ready = asyncio.create_task(self._ready.wait())
        try:
            await asyncio.wait({ready, task}, timeout=within, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            await self._cancel()
            raise
        finally:
            ready.cancel()
        if self._ready.is_set() and not task.done():
            return
        if not task.done():
            await self._cancel()
            raise TimeoutError(f"no MCP handshake within {within:g} s")
        raise self.error or ConnectionError("the MCP connection ended during the handshake")

    async def _cancel(self) -> None:
        self._stop.set()
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(self._task)

    async def _run(self) -> None:
        try:
            async with self._client:
                self._ready.set()
                await self._stop.wait()
        except Exception as exc:  # surfaced through ``open`` or the next call's error
            self.error = exc
            log.debug("MCP connection ended with %r", exc)
        finally:
            self.transport.mark_closed()

    async def aclose(self) -> None:
        """Shut the connection down (for stdio: close stdin, then terminate the process)."""
        self._stop.set()
        task = self._task
        if task is None or task.done():
            return
        if task.get_loop() is not asyncio.get_running_loop():
            return  # its event loop is gone or elsewhere; the task cannot be awaited from here
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(task)
