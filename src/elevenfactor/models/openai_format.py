"""Conversion between our typed messages and the OpenAI chat-completions wire format.

Used in both directions: by the OpenAI-compatible provider (we are the client) and by the gateway
(we are the server).
"""

from __future__ import annotations

from typing import Any

import orjson

from elevenfactor.models._messages import (
    AssistantMessage,
    Message,
    ModelSettings,
    Response,
    StreamChunk,
    ToolCall,
    ToolCallDelta,
    ToolMessage,
    Usage,
    UserMessage,
)

__all__ = [
    "ChunkEncoder",
    "chunk_from_openai",
    "chunk_to_openai",
    "message_to_openai",
    "response_from_openai",
    "response_to_openai",
    "settings_to_openai",
    "usage_to_openai",
]

_FINISH = {"stop", "length", "tool_calls", "content_filter"}


def message_to_openai(message: Message) -> dict[str, Any]:
    """One message in OpenAI's shape."""
    if isinstance(message, AssistantMessage):
        out: dict[str, Any] = {"role": "assistant", "content": message.content}
        if message.tool_calls:
            out["tool_calls"] = [
                {
                    "id": tc.id,
                    "type": "function",
                    "function": {"name": tc.name, "arguments": tc.arguments},
                }
                for tc in message.tool_calls
            ]
        return out
    if isinstance(message, ToolMessage):
        return {"role": "tool", "content": message.content, "tool_call_id": message.tool_call_id}
    if isinstance(message, UserMessage) and message.name:
        return {"role": "user", "content": message.content, "name": message.name}
    return {"role": message.role, "content": message.content}


def settings_to_openai(settings: ModelSettings) -> dict[str, Any]:
    """Request parameters in OpenAI's shape (``None`` values left out)."""
    out: dict[str, Any] = {}
    for key in (
        "max_tokens",
        "temperature",
        "top_p",
        "stop",
        "seed",
        "presence_penalty",
        "frequency_penalty",
        "parallel_tool_calls",
        "user",
    ):
        value = getattr(settings, key)
        if value is not None:
            out[key] = value
    if settings.tools:
        out["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": t.name,
                    "description": t.description,
                    "parameters": t.parameters,
                    **({"strict": t.strict} if t.strict is not None else {}),
                },
            }
            for t in settings.tools
        ]
    if settings.tool_choice is not None:
        if settings.tool_choice in ("auto", "none", "required"):
            out["tool_choice"] = settings.tool_choice
        else:
            out["tool_choice"] = {"type": "function", "function": {"name": settings.tool_choice}}
    rf = settings.response_format
    if rf is not None and rf.type != "text":
        if rf.type == "json_object":
            out["response_format"] = {"type": "json_object"}
        else:
            schema: dict[str, Any] = {"name": rf.name or "output", "schema": rf.json_schema or {}}
            if rf.strict is not None:
                schema["strict"] = rf.strict
            out["response_format"] = {"type": "json_schema", "json_schema": schema}
    out.update(settings.extra)
    return out


def _usage(obj: Any) -> Usage:
    if not isinstance(obj, dict):
        return Usage()
    details = obj.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    return Usage(
        input_tokens=int(obj.get("prompt_tokens") or 0),
        output_tokens=int(obj.get("completion_tokens") or 0),
        cached_input_tokens=int(cached or 0),
    )


def usage_to_openai(usage: Usage) -> dict[str, Any]:
    """The ``usage`` object of a chat completion, with the cached prompt tokens."""
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_input_tokens},
    }


def _finish(value: Any) -> Any:
    if value == "function_call":
        return "tool_calls"
    return value if value in _FINISH else "stop"


def response_from_openai(obj: dict[str, Any]) -> Response:
    """Parse a chat-completion body. Raises KeyError/TypeError/ValueError on a bad shape."""
    choice = obj["choices"][0]
    msg = choice["message"]
    calls = [
        ToolCall(
            id=tc.get("id") or f"call_{i}",
            name=tc["function"]["name"],
            arguments=tc["function"].get("arguments") or "{}",
        )
        for i, tc in enumerate(msg.get("tool_calls") or [])
    ]
    return Response(
        message=AssistantMessage(content=msg.get("content"), tool_calls=calls),
        usage=_usage(obj.get("usage")),
        model=str(obj.get("model") or ""),
        finish_reason=_finish(choice.get("finish_reason")),
    )


def chunk_from_openai(obj: dict[str, Any]) -> StreamChunk:
    """Parse one streamed chunk body."""
    choices = obj.get("choices") or []
    usage = _usage(obj["usage"]) if obj.get("usage") else None
    if not choices:
        return StreamChunk(usage=usage, model=obj.get("model"))
    choice = choices[0]
    delta = choice.get("delta") or {}
    if "tool_calls" not in delta:  # the common text chunk: no tool-call list to build
        finish = choice.get("finish_reason")
        text = delta.get("content") or ""
        model = obj.get("model")
        if not isinstance(text, str) or not (model is None or isinstance(model, str)):
            raise ValueError("a chunk's content and model must be strings")
        return StreamChunk(
            text=text,
            finish_reason=_finish(finish) if finish else None,
            usage=usage,
            model=model,
        )
    calls = [
        ToolCallDelta(
            index=int(tc.get("index", i)),
            id=tc.get("id"),
            name=(tc.get("function") or {}).get("name"),
            arguments=(tc.get("function") or {}).get("arguments") or "",
        )
        for i, tc in enumerate(delta.get("tool_calls") or [])
    ]
    finish = choice.get("finish_reason")
    text = delta.get("content") or ""
    model = obj.get("model")
    if not isinstance(text, str) or not (model is None or isinstance(model, str)):
        raise ValueError("a chunk's content and model must be strings")
    # Checked by hand above, so validation cannot fail; plain construction is also the fastest
    # (measured with pydantic 2.14: ~1.1 µs, against ~2.9 µs for model_construct).
    return StreamChunk(
        text=text,
        tool_calls=calls,
        finish_reason=_finish(finish) if finish else None,
        usage=usage,
        model=model,
    )


def response_to_openai(
    response: Response, *, completion_id: str, created: int, model: str
) -> dict[str, Any]:
    """A chat-completion body for a finished response."""
    message: dict[str, Any] = {"role": "assistant", "content": response.message.content}
    if response.message.tool_calls:
        message["tool_calls"] = [
            {
                "id": tc.id,
                "type": "function",
                "function": {"name": tc.name, "arguments": tc.arguments},
            }
            for tc in response.message.tool_calls
        ]
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": response.finish_reason,
            }
        ],
        "usage": usage_to_openai(response.usage),
    }


def chunk_to_openai(
    chunk: StreamChunk, *, completion_id: str, created: int, model: str, first: bool
) -> dict[str, Any]:
    """A ``chat.completion.chunk`` body."""
    return {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "delta": _delta(chunk, first),
                "logprobs": None,
                "finish_reason": chunk.finish_reason,
            }
        ],
    }


_NULL_TAIL = b',"logprobs":null,"finish_reason":null}]}\n\n'


class ChunkEncoder:
    """The SSE events of one stream's chunks, byte for byte ``data: `` + the orjson of
    ``chunk_to_openai`` + a blank line, with the parts that stay the same for the whole stream
    (id, created, model) serialised once rather than for every chunk."""

    __slots__ = ("_head",)

    def __init__(self, *, completion_id: str, created: int, model: str) -> None:
        self._head = (
            b'data: {"id":'
            + orjson.dumps(completion_id)
            + b',"object":"chat.completion.chunk","created":'
            + orjson.dumps(created)
            + b',"model":'
            + orjson.dumps(model)
            + b',"choices":[{"index":0,"delta":'
        )

    def sse(self, chunk: StreamChunk, first: bool) -> bytes:
        """One ``data:`` event for ``chunk`` (``first``: the delta carries the role)."""
        finish = chunk.finish_reason
        if finish is None:
            return self._head + orjson.dumps(_delta(chunk, first)) + _NULL_TAIL
        return (
            self._head
            + orjson.dumps(_delta(chunk, first))
            + b',"logprobs":null,"finish_reason":'
            + orjson.dumps(finish)
            + b"}]}\n\n"
        )


def _delta(chunk: StreamChunk, first: bool) -> dict[str, Any]:
    delta: dict[str, Any] = {}
    if first:
        delta["role"] = "assistant"
    if chunk.text:
        delta["content"] = chunk.text
    if chunk.tool_calls:
        delta["tool_calls"] = [
            {
                "index": tc.index,
                **({"id": tc.id, "type": "function"} if tc.id else {}),
                "function": {**({"name": tc.name} if tc.name else {}), "arguments": tc.arguments},
            }
            for tc in chunk.tool_calls
        ]
    return delta
