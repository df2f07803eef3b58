"""A lean HTTP/1.1 client for one upstream: a JSON POST, the answer read whole or streamed.

The gateway's calls are one POST and one answer on a kept-alive connection. aiohttp's general
client spends ~55 µs of CPU on each (request and response objects, payload registry, timers,
header multidicts); this one ~10 µs: the request head is built once per path, the response is
parsed by httptools (the parser uvicorn serves with), connections are pooled. A streamed answer
is handed over as the socket delivers it, with reading paused while the reader lags.

What it does not do: redirects, proxies, cookies (the aiohttp session keeps none either),
pipelining, ``Expect: 100-continue``. It sends no ``Accept-Encoding`` (so the answer comes
uncompressed) but inflates a gzip or deflate answer anyway. A connection is reused only when the
answer was read whole and both sides allow keep-alive; one that errs, is cancelled (a timeout,
the client leaving) or stays idle longer than ``keepalive`` seconds is closed.
"""

from __future__ import annotations

import asyncio
import ssl
import time
import zlib
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import httptools

__all__ = ["H1Pool", "H1Response", "H1Stream"]

_HIGH_WATER = 256 * 1024  # buffered bytes of a streamed answer before reading pauses


class H1Response:
    """Status, headers (lower-case names) and body of an answer."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body


class _Conn(asyncio.Protocol):
    """One connection; at most one request in flight."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[H1Response] | None = None
        self.closed = False
        self.reusable = False
        self.idle_since = 0.0
        self.streaming = False
        self._reset()

    def _reset(self) -> None:
        self._headers: dict[str, str] = {}
        self._name = b""
        self._body: list[bytes] = []
        self._headers_done = False
        # streaming mode
        self.done = False
        self.error: BaseException | None = None
        self.buffered = 0
        self.paused = False
        self.wake: asyncio.Future[None] | None = None

    # asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.waiter is None or (self.waiter.done() and not self.streaming) or self.done:
            self.close()  # nothing was asked: not HTTP we expect
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ConnectionError(f"invalid HTTP answer: {exc}"))
            self.close()

    def eof_received(self) -> bool:
        self.closed = True  # not to be reused, even before connection_lost runs
        return False  # close the transport: connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.reusable = False
        waiter = self.waiter
        if waiter is None:
            return
        if self.streaming and waiter.done():
            if not self.done:
                if self._headers_done and not self._framed():
                    self.done = True  # the body was delimited by the close
                else:
                    self.error = exc or ConnectionError("the upstream closed the stream")
                self._wake()
            return
        if waiter.done():
            return
        if self._headers_done and not self._framed() and not self.streaming:
            self._finish(keep_alive=False)  # the body was delimited by the close
            return
        self._fail(ConnectionError("the upstream closed the connection") if exc is None else exc)

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        if name:
            self._name = name.lower()
            self._headers[self._name.decode("latin-1")] = value.decode("latin-1")
        elif self._name:  # a header value split across reads
            key = self._name.decode("latin-1")
            self._headers[key] += value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self._headers_done = True
        if self.streaming and self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(H1Response(self.parser.get_status_code(), self._headers, b""))

    def on_body(self, body: bytes) -> None:
        self._body.append(body)
        if self.streaming:
            self.buffered += len(body)
            if self.buffered > _HIGH_WATER and not self.paused and self.transport is not None:
                self.paused = True
                self.transport.pause_reading()
            self._wake()

    def on_message_complete(self) -> None:
        if self.streaming:
            self.done = True
            self.reusable = self.parser.should_keep_alive() and not self.closed
            self._wake()
            return
        self._finish(keep_alive=self.parser.should_keep_alive())

    def _wake(self) -> None:
        if self.wake is not None and not self.wake.done():
            self.wake.set_result(None)

    def take(self) -> bytes:
        """The streamed body received so far (emptied), resuming reading if it was paused."""
        data = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        self._body = []
        self.buffered = 0
        if self.paused and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()
        return data

    # helpers
    def _framed(self) -> bool:
        return "content-length" in self._headers or "transfer-encoding" in self._headers

    def _finish(self, *, keep_alive: bool) -> None:
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        encoding = self._headers.get("content-encoding", "").strip().lower()
        if encoding in ("gzip", "deflate"):
            try:
                body = zlib.decompress(body, 47 if encoding == "gzip" else 15)
            except zlib.error as exc:
                self._fail(ConnectionError(f"undecodable {encoding} body: {exc}"))
                return
        self.reusable = keep_alive and not self.closed
        waiter.set_result(H1Response(self.parser.get_status_code(), self._headers, body))

    def _fail(self, exc: BaseException) -> None:
        self.reusable = False
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)
        elif self.streaming and not self.done:
            self.error = exc
            self._wake()

    def start(self, waiter: asyncio.Future[H1Response], *, streaming: bool = False) -> None:
        """Expect a new answer; ``streaming``: resolve ``waiter`` when its head is in."""
        self._reset()
        self.reusable = False
        self.streaming = streaming
        self.waiter = waiter

    def close(self) -> None:
        """Close the connection (idempotent)."""
        self.closed = True
        self.reusable = False
        if self.transport is not None:
            self.transport.close()


class H1Pool:
    """Kept-alive connections to the host of ``base_url``, for the event loop that made it."""

    def __init__(
        self,
        base_url: str,
        headers: dict[str, str],
        *,
        keepalive: float = 30.0,
        max_idle: int = 256,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.tls = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.tls else 80)
        self.prefix = parts.path.rstrip("/")
        default_port = self.port == (443 if self.tls else 80)
        host = f"[{self.host}]" if ":" in self.host else self.host
        host_header = host if default_port else f"{host}:{self.port}"
        lines = [f"Host: {host_header}"]
        lines += [f"{k}: {v}" for k, v in headers.items() if k.lower() != "host"]
        self._header_block = ("\r\n".join(lines) + "\r\n").encode("latin-1")
        self._heads: dict[str, bytes] = {}
        self.keepalive = keepalive
        self.max_idle = max_idle
        self._idle: list[_Conn] = []
        self._ssl: ssl.SSLContext | None = None  # made on the first connection (it reads the CAs)

    def _head(self, path: str) -> bytes:
        head = self._heads.get(path)
        if head is None:
            target = (self.prefix + path) or "/"
            head = self._heads[path] = (
                f"POST {target} HTTP/1.1\r\n".encode("latin-1") + self._header_block
            )
        return head

    async def _connection(self) -> _Conn:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if (
                not conn.closed
                and conn.transport is not None
                and not conn.transport.is_closing()
                and now - conn.idle_since < self.keepalive
            ):
                return conn
            conn.close()
        if self.tls and self._ssl is None:
            self._ssl = ssl.create_default_context()
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(
            _Conn,
            self.host,
            self.port,
            ssl=self._ssl,
            server_hostname=self.host if self.tls else None,
        )
        return conn

    async def _send(
        self, path: str, body: bytes, extra: bytes, *, streaming: bool
    ) -> tuple[_Conn, H1Response]:
        conn = await self._connection()
        waiter: asyncio.Future[H1Response] = asyncio.get_running_loop().create_future()
        conn.start(waiter, streaming=streaming)
        assert conn.transport is not None
        conn.transport.write(
            self._head(path)
            + extra
            + b"Content-Length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
            + body
        )
        try:
            return conn, await waiter
        except BaseException:
            conn.close()  # an error or a cancellation: the connection's state is unknown
            raise

    def _release(self, conn: _Conn) -> None:
        conn.waiter = None
        if conn.reusable and not conn.closed and len(self._idle) < self.max_idle:
            conn.idle_since = time.monotonic()
            self._idle.append(conn)
        else:
            conn.close()

    async def post(self, path: str, body: bytes, extra_headers: bytes = b"") -> H1Response:
        """POST ``body`` to ``path`` (below the base URL) and read the whole answer;
        ``extra_headers`` as for ``stream``.

        Raises ``OSError`` (``ConnectionError`` included) when the connection fails or breaks.
        """
        conn, response = await self._send(path, body, extra_headers, streaming=False)
        self._release(conn)
        return response

    async def stream(self, path: str, body: bytes, extra_headers: bytes = b"") -> H1Stream:
        """POST ``body`` and return once the answer's head is in; read the body from the
        ``H1Stream`` and ``release`` it when done. ``extra_headers``: header lines, each ending
        with CRLF."""
        conn, head = await self._send(path, body, extra_headers, streaming=True)
        return H1Stream(self, conn, head.status, head.headers)

    def close(self) -> None:
        """Close every idle connection."""
        while self._idle:
            self._idle.pop().close()


class H1Stream:
    """A streamed answer: ``status`` and ``headers`` now, the body through ``iter_any`` (the
    pieces as the socket delivers them) or ``read``; ``release`` when done with it."""

    def __init__(self, pool: H1Pool, conn: _Conn, status: int, headers: dict[str, str]) -> None:
        self.pool = pool
        self.conn = conn
        self.status = status
        self.headers = headers
        self._released = False
        encoding = headers.get("content-encoding", "").strip().lower()
        self._inflate = (
            zlib.decompressobj(47 if encoding == "gzip" else 15)
            if encoding in ("gzip", "deflate")
            else None
        )

    async def iter_any(self) -> AsyncIterator[bytes]:
        """The body, piece by piece; raises ``OSError`` if the connection breaks first."""
        conn = self.conn
        loop = asyncio.get_running_loop()
        while True:
            if conn._body:
                data = conn.take()
                if self._inflate is not None:
                    try:
                        data = self._inflate.decompress(data)
                    except zlib.error as exc:
                        raise ConnectionError(f"undecodable stream: {exc}") from None
                if data:
                    yield data
                continue
            if conn.done:
                return
            if conn.error is not None:
                raise conn.error
            conn.wake = loop.create_future()
            await conn.wake

    async def read(self) -> bytes:
        """The whole body."""
        return b"".join([piece async for piece in self.iter_any()])

    def release(self) -> None:
        """Give the connection back (kept if the answer was read whole), or close it."""
        if not self._released:
            self._released = True
            if not self.conn.done:
                self.conn.close()
            self.pool._release(self.conn)
