"""Parsing OpenAI chat-completion requests into typed messages and settings, with clear errors.

Errors name the parameter (``messages[2].content``) the way OpenAI's do, and use stable codes.
``session_id`` is our one extension of the body (``extra_body={"session_id": ...}`` with the
``openai`` client): the session the request continues, like the ``x-elevenfactor-session``
header.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError

from elevenfactor.errors import RequestError
from elevenfactor.governance import check_id
from elevenfactor.models import (
    AssistantMessage,
    CacheRequest,
    Message,
    ModelSettings,
    ResponseFormat,
    SystemMessage,
    ToolCall,
    ToolDefinition,
    ToolMessage,
    UserMessage,
)
from elevenfactor.server._json_schema import check_schema

__all__ = ["ChatRequest", "parse_chat_request"]

#: Accepted and ignored: they change nothing we serve, and clients send them routinely.
_IGNORED = {
    "service_tier",
    "store",
    "metadata",
    "modalities",
    "prediction",
    "reasoning_effort",
    "audio",
    "web_search_options",
    "safety_identifier",
    "prompt_cache_key",
    "verbosity",
}
_SCALARS = {
    "temperature": (int, float),
    "top_p": (int, float),
    "seed": (int,),
    "presence_penalty": (int, float),
    "frequency_penalty": (int, float),
    "max_tokens": (int,),
    "max_completion_tokens": (int,),
    "user": (str,),
    "parallel_tool_calls": (bool,),
    "n": (int,),
    "logprobs": (bool,),
    "top_logprobs": (int,),
}
#: Inclusive bounds of numeric parameters (``None``: unbounded on that side).
_BOUNDS: dict[str, tuple[float | None, float | None]] = {
    "temperature": (0, 2),
    "top_p": (0, 1),
    "presence_penalty": (-2, 2),
    "frequency_penalty": (-2, 2),
    "max_tokens": (1, None),
    "max_completion_tokens": (1, None),
    "n": (1, None),
    "top_logprobs": (0, 20),
}
_KNOWN = {
    "model",
    "messages",
    "stream",
    "stream_options",
    "tools",
    "tool_choice",
    "response_format",
    "stop",
    "functions",
    "function_call",
    "logit_bias",
    "cache",
    "session_id",
    *_SCALARS,
    *_IGNORED,
}


@dataclass(slots=True)
class ChatRequest:
    """A parsed chat-completion request."""

    model: str
    messages: list[Message]
    settings: ModelSettings
    stream: bool
    include_usage: bool
    session_id: str | None = None
    """The session the request continues (the body's ``session_id``; the header is read by the
    endpoint)."""


def _fail(message: str, param: str, code: str = "invalid_request") -> RequestError:
    return RequestError(message, code=code, param=param)


def _text(content: Any, param: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for i, part in enumerate(content):
            if (
                not isinstance(part, dict)
                or part.get("type") != "text"
                or not isinstance(part.get("text"), str)
            ):
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise _fail(
                    f"unsupported content part type {kind!r}; only 'text' parts are supported",
                    f"{param}[{i}]",
                    "unsupported_content",
                )
            parts.append(part["text"])
        return "".join(parts)
    raise _fail("expected a string or a list of text parts", param, "invalid_type")


def _message(raw: Any, i: int) -> Message:
    param = f"messages[{i}]"
    if not isinstance(raw, dict):
        raise _fail("expected an object", param, "invalid_type")
    role = raw.get("role")
    content = raw.get("content")
    if role in ("system", "developer"):
        return SystemMessage(content=_text(content, f"{param}.content"))
    if role == "user":
        name = raw.get("name")
        return UserMessage(
            content=_text(content, f"{param}.content"), name=name if isinstance(name, str) else None
        )
    if role == "assistant":
        calls = []
        raw_calls = raw.get("tool_calls") or []
        if not isinstance(raw_calls, list):
            raise _fail("expected a list of tool calls", f"{param}.tool_calls", "invalid_type")
        for j, tc in enumerate(raw_calls):
            fn = tc.get("function") if isinstance(tc, dict) else None
            if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                raise _fail(
                    "expected {id, type: function, function: {name, arguments}}",
                    f"{param}.tool_calls[{j}]",
                    "invalid_type",
                )
            calls.append(
                ToolCall(
                    id=str(tc.get("id") or f"call_{j}"),
                    name=fn["name"],
                    arguments=str(fn.get("arguments") or "{}"),
                )
            )
        text = None if content is None else _text(content, f"{param}.content")
        return AssistantMessage(content=text, tool_calls=calls)
    if role == "tool":
        call_id = raw.get("tool_call_id")
        if not isinstance(call_id, str):
            raise _fail(
                "a tool message needs 'tool_call_id'",
                f"{param}.tool_call_id",
                "missing_required_parameter",
            )
        return ToolMessage(content=_text(content, f"{param}.content"), tool_call_id=call_id)
    raise _fail(
        f"unknown role {role!r}; expected system, developer, user, assistant or tool",
        f"{param}.role",
        "invalid_value",
    )


def _tools(raw: Any, key: str = "tools") -> list[ToolDefinition]:
    if not isinstance(raw, list):
        raise _fail(f"expected a list of {key}", key, "invalid_type")
    out = []
    for i, t in enumerate(raw):
        if key == "functions":  # the legacy form: the function definitions themselves
            fn, where = t, f"functions[{i}]"
        else:
            fn = t.get("function") if isinstance(t, dict) and t.get("type") == "function" else None
            where = f"tools[{i}].function"
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise _fail(
                "expected {name, description, parameters}"
                if key == "functions"
                else "expected {type: function, function: {name, parameters}}",
                where if key == "functions" else f"tools[{i}]",
                "invalid_type",
            )
        params = fn.get("parameters")
        if params is not None:
            check_schema(params, f"{where}.parameters")
        try:
            out.append(
                ToolDefinition(
                    name=fn["name"],
                    description=fn.get("description") or "",
                    parameters=params or {"type": "object", "properties": {}},
                    strict=fn.get("strict"),
                )
            )
        except ValidationError as exc:
            raise _fail(exc.errors()[0]["msg"], where, "invalid_type") from None
    return out


def _tool_choice(raw: Any, tools: list[ToolDefinition], key: str = "tool_choice") -> str | None:
    if raw is None or raw in ("auto", "none"):
        return raw  # type: ignore[no-any-return]
    if not tools and (raw == "required" or isinstance(raw, dict)):
        raise _fail("asks for a tool call, but the request has no tools", key, "invalid_value")
    if raw == "required":
        return "required"
    fn = raw.get("function") if isinstance(raw, dict) else None
    name = fn.get("name") if isinstance(fn, dict) else None
    if not isinstance(name, str):
        raise _fail(
            "expected 'auto', 'none', 'required' or {type: function, function: {name}}",
            key,
            "invalid_value",
        )
    names = [t.name for t in tools]
    if name not in names:
        raise _fail(f"names {name!r}, which is not among the tools {names}", key, "invalid_value")
    return name


def _response_format(raw: Any) -> ResponseFormat | None:
    if raw is None:
        return None
    kind = raw.get("type") if isinstance(raw, dict) else None
    if kind in ("text", "json_object"):
        return ResponseFormat(type=kind)
    if kind == "json_schema":
        spec = raw.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("schema", {}), dict):
            raise _fail(
                "expected json_schema: {name, schema}",
                "response_format.json_schema",
                "invalid_type",
            )
        schema = spec.get("schema")
        if schema is not None:
            check_schema(schema, "response_format.json_schema.schema")
        return ResponseFormat(
            type="json_schema",
            name=spec.get("name"),
            json_schema=schema or {},
            strict=spec.get("strict"),
        )
    raise _fail(
        "expected type 'text', 'json_object' or 'json_schema'",
        "response_format.type",
        "invalid_value",
    )


def _cache(raw: Any) -> CacheRequest | Literal[False] | None:
    """The response-cache parameter: ``{"ttl": seconds}`` asks for it, ``false`` bypasses it."""
    if raw is None:
        return None
    if raw is False:
        return False
    if raw is True:
        return CacheRequest()
    if not isinstance(raw, dict):
        raise _fail('expected {"ttl": seconds}, true or false', "cache", "invalid_type")
    unknown = sorted(set(raw) - {"ttl"})
    if unknown:
        raise _fail(f"unknown key {unknown[0]!r}; expected only 'ttl'", "cache", "invalid_value")
    ttl = raw.get("ttl")
    if ttl is not None and (not isinstance(ttl, int) or isinstance(ttl, bool)):
        raise _fail(f"expected an integer, got {type(ttl).__name__}", "cache.ttl", "invalid_type")
    if ttl is not None and not 0 < ttl <= 30 * 86400:
        raise _fail(
            f"must be between 1 and 2592000 seconds (30 days), got {ttl}",
            "cache.ttl",
            "invalid_value",
        )
    return CacheRequest(ttl=ttl)


def _unsupported(message: str, param: str) -> RequestError:
    return _fail(message, param, "unsupported_parameter")


def _check_scalars(body: dict[str, Any]) -> None:
    for key, types in _SCALARS.items():
        value = body.get(key)
        if value is not None and (
            not isinstance(value, types) or (bool not in types and isinstance(value, bool))
        ):
            names = " or ".join(t.__name__ for t in types)
            raise _fail(f"expected {names}, got {type(value).__name__}", key, "invalid_type")
    for key, (lo, hi) in _BOUNDS.items():
        value = body.get(key)
        if value is not None and not ((lo is None or value >= lo) and (hi is None or value <= hi)):
            span = f"at least {lo}" if hi is None else f"between {lo} and {hi}"
            raise _fail(f"must be {span}, got {value!r}", key, "invalid_value")
    if body.get("n") not in (None, 1):
        raise _unsupported("n > 1 is not served: one choice per request; send n requests", "n")
    if body.get("logprobs"):
        raise _unsupported("logprobs are not served by this gateway", "logprobs")
    if body.get("top_logprobs") is not None:
        raise _fail("top_logprobs needs logprobs: true", "top_logprobs", "invalid_value")
    bias = body.get("logit_bias")
    if bias is not None:
        if not isinstance(bias, dict) or not all(
            k.isdigit()
            and isinstance(v, int | float)
            and not isinstance(v, bool)
            and -100 <= v <= 100
            for k, v in bias.items()
        ):
            raise _fail(
                "expected an object mapping token ids to numbers from -100 to 100",
                "logit_bias",
                "invalid_value",
            )
        if bias:
            raise _unsupported(
                "logit_bias is not served: token ids differ between the models of a route",
                "logit_bias",
            )


def _stop(raw: Any) -> list[str] | None:
    stop = [raw] if isinstance(raw, str) else raw
    if stop is not None and not (isinstance(stop, list) and all(isinstance(s, str) for s in stop)):
        raise _fail("expected a string or a list of strings", "stop", "invalid_type")
    if stop is not None and len(stop) > 4:
        raise _fail(f"at most 4 stop sequences, got {len(stop)}", "stop", "invalid_value")
    return stop


def _tools_and_choice(body: dict[str, Any]) -> tuple[list[ToolDefinition], str | None]:
    """``tools``/``tool_choice``, or the legacy ``functions``/``function_call`` translated."""
    for legacy, new in (("functions", "tools"), ("function_call", "tool_choice")):
        if body.get(legacy) is not None and body.get(new) is not None:
            raise _fail(f"send '{new}' or the deprecated '{legacy}', not both", legacy)
    if body.get("functions") is not None:
        tools = _tools(body["functions"], "functions")
    else:
        tools = _tools(body["tools"]) if body.get("tools") is not None else []
    call = body.get("function_call")
    if call is not None:
        if call not in ("auto", "none") and not isinstance(call, dict):
            raise _fail("expected 'auto', 'none' or {name}", "function_call", "invalid_value")
        # {"name": X} is the legacy form of {"type": "function", "function": {"name": X}}
        choice = {"type": "function", "function": call} if isinstance(call, dict) else call
        return tools, _tool_choice(choice, tools, "function_call")
    return tools, _tool_choice(body.get("tool_choice"), tools)


def parse_chat_request(body: Any, tags: list[str]) -> ChatRequest:
    """Validate a decoded JSON body."""
    if not isinstance(body, dict):
        raise _fail("the request body must be a JSON object", "body", "invalid_type")
    unknown = sorted(set(body) - _KNOWN)
    if unknown:
        raise _fail(
            f"Unrecognized request argument supplied: {unknown[0]}", unknown[0], "unknown_parameter"
        )
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _fail("you must provide a model parameter", "model", "missing_required_parameter")
    raw_messages = body.get("messages")
    if not isinstance(raw_messages, list) or not raw_messages:
        raise _fail(
            "expected a non-empty list of messages",
            "messages",
            "missing_required_parameter" if raw_messages is None else "invalid_type",
        )
    _check_scalars(body)
    stop = _stop(body.get("stop"))
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise _fail("expected a boolean", "stream", "invalid_type")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise _fail("expected an object", "stream_options", "invalid_type")
    messages = [_message(m, i) for i, m in enumerate(raw_messages)]
    tools, tool_choice = _tools_and_choice(body)
    limit = body.get("max_completion_tokens")
    try:
        settings = ModelSettings(
            max_tokens=body.get("max_tokens") if limit is None else limit,
            temperature=body.get("temperature"),
            top_p=body.get("top_p"),
            stop=stop,
            seed=body.get("seed"),
            presence_penalty=body.get("presence_penalty"),
            frequency_penalty=body.get("frequency_penalty"),
            tools=tools,
            tool_choice=tool_choice,
            parallel_tool_calls=body.get("parallel_tool_calls"),
            response_format=_response_format(body.get("response_format")),
            user=body.get("user"),
            tags=tags,
            cache=_cache(body.get("cache")),
        )
    except ValidationError as exc:
        err = exc.errors()[0]
        param = ".".join(str(p) for p in err["loc"])
        raise _fail(f"{err['msg']} (got {err.get('input')!r})", param, "invalid_value") from None
    session = body.get("session_id")
    if session is not None:
        check_id(session, "session_id")
    return ChatRequest(
        model, messages, settings, stream, bool(options.get("include_usage")), session
    )
