"""A loopback test double of the Anthropic Messages API wire protocol (``POST /v1/messages``).

It is not Anthropic: it validates requests the way the real API does (headers, required fields,
role alternation, ``tool_use``/``tool_result`` pairing, tool and tool_choice shapes, unknown
fields) and answers with scripted replies, in one piece or as the real server-sent event
sequence (``message_start``, ``content_block_*``, ``ping``, ``message_delta``,
``message_stop``). Error bodies use the real ``{"type": "error", "error": {...}}`` envelope.
"""

from __future__ import annotations

import json
import re
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

__all__ = ["AnthropicUpstream", "ErrorReply", "RawReply", "Reply"]

API_KEY = "sk-ant-test-key"
_TOP_LEVEL = {
    "model",
    "messages",
    "max_tokens",
    "system",
    "metadata",
    "stop_sequences",
    "stream",
    "temperature",
    "top_p",
    "top_k",
    "tools",
    "tool_choice",
    "thinking",
    "service_tier",
}
_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


@dataclass
class Reply:
    """A scripted assistant message: Anthropic content blocks and a stop reason.

    When streamed, ``stream_error`` (an error object such as ``{"type": "overloaded_error",
    "message": "Overloaded"}``) is sent after the first content block instead of the rest, and
    ``truncate`` drops everything after the content blocks (a broken connection).
    """

    content: list[dict[str, Any]]
    stop_reason: str = "end_turn"
    output_tokens: int | None = None
    stream_error: dict[str, Any] | None = None
    truncate: bool = False


@dataclass
class ErrorReply:
    """An HTTP error in the API's envelope, e.g. 429 ``rate_limit_error`` with retry-after."""

    status: int
    type: str
    message: str
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class RawReply:
    """A verbatim body, for malformed-response tests."""

    body: bytes
    status: int = 200
    content_type: str = "application/json"


class _Invalid(Exception):
    def __init__(self, message: str, status: int = 400, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.kind = status, kind


def _error(
    status: int, kind: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    body = {"type": "error", "error": {"type": kind, "message": message}}
    return web.json_response(
        body, status=status, headers={"request-id": "req_test", **(headers or {})}
    )


def _blocks(content: Any, where: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        if not content:
            raise _Invalid(f"{where}: text content blocks must be non-empty")
        return [{"type": "text", "text": content}]
    if not isinstance(content, list) or not content:
        raise _Invalid(f"{where}.content: must be a non-empty string or list of content blocks")
    for i, block in enumerate(content):
        if not isinstance(block, dict) or "type" not in block:
            raise _Invalid(f"{where}.content.{i}: content block must be an object with a type")
        if block["type"] == "text" and not (isinstance(block.get("text"), str) and block["text"]):
            raise _Invalid(f"{where}.content.{i}: text content blocks must be non-empty")
    return content


def validate(headers: Any, body: Any, context_window: int) -> None:
    """Raise ``_Invalid`` for anything the real Messages API would reject."""
    if headers.get("x-api-key") != API_KEY:
        raise _Invalid("invalid x-api-key", 401, "authentication_error")
    if not headers.get("anthropic-version"):
        raise _Invalid("anthropic-version: header is required")
    if not isinstance(body, dict):
        raise _Invalid("request body must be a JSON object")
    extra = sorted(set(body) - _TOP_LEVEL)
    if extra:
        raise _Invalid(f"{extra[0]}: Extra inputs are not permitted")
    for key in ("model", "max_tokens", "messages"):
        if key not in body:
            raise _Invalid(f"{key}: Field required")
    if not isinstance(body["max_tokens"], int) or body["max_tokens"] < 1:
        raise _Invalid("max_tokens: must be a positive integer")
    if "temperature" in body and not 0 <= body["temperature"] <= 1:
        raise _Invalid("temperature: must be between 0 and 1")
    if "system" in body and not isinstance(body["system"], str | list):
        raise _Invalid("system: must be a string or a list of text blocks")
    stops = body.get("stop_sequences", [])
    if not (isinstance(stops, list) and all(isinstance(s, str) and s for s in stops)):
        raise _Invalid("stop_sequences: must be a list of non-empty strings")
    tool_names = _validate_tools(body)
    messages = body["messages"]
    if not isinstance(messages, list) or not messages:
        raise _Invalid("messages: at least one message is required")
    pending: set[str] = set()
    previous = None
    for i, msg in enumerate(messages):
        role = msg.get("role") if isinstance(msg, dict) else None
        if role not in ("user", "assistant"):
            raise _Invalid(f"messages.{i}.role: Input should be 'user' or 'assistant'")
        if role == previous:
            raise _Invalid('messages: roles must alternate between "user" and "assistant"')
        previous = role
        blocks = _blocks(msg.get("content"), f"messages.{i}")
        results = [b for b in blocks if b["type"] == "tool_result"]
        if role == "assistant":
            if results:
                raise _Invalid(f"messages.{i}: tool_result blocks are only allowed in user turns")
            for b in blocks:
                if b["type"] == "tool_use":
                    if not isinstance(b.get("input"), dict) or not b.get("id"):
                        raise _Invalid(f"messages.{i}: tool_use needs an id and an object input")
                    if b.get("name") not in tool_names and tool_names:
                        raise _Invalid(f"messages.{i}: tool_use names an undefined tool")
                    pending.add(b["id"])
            continue
        if any(b["type"] == "tool_use" for b in blocks):
            raise _Invalid(f"messages.{i}: tool_use blocks are only allowed in assistant turns")
        if results and blocks[: len(results)] != results:
            raise _Invalid(f"messages.{i}: tool_result blocks must come first in the content")
        ids = {b.get("tool_use_id") for b in results}
        unknown = ids - pending
        if unknown:
            raise _Invalid(
                f"messages.{i}.content: unexpected `tool_use_id` found in "
                f"`tool_result` blocks: {sorted(map(str, unknown))[0]}. Each "
                "`tool_result` block must have a corresponding `tool_use` block "
                "in the previous message."
            )
        if pending - ids:
            raise _Invalid(
                f"messages.{i}: `tool_use` ids were found without `tool_result` "
                f"blocks immediately after: {sorted(pending - ids)[0]}"
            )
        pending = set()
    tokens = estimate_tokens(body)
    if tokens > context_window:
        raise _Invalid(f"prompt is too long: {tokens} tokens > {context_window} maximum")


def _validate_tools(body: dict[str, Any]) -> set[str]:
    tools = body.get("tools", [])
    names: set[str] = set()
    for i, tool in enumerate(tools):
        if not _TOOL_NAME.match(str(tool.get("name", ""))):
            raise _Invalid(f"tools.{i}.name: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'")
        schema = tool.get("input_schema")
        if not isinstance(schema, dict) or schema.get("type") != "object":
            raise _Invalid(f"tools.{i}.input_schema.type: Input should be 'object'")
        if set(tool) - {"name", "description", "input_schema", "cache_control"}:
            raise _Invalid(f"tools.{i}: Extra inputs are not permitted")
        names.add(tool["name"])
    choice = body.get("tool_choice")
    if choice is not None:
        if not tools:
            raise _Invalid("tool_choice may only be specified while providing tools")
        if choice.get("type") not in ("auto", "any", "tool", "none"):
            raise _Invalid("tool_choice.type: Input should be 'auto', 'any', 'tool' or 'none'")
        if choice["type"] == "tool" and choice.get("name") not in names:
            raise _Invalid(f"tool_choice.name: tool {choice.get('name')!r} not found in tools")
    return names


def estimate_tokens(body: dict[str, Any]) -> int:
    """A rough token count of the prompt: four characters a token."""
    return max(1, len(json.dumps([body.get("system"), body["messages"], body.get("tools")])) // 4)


class AnthropicUpstream:
    """The test double. Script replies with ``script()``; inspect ``requests`` afterwards."""

    def __init__(self, *, context_window: int = 4000, model: str = "claude-test-1") -> None:
        self.context_window = context_window
        self.model = model
        self.replies: deque[Reply | ErrorReply | RawReply] = deque()
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self._runner: web.AppRunner | None = None
        self.url = ""

    def script(self, *replies: Reply | ErrorReply | RawReply) -> None:
        """Queue replies, answered in order; with an empty queue the last user text is echoed."""
        self.replies.extend(replies)

    @property
    def last(self) -> dict[str, Any]:
        """The last request body received."""
        return self.requests[-1]

    async def start(self, port: int) -> None:
        """Listen on ``127.0.0.1:port``."""
        app = web.Application()
        app.router.add_post("/v1/messages", self._messages)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}"

    async def close(self) -> None:
        """Stop listening."""
        if self._runner is not None:
            await self._runner.cleanup()

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        if request.content_type != "application/json":
            return _error(400, "invalid_request_error", "content-type must be application/json")
        try:
            body = json.loads(await request.read())
        except ValueError:
            return _error(400, "invalid_request_error", "request body is not valid JSON")
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        try:
            validate(request.headers, body, self.context_window)
        except _Invalid as exc:
            return _error(exc.status, exc.kind, str(exc))
        reply = self.replies.popleft() if self.replies else self._echo(body)
        if isinstance(reply, ErrorReply):
            return _error(reply.status, reply.type, reply.message, reply.headers)
        if isinstance(reply, RawReply):
            return web.Response(
                body=reply.body, status=reply.status, content_type=reply.content_type
            )
        message = self._message(body, reply)
        if body.get("stream"):
            return await self._stream(request, message, reply)
        return web.json_response(message, headers={"request-id": "req_test"})

    def _echo(self, body: dict[str, Any]) -> Reply:
        last = body["messages"][-1]["content"]
        texts = (
            [last] if isinstance(last, str) else [b["text"] for b in last if b["type"] == "text"]
        )
        return Reply([{"type": "text", "text": " ".join(texts) or "ok"}])

    def _message(self, body: dict[str, Any], reply: Reply) -> dict[str, Any]:
        words = sum(len(json.dumps(b).split()) for b in reply.content)
        return {
            "id": f"msg_{len(self.requests):04d}",
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": reply.content,
            "stop_reason": reply.stop_reason,
            "stop_sequence": None,
            "usage": {
                "input_tokens": estimate_tokens(body),
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
                "output_tokens": reply.output_tokens or words,
            },
        }

    async def _stream(
        self, request: web.Request, message: dict[str, Any], reply: Reply
    ) -> web.StreamResponse:
        resp = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "request-id": "req_test",
            }
        )
        await resp.prepare(request)

        async def send(event: dict[str, Any]) -> None:
            await resp.write(f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode())

        start = {
            **message,
            "content": [],
            "stop_reason": None,
            "usage": {**message["usage"], "output_tokens": 1},
        }
        await send({"type": "message_start", "message": start})
        await send({"type": "ping"})
        for index, block in enumerate(message["content"]):
            if index == 1 and reply.stream_error is not None:
                await send({"type": "error", "error": reply.stream_error})
                return resp
            for event in _block_events(index, block):
                await send(event)
        if reply.stream_error is not None and len(message["content"]) < 2:
            await send({"type": "error", "error": reply.stream_error})
            return resp
        if reply.truncate:
            return resp
        await send(
            {
                "type": "message_delta",
                "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                "usage": {"output_tokens": message["usage"]["output_tokens"]},
            }
        )
        await send({"type": "message_stop"})
        return resp


def _pieces(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def _block_events(index: int, block: dict[str, Any]) -> list[dict[str, Any]]:
    """The content_block_start/delta/stop events of one block, split as the real API does."""
    if block["type"] == "text":
        deltas = [{"type": "text_delta", "text": p} for p in _pieces(block["text"], 5)]
        start = {"type": "text", "text": ""}
    else:
        raw = json.dumps(block["input"]) if block["input"] else ""
        deltas = [{"type": "input_json_delta", "partial_json": p} for p in ["", *_pieces(raw, 7)]]
        start = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
    return [
        {"type": "content_block_start", "index": index, "content_block": start},
        *({"type": "content_block_delta", "index": index, "delta": d} for d in deltas),
        {"type": "content_block_stop", "index": index},
    ]
