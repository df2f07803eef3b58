"""The lean HTTP/1.1 client of non-streamed upstream calls, against raw loopback servers."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest

from elevenfactor.models.providers._h1 import H1Pool

Handler = Callable[[bytes], list[bytes]]


@asynccontextmanager
async def raw_server(answer: Handler) -> AsyncIterator[tuple[int, list[bytes], list[int]]]:
    """A server that answers each request head+body with ``answer(request)`` (a list of
    writes; an empty write closes the connection). Yields the port, the requests seen and the
    number of connections."""
    seen: list[bytes] = []
    conns = [0]

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conns[0] += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                request = head + await reader.readexactly(length)
                seen.append(request)
                for piece in answer(request):
                    if not piece:
                        writer.close()
                        return
                    writer.write(piece)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield port, seen, conns
    finally:
        server.close()


def _ok(body: bytes, extra: bytes = b"") -> list[bytes]:
    return [b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n" % (len(body), extra) + body]


async def test_posts_with_the_configured_headers_and_reuses_the_connection() -> None:
    async with raw_server(lambda req: _ok(b'{"ok":1}')) as (port, seen, conns):
        pool = H1Pool(f"http://127.0.0.1:{port}/v1", {"Authorization": "Bearer k"})
        for _ in range(3):
            answer = await pool.post("/chat/completions", b'{"a":1}')
            assert (answer.status, answer.body) == (200, b'{"ok":1}')
        pool.close()
    assert conns[0] == 1
    head = seen[0].split(b"\r\n")
    assert head[0] == b"POST /v1/chat/completions HTTP/1.1"
    assert f"Host: 127.0.0.1:{port}".encode() in head
    assert b"Authorization: Bearer k" in head and b"Content-Length: 7" in head
    assert seen[0].endswith(b'{"a":1}')


async def test_reads_chunked_and_close_delimited_answers_and_headers() -> None:
    chunked = [
        b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"5\r\nhello\r\n",
        b"6\r\n world\r\n0\r\n\r\n",
    ]
    async with raw_server(lambda req: chunked) as (port, _, _):
        answer = await H1Pool(f"http://127.0.0.1:{port}", {}).post("/x", b"{}")
    assert (answer.status, answer.body, answer.headers["retry-after"]) == (429, b"hello world", "3")

    close_delimited = [b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", b"whole body", b""]
    async with raw_server(lambda req: close_delimited) as (port, _, conns):
        pool = H1Pool(f"http://127.0.0.1:{port}", {})
        assert (await pool.post("/x", b"{}")).body == b"whole body"
        assert (await pool.post("/x", b"{}")).body == b"whole body"  # on a new connection
    assert conns[0] == 2


async def test_inflates_a_gzip_answer() -> None:
    packed = gzip.compress(b'{"big":true}')
    async with raw_server(lambda req: _ok(packed, b"Content-Encoding: gzip\r\n")) as (port, _, _):
        answer = await H1Pool(f"http://127.0.0.1:{port}", {}).post("/x", b"{}")
    assert answer.body == b'{"big":true}'


async def test_a_connection_dropped_mid_answer_is_an_error_and_not_reused() -> None:
    cut = [b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial", b""]
    async with raw_server(lambda req: cut) as (port, _, conns):
        pool = H1Pool(f"http://127.0.0.1:{port}", {})
        for _ in range(2):
            with pytest.raises(ConnectionError):
                await pool.post("/x", b"{}")
    assert conns[0] == 2


async def test_a_refused_connection_raises_oserror() -> None:
    async with raw_server(lambda req: []) as (port, _, _):
        pass  # closed: nothing listens on the port now
    with pytest.raises(OSError):
        await H1Pool(f"http://127.0.0.1:{port}", {}).post("/x", b"{}")


async def test_a_cancelled_request_closes_its_connection() -> None:
    async with raw_server(lambda req: []) as (port, _, _conns):  # never answers
        pool = H1Pool(f"http://127.0.0.1:{port}", {})
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await pool.post("/x", b"{}")
        assert not pool._idle


def test_refuses_what_is_not_http() -> None:
    with pytest.raises(ValueError, match="not an http"):
        H1Pool("unix:///tmp/sock", {})


async def test_streams_the_body_as_it_arrives_and_reuses_a_finished_connection() -> None:
    pieces = [
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"6\r\ndata: \r\n",
        b"3\r\na\n\n\r\n0\r\n\r\n",
    ]
    async with raw_server(lambda req: pieces) as (port, seen, conns):
        pool = H1Pool(f"http://127.0.0.1:{port}", {})
        for _ in range(2):
            resp = await pool.stream("/x", b"{}", b"Accept: text/event-stream\r\n")
            assert resp.status == 200 and resp.headers["content-type"] == "text/event-stream"
            assert b"".join([p async for p in resp.iter_any()]) == b"data: a\n\n"
            resp.release()
    assert conns[0] == 1
    assert b"Accept: text/event-stream" in seen[0]


async def test_a_stream_cut_short_raises_and_an_abandoned_one_is_not_reused() -> None:
    cut = [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n", b""]
    async with raw_server(lambda req: cut) as (port, _, _):
        resp = await H1Pool(f"http://127.0.0.1:{port}", {}).stream("/x", b"{}")
        with pytest.raises(ConnectionError):
            [p async for p in resp.iter_any()]
        resp.release()

    endless = [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n"]
    async with raw_server(lambda req: endless) as (port, _, conns):
        pool = H1Pool(f"http://127.0.0.1:{port}", {})
        for _ in range(2):
            resp = await pool.stream("/x", b"{}")
            assert await anext(resp.iter_any()) == b"abc"
            resp.release()  # not read to the end: closed, not pooled
        assert not pool._idle
    assert conns[0] == 2
