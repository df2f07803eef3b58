"""A fast mock of the OpenAI chat completions endpoint, run as its own process.

Raw asyncio protocol + httptools + uvloop, so a non-streamed answer costs tens of microseconds.
``POST .../chat/completions`` answers a fixed completion; with ``"stream": true`` it sends
``--chunks`` SSE chunks ``--chunk-delay-ms`` apart (the first at once), a usage chunk when
``stream_options.include_usage`` is set, then ``data: [DONE]``. Any GET answers ``{"ok": true}``.

Run: ``python -m bench.gateway.upstream --port 9000 --chunks 20 --chunk-delay-ms 10``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from dataclasses import dataclass

import httptools
import orjson
import uvloop

__all__ = ["MockConfig", "main", "serve"]

_CREATED = 1_700_000_000
_MODEL = "mock-gpt"
_TEXT = "Hello! How can I help you today?"
_USAGE = {"prompt_tokens": 9, "completion_tokens": 9, "total_tokens": 18}


def _completion_bytes() -> bytes:
    return orjson.dumps(
        {
            "id": "chatcmpl-mock",
            "object": "chat.completion",
            "created": _CREATED,
            "model": _MODEL,
            "system_fingerprint": None,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": _TEXT},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": _USAGE,
        }
    )


def _response(status: str, body: bytes, keep_alive: bool) -> bytes:
    conn = b"keep-alive" if keep_alive else b"close"
    return (
        b"HTTP/1.1 " + status.encode() + b"\r\ncontent-type: application/json\r\n"
        b"content-length: "
        + str(len(body)).encode()
        + b"\r\nconnection: "
        + conn
        + b"\r\n\r\n"
        + body
    )


def _sse_chunk(obj: object) -> bytes:
    data = b"data: " + orjson.dumps(obj) + b"\n\n"
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def _stream_chunks(n: int, include_usage: bool) -> list[bytes]:
    """The HTTP chunks of one streamed completion (chunked transfer encoding)."""
    base = {
        "id": "chatcmpl-mock",
        "object": "chat.completion.chunk",
        "created": _CREATED,
        "model": _MODEL,
    }
    out = []
    for i in range(n):
        delta = {"role": "assistant", "content": "tok0"} if i == 0 else {"content": f" tok{i}"}
        out.append(
            _sse_chunk(
                {
                    **base,
                    "choices": [
                        {"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}
                    ],
                }
            )
        )
    out.append(
        _sse_chunk(
            {
                **base,
                "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}],
            }
        )
    )
    if include_usage:
        out.append(
            _sse_chunk(
                {
                    **base,
                    "choices": [],
                    "usage": {"prompt_tokens": 9, "completion_tokens": n, "total_tokens": 9 + n},
                }
            )
        )
    done = b"data: [DONE]\n\n"
    out.append(f"{len(done):x}\r\n".encode() + done + b"\r\n0\r\n\r\n")
    return out


_STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
    b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n"
    b"connection: keep-alive\r\n\r\n"
)


@dataclass(frozen=True, slots=True)
class MockConfig:
    """How the mock streams."""

    chunks: int = 20
    chunk_delay: float = 0.010


class _Conn(asyncio.Protocol):
    """One client connection; requests on it are answered in order."""

    def __init__(self, cfg: MockConfig, completion: bytes, streams: list[list[bytes]]) -> None:
        self.cfg = cfg
        self.completion = completion
        self.streams = streams  # [without usage, with usage]
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.body: list[bytes] = []
        self.streaming: asyncio.Task[None] | None = None
        self.queued: list[tuple[bytes, bytes, bool]] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.streaming is not None:
            self.streaming.cancel()
        self.transport = None

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.write(_response("400 Bad Request", b'{"error":"bad"}', False))
                self.transport.close()

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.url = b""
        self.body = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        method = self.parser.get_method()
        keep_alive = self.parser.should_keep_alive()
        request = (method, b"".join(self.body), keep_alive)
        if self.streaming is not None:  # a pipelined request behind a stream: answer it after
            self.queued.append(request)
            return
        self._answer(*request)

    def _answer(self, method: bytes, body: bytes, keep_alive: bool) -> None:
        tr = self.transport
        if tr is None:
            return
        if method != b"POST":
            tr.write(_response("200 OK", b'{"ok":true}', keep_alive))
        elif not self.url.split(b"?")[0].endswith(b"/chat/completions"):
            tr.write(_response("404 Not Found", b'{"error":"not found"}', keep_alive))
        else:
            try:
                req = orjson.loads(body)
            except orjson.JSONDecodeError:
                req = None
            if not isinstance(req, dict):
                tr.write(_response("400 Bad Request", b'{"error":"bad json"}', keep_alive))
            elif req.get("stream"):
                usage = bool((req.get("stream_options") or {}).get("include_usage"))
                self.streaming = asyncio.get_running_loop().create_task(
                    self._stream(self.streams[usage], keep_alive)
                )
                return
            else:
                tr.write(_response("200 OK", self.completion, keep_alive))
        if not keep_alive:
            tr.close()

    async def _stream(self, chunks: list[bytes], keep_alive: bool) -> None:
        tr = self.transport
        try:
            if tr is None:
                return
            tr.write(_STREAM_HEAD + chunks[0])
            for i, chunk in enumerate(chunks[1:], start=1):
                if i < self.cfg.chunks:
                    await asyncio.sleep(self.cfg.chunk_delay)
                if self.transport is None:
                    return
                tr.write(chunk)
            if not keep_alive:
                tr.close()
        finally:
            self.streaming = None
        while self.queued and self.streaming is None and self.transport is not None:
            self._answer(*self.queued.pop(0))


async def serve(host: str, port: int, cfg: MockConfig) -> None:
    """Serve until SIGINT/SIGTERM."""
    loop = asyncio.get_running_loop()
    completion = _completion_bytes()
    streams = [_stream_chunks(cfg.chunks, False), _stream_chunks(cfg.chunks, True)]
    server = await loop.create_server(
        lambda: _Conn(cfg, completion, streams), host, port, backlog=4096, reuse_address=True
    )
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--chunks", type=int, default=20)
    ap.add_argument("--chunk-delay-ms", type=float, default=10.0)
    args = ap.parse_args(argv)
    cfg = MockConfig(chunks=args.chunks, chunk_delay=args.chunk_delay_ms / 1000)
    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(serve(args.host, args.port, cfg))


if __name__ == "__main__":
    main()
