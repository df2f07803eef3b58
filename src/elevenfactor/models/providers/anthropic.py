"""Anthropic Messages API: ``POST {base_url}/v1/messages``, in one piece or streamed (SSE).

Mapping to our vocabulary:

- system messages become the top-level ``system`` string (joined with blank lines);
- assistant tool calls become ``tool_use`` blocks, tool results ``tool_result`` blocks in a user
  turn; consecutive turns of the same role are merged, since the API requires alternation;
- ``response_format`` (JSON schema or any JSON object) is emulated with a forced tool call whose
  input is returned as the response text with ``finish_reason="stop"``. A schema whose top level
  is not an object is wrapped in ``{"value": ...}`` and unwrapped again;
- ``temperature`` is clamped to Anthropic's 0..1 range; ``seed`` and the penalties have no
  equivalent and are dropped; ``settings.extra`` is merged into the body last.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from elevenfactor.config import DeploymentConfig, ProviderConfig
from elevenfactor.errors import (
    ContentFiltered,
    MalformedResponse,
    ModelError,
    RateLimited,
    UpstreamAuthError,
    UpstreamServerError,
)
from elevenfactor.models._messages import (
    AssistantMessage,
    Message,
    ModelSettings,
    Response,
    ResponseFormat,
    StreamChunk,
    SystemMessage,
    ToolCall,
    ToolCallDelta,
    ToolDefinition,
    ToolMessage,
    Usage,
    UserMessage,
)
from elevenfactor.models._protocol import Call
from elevenfactor.models.providers._http import (
    HeadersHook,
    HttpClient,
    classify_status,
    loads_or_malformed,
)
from elevenfactor.observe import _tracing as tracing
from elevenfactor.observe._trace_genai import model_done, model_span, traced_stream

__all__ = ["ANTHROPIC_VERSION", "AnthropicModel", "AnthropicProvider"]

ANTHROPIC_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 1024

_FINISH: dict[str, Any] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
}
_TOOL_NAME = re.compile(r"[^a-zA-Z0-9_-]")
_PARSE_ERRORS = (KeyError, TypeError, AttributeError, ValueError, IndexError)


class AnthropicProvider:
    """An Anthropic account (or anything speaking the Messages API at ``base_url``)."""

    def __init__(self, name: str, config: ProviderConfig) -> None:
        self.name = name
        headers = {"anthropic-version": ANTHROPIC_VERSION}
        if config.api_key is not None:
            headers["x-api-key"] = config.api_key.get_secret_value()
        headers.update(config.headers)
        base = (config.base_url or "https://api.anthropic.com").rstrip("/")
        self.path = "/messages" if base.endswith("/v1") else "/v1/messages"
        self.http = HttpClient(base, headers)

    def deployment(self, name: str, config: DeploymentConfig) -> AnthropicModel:
        """A raw model for one deployment."""
        return AnthropicModel(name, self.name, config, self.http, self.path)

    async def aclose(self) -> None:
        """Close pooled connections."""
        await self.http.aclose()


@dataclass(frozen=True, slots=True)
class _Forced:
    """The tool that emulates structured output; ``wrapped`` if the schema was not an object."""

    name: str
    wrapped: bool

    def text(self, value: Any) -> str:
        """The tool input as the response text."""
        if self.wrapped and isinstance(value, dict):
            value = value.get("value")
        return json.dumps(value)


def _text(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def _tool_input(call: ToolCall) -> dict[str, Any]:
    """The parsed arguments; ones that are not a JSON object are kept under ``_raw_arguments``."""
    if not call.arguments.strip():
        return {}
    try:
        value = json.loads(call.arguments)
    except ValueError:
        value = None
    return value if isinstance(value, dict) else {"_raw_arguments": call.arguments}


def _blocks(message: Message) -> tuple[str, list[dict[str, Any]]]:
    if isinstance(message, UserMessage):
        return "user", [_text(message.content)] if message.content else []
    if isinstance(message, ToolMessage):
        block: dict[str, Any] = {"type": "tool_result", "tool_use_id": message.tool_call_id}
        if message.content:
            block["content"] = message.content
        return "user", [block]
    assert isinstance(message, AssistantMessage)
    blocks = [_text(message.content)] if message.content else []
    blocks += [
        {"type": "tool_use", "id": tc.id, "name": tc.name, "input": _tool_input(tc)}
        for tc in message.tool_calls
    ]
    return "assistant", blocks


def messages_to_anthropic(
    messages: Sequence[Message],
) -> tuple[str | None, list[dict[str, Any]]]:
    """The ``system`` string and the alternating ``messages`` list of a Messages API body."""
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for message in messages:
        if isinstance(message, SystemMessage):
            system.append(message.content)
            continue
        role, blocks = _blocks(message)
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    return ("\n\n".join(system) if system else None), turns


def _tool(tool: ToolDefinition) -> dict[str, Any]:
    described = {"description": tool.description} if tool.description else {}
    return {"name": tool.name, **described, "input_schema": tool.parameters}


def _tool_choice(choice: str | None) -> dict[str, Any] | None:
    """``auto``/``none`` as they are, ``required`` as ``any``, a tool name as ``tool``."""
    if choice is None:
        return None
    kind = {"auto": "auto", "none": "none", "required": "any"}.get(choice)
    return {"type": kind} if kind else {"type": "tool", "name": choice}


def _forced_tool(rf: ResponseFormat) -> tuple[_Forced, dict[str, Any]]:
    """The forced tool definition that makes the model answer with ``rf``'s JSON."""
    default = "json_output" if rf.type == "json_object" else "output"
    name = _TOOL_NAME.sub("_", rf.name or default)[:64] or default
    schema: dict[str, Any] = {"type": "object", "additionalProperties": True}
    wrapped = False
    if rf.type == "json_schema" and rf.json_schema:
        schema = rf.json_schema
        if schema.get("type") != "object":
            schema = {"type": "object", "properties": {"value": schema}, "required": ["value"]}
            wrapped = True
    tool = {
        "name": name,
        "description": "Give the final answer as this tool's input.",
        "input_schema": schema,
    }
    return _Forced(name, wrapped), tool


def _input_tokens(usage: Any) -> int:
    if not isinstance(usage, dict):
        return 0
    return sum(
        int(usage.get(k) or 0)
        for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    )


def _cached_tokens(usage: Any) -> int:
    """Input tokens read from the prompt cache (part of ``_input_tokens``)."""
    return int(usage.get("cache_read_input_tokens") or 0) if isinstance(usage, dict) else 0


def _stream_error(error: Any, deployment: str) -> ModelError:
    """The error class of an in-stream ``error`` event."""
    kind = error.get("type") if isinstance(error, dict) else None
    text = error.get("message", "") if isinstance(error, dict) else ""
    message = f"{deployment}: error event in stream: {kind}: {text}"
    if kind in ("overloaded_error", "api_error"):
        return UpstreamServerError(message, deployment=deployment)
    if kind == "rate_limit_error":
        return RateLimited(message, deployment=deployment)
    if kind in ("authentication_error", "permission_error"):
        return UpstreamAuthError(message, deployment=deployment)
    if kind in ("invalid_request_error", "request_too_large", "not_found_error"):
        return classify_status(400, json.dumps(error).encode(), {}, deployment)
    return MalformedResponse(
        f"{deployment}: unrecognised stream error: {error!r}"[:500], deployment=deployment
    )


class AnthropicModel:
    """One deployment (a Claude model id) on the Messages API."""

    def __init__(
        self,
        name: str,
        provider: str,
        config: DeploymentConfig,
        http: HttpClient,
        path: str = "/v1/messages",
    ) -> None:
        self._name = name
        self.provider = provider
        self.model_id = config.model
        self.params = config.params
        self._context_window = config.context_window
        self.http = http
        self.path = path
        # Set by the deployment's rate limiter: it reads the anthropic-ratelimit-* headers.
        self.on_headers: HeadersHook | None = None

    @property
    def name(self) -> str:
        """The deployment name."""
        return self._name

    @property
    def context_window(self) -> int | None:
        """Configured context window."""
        return self._context_window

    def payload(
        self, messages: Sequence[Message], settings: ModelSettings, stream: bool
    ) -> tuple[dict[str, Any], _Forced | None]:
        """The request body, and the structured-output tool if one is forced."""
        s = settings.merged_over(self.params)
        system, turns = messages_to_anthropic(messages)
        body: dict[str, Any] = {
            "model": self.model_id,
            "max_tokens": s.max_tokens or DEFAULT_MAX_TOKENS,
        }
        if system is not None:
            body["system"] = system
        body["messages"] = turns
        if s.temperature is not None:
            body["temperature"] = min(s.temperature, 1.0)
        if s.top_p is not None:
            body["top_p"] = s.top_p
        if s.stop:
            body["stop_sequences"] = list(s.stop)
        if s.user:
            body["metadata"] = {"user_id": s.user}
        tools = [_tool(t) for t in s.tools]
        choice = _tool_choice(s.tool_choice)
        forced: _Forced | None = None
        if s.response_format is not None and s.response_format.type != "text":
            forced, tool = _forced_tool(s.response_format)
            tools.append(tool)
            choice = {"type": "tool", "name": forced.name}
        if tools:
            body["tools"] = tools
            if s.parallel_tool_calls is False and (choice or {}).get("type") != "none":
                choice = {**(choice or {"type": "auto"}), "disable_parallel_tool_use": True}
            if choice is not None:
                body["tool_choice"] = choice
        if stream:
            body["stream"] = True
        body.update(s.extra)
        return body, forced

    def _finish(self, stop_reason: Any, forced: _Forced | None) -> Any:
        if stop_reason == "refusal":
            raise ContentFiltered(
                f"{self._name}: the model refused (stop_reason=refusal)", deployment=self._name
            )
        finish = _FINISH.get(str(stop_reason), "stop")
        return "stop" if forced is not None and finish == "tool_calls" else finish

    def _malformed(self, what: Any) -> MalformedResponse:
        return MalformedResponse(
            f"{self._name}: not a Messages API response: {str(what)[:200]}", deployment=self._name
        )

    def _response(self, obj: Any, forced: _Forced | None) -> Response:
        if not (
            isinstance(obj, dict)
            and obj.get("type") == "message"
            and isinstance(obj.get("content"), list)
        ):
            raise self._malformed(obj)
        texts: list[str] = []
        calls: list[ToolCall] = []
        try:
            for block in obj["content"]:
                if block["type"] == "text":
                    texts.append(block["text"])
                elif block["type"] == "tool_use" and forced and block["name"] == forced.name:
                    texts = [forced.text(block["input"])]  # the answer is the JSON alone
                    break
                elif block["type"] == "tool_use":
                    calls.append(
                        ToolCall(
                            id=block["id"], name=block["name"], arguments=json.dumps(block["input"])
                        )
                    )
            usage = obj.get("usage") or {}
            return Response(
                message=AssistantMessage(
                    content="".join(texts) if texts else None, tool_calls=calls
                ),
                usage=Usage(
                    input_tokens=_input_tokens(usage),
                    output_tokens=int(usage.get("output_tokens") or 0),
                    cached_input_tokens=_cached_tokens(usage),
                ),
                model=str(obj.get("model") or ""),
                finish_reason=self._finish(obj.get("stop_reason"), forced),
            )
        except _PARSE_ERRORS:
            raise self._malformed(obj) from None

    async def request(
        self, messages: Sequence[Message], settings: ModelSettings, call: Call
    ) -> Response:
        """One Messages API call (with tracing on: a GenAI client span for this attempt)."""
        body, forced = self.payload(messages, settings, False)
        if tracing.TRACER is None:
            obj = await self.http.post_json(self.path, body, self._name, self.on_headers)
            return self._response(obj, forced)
        sp = model_span("anthropic", self.provider, self._name, self.model_id, settings)
        try:
            obj = await self.http.post_json(
                self.path, body, self._name, self.on_headers, tracing.traceparent(sp)
            )
            response = self._response(obj, forced)
        except BaseException as exc:
            model_done(sp, error=exc)
            raise
        model_done(
            sp, model=response.model, usage=response.usage, finish_reason=response.finish_reason
        )
        return response

    def request_stream(
        self, messages: Sequence[Message], settings: ModelSettings, call: Call
    ) -> AsyncIterator[StreamChunk]:
        """A streamed Messages API call; the last chunk carries finish_reason and usage."""
        if tracing.TRACER is None:
            return self._stream(messages, settings, None)
        sp = model_span(
            "anthropic", self.provider, self._name, self.model_id, settings, stream=True
        )
        return traced_stream(sp, self._stream(messages, settings, tracing.traceparent(sp)))

    async def _stream(
        self, messages: Sequence[Message], settings: ModelSettings, traceparent: str | None
    ) -> AsyncIterator[StreamChunk]:
        body, forced = self.payload(messages, settings, True)
        state = _StreamState(self, forced)
        lines = self.http.stream_lines(self.path, body, self._name, self.on_headers, traceparent)
        async for data in lines:
            event = loads_or_malformed(
                data, self._name, lambda o: isinstance(o, dict) and isinstance(o.get("type"), str)
            )
            try:
                chunk = state.feed(event)
            except _PARSE_ERRORS:
                raise self._malformed(event) from None
            if chunk is not None:
                yield chunk
            if state.done:
                return
        raise MalformedResponse(
            f"{self._name}: stream ended before message_stop", deployment=self._name
        )


@dataclass
class _StreamState:
    """Turns Messages API stream events into chunks, one event at a time."""

    model: AnthropicModel
    forced: _Forced | None
    tools: dict[int, int] = field(default_factory=dict)  # block index -> tool call index
    parts: dict[int, list[str]] = field(default_factory=dict)  # block index -> JSON fragments
    model_id: str | None = None
    input_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0
    stop_reason: Any = None
    done: bool = False

    @property
    def forced_wrapped(self) -> bool:
        """Whether structured output is buffered to unwrap ``{"value": ...}`` at the end."""
        return self.forced is not None and self.forced.wrapped

    def feed(self, event: dict[str, Any]) -> StreamChunk | None:
        """The chunk for one event, if it carries anything; raises on error events."""
        kind = event["type"]
        if kind == "message_start":
            message = event["message"]
            self.model_id = message.get("model") or None
            self.input_tokens = _input_tokens(message.get("usage"))
            self.cached_tokens = _cached_tokens(message.get("usage"))
            self.output_tokens = int((message.get("usage") or {}).get("output_tokens") or 0)
        elif kind == "content_block_start":
            return self._start(event["index"], event["content_block"])
        elif kind == "content_block_delta":
            return self._delta(event["index"], event["delta"])
        elif kind == "content_block_stop":
            return self._stop(event["index"])
        elif kind == "message_delta":
            self.stop_reason = event["delta"].get("stop_reason")
            usage = event.get("usage") or {}
            if usage.get("output_tokens") is not None:
                self.output_tokens = int(usage["output_tokens"])
            if usage.get("input_tokens") is not None:
                self.input_tokens = _input_tokens(usage)
                self.cached_tokens = _cached_tokens(usage)
        elif kind == "message_stop":
            self.done = True
            return StreamChunk(
                finish_reason=self.model._finish(self.stop_reason, self.forced),
                usage=Usage(
                    input_tokens=self.input_tokens,
                    output_tokens=self.output_tokens,
                    cached_input_tokens=self.cached_tokens,
                ),
                model=self.model_id,
            )
        elif kind == "error":
            raise _stream_error(event.get("error"), self.model.name)
        return None  # ping, and event types added to the API later

    def _start(self, index: int, block: dict[str, Any]) -> StreamChunk | None:
        if block["type"] == "text":
            return StreamChunk(text=block["text"]) if block.get("text") else None
        if block["type"] != "tool_use":
            return None  # thinking and server-tool blocks are not surfaced
        self.parts[index] = []
        if self.forced is not None and block["name"] == self.forced.name:
            return None
        self.tools[index] = len(self.tools)
        return StreamChunk(
            tool_calls=[ToolCallDelta(index=self.tools[index], id=block["id"], name=block["name"])]
        )

    def _delta(self, index: int, delta: dict[str, Any]) -> StreamChunk | None:
        if delta["type"] == "text_delta":
            return StreamChunk(text=delta["text"]) if delta["text"] else None
        if delta["type"] != "input_json_delta" or index not in self.parts:
            return None
        part: str = delta["partial_json"]
        if not part:
            return None
        self.parts[index].append(part)
        if index in self.tools:
            return StreamChunk(tool_calls=[ToolCallDelta(index=self.tools[index], arguments=part)])
        return None if self.forced_wrapped else StreamChunk(text=part)

    def _stop(self, index: int) -> StreamChunk | None:
        """Complete a tool block that sent no arguments, or release a buffered wrapped answer."""
        parts = self.parts.pop(index, None)
        if parts is None or (parts and (index in self.tools or not self.forced_wrapped)):
            return None
        if index in self.tools:
            return StreamChunk(tool_calls=[ToolCallDelta(index=self.tools[index], arguments="{}")])
        assert self.forced is not None
        return StreamChunk(text=self.forced.text(json.loads("".join(parts) or "{}")))
