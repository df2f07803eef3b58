"""An OpenAI-compatible upstream on loopback that records the raw bytes of every request.

Tests assert on what a provider really received (``received``: the request bodies, byte for
byte) and script what it answers, request by request (``script(Reply(...))``; the ``default``
when the script is empty):

- ``Reply()`` echoes the last user message, so placeholders the gateway sent come back;
- ``Reply(text="...")`` answers that text; ``Reply(chunks=[...])`` streams exactly those pieces;
- ``Reply(tool_calls=[("name", '{"a": 1}')])`` asks for tool calls (streamed in pieces: the id
  and name first, then the arguments in two halves).

Plain answers are one JSON body; streams are OpenAI's SSE (a role chunk, content or tool-call
chunks, a finish chunk, a usage chunk when ``stream_options.include_usage`` is set, ``[DONE]``).

    async with RecordingUpstream() as up:
        up.script(Reply(chunks=["Hello ", "there"]))
        ... base_url=up.base_url ...
        assert b"alice@example.com" not in b"".join(up.received)
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

__all__ = ["RecordingUpstream", "Reply"]


@dataclass(frozen=True)
class Reply:
    """What one request gets (see the module docstring)."""

    text: str | None = None
    chunks: Sequence[str] | None = None
    tool_calls: Sequence[tuple[str, str]] = field(default_factory=tuple)

    def content(self, payload: dict[str, Any]) -> str:
        """The answer's text for ``payload``."""
        if self.chunks is not None:
            return "".join(self.chunks)
        if self.text is not None:
            return self.text
        users = [m for m in payload.get("messages", []) if m.get("role") == "user"]
        content = users[-1].get("content") if users else ""
        return content if isinstance(content, str) else json.dumps(content)


class RecordingUpstream:
    """The upstream, on a free loopback port once started."""

    def __init__(self, *, default: Reply | None = None, piece: int = 7) -> None:
        self.default = default or Reply()
        self.piece = piece
        self.received: list[bytes] = []
        self._queue: deque[Reply] = deque()
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    @property
    def base_url(self) -> str:
        """The OpenAI base URL (``http://127.0.0.1:N/v1``)."""
        assert self.port is not None, "the upstream is not started"
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def requests(self) -> int:
        """How many chat-completion requests arrived."""
        return len(self.received)

    def script(self, *replies: Reply) -> None:
        """Answer the next requests with ``replies``, in order."""
        self._queue.extend(replies)

    async def start(self) -> RecordingUpstream:
        """Listen on a free loopback port."""
        from tests.conftest import free_port

        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._chat)
        self.port = free_port()
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, shutdown_timeout=0.5).start()
        return self

    async def stop(self) -> None:
        """Shut down."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> RecordingUpstream:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        self.received.append(raw)
        payload = json.loads(raw)
        reply = self._queue.popleft() if self._queue else self.default
        model = str(payload.get("model") or "")
        if payload.get("stream"):
            return await self._stream(request, reply, payload, model)
        text = reply.content(payload)
        message: dict[str, Any] = {"role": "assistant", "content": text or None}
        if reply.tool_calls:
            message["tool_calls"] = [
                {"id": f"call_{i}", "type": "function", "function": {"name": n, "arguments": a}}
                for i, (n, a) in enumerate(reply.tool_calls)
            ]
        body = {
            "id": "chatcmpl-rec",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "finish_reason": "tool_calls" if reply.tool_calls else "stop",
                }
            ],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
        }
        return web.json_response(body)

    async def _stream(
        self, request: web.Request, reply: Reply, payload: dict[str, Any], model: str
    ) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)

        async def send(
            delta: dict[str, Any] | None, finish: str | None = None, **extra: Any
        ) -> None:
            choices = (
                [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
            )
            chunk = {"id": "chatcmpl-rec", "object": "chat.completion.chunk", "created": 0,
                     "model": model, "choices": choices, **extra}  # fmt: skip
            await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())

        await send({"role": "assistant", "content": ""})
        if reply.chunks is not None:
            pieces = list(reply.chunks)
        else:
            text = reply.content(payload)
            pieces = [text[i : i + self.piece] for i in range(0, len(text), self.piece)]
        for piece in pieces:
            await send({"content": piece})
        for i, (name, args) in enumerate(reply.tool_calls):
            head = {"index": i, "id": f"call_{i}", "type": "function"}
            await send({"tool_calls": [{**head, "function": {"name": name, "arguments": ""}}]})
            half = len(args) // 2
            for part in (args[:half], args[half:]):
                await send({"tool_calls": [{"index": i, "function": {"arguments": part}}]})
        await send({}, "tool_calls" if reply.tool_calls else "stop")
        if (payload.get("stream_options") or {}).get("include_usage"):
            usage = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
            await send(None, usage=usage)
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp
