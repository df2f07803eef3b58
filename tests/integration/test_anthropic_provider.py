"""The Anthropic provider against a loopback test double of the Messages API wire protocol."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from elevenfactor.config import DeploymentConfig, ProviderConfig, RetryConfig
from elevenfactor.errors import (
    ContentFiltered,
    ContextWindowExceeded,
    MalformedResponse,
    RateLimited,
    UpstreamAuthError,
    UpstreamBadRequest,
    UpstreamServerError,
)
from elevenfactor.models import (
    AssistantMessage,
    Call,
    ModelSettings,
    ResponseFormat,
    StreamChunk,
    SystemMessage,
    ToolDefinition,
    ToolMessage,
    UserMessage,
    load_provider,
    wrap_deployment,
)
from elevenfactor.models.providers.anthropic import AnthropicModel, AnthropicProvider
from tests.conftest import free_port
from tests.support.anthropic_upstream import API_KEY, AnthropicUpstream, ErrorReply, RawReply, Reply

pytestmark = pytest.mark.integration

WEATHER = ToolDefinition(
    name="get_weather",
    description="Current weather in a city.",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
CLOCK = ToolDefinition(name="get_time")


@pytest.fixture
async def upstream() -> AsyncIterator[AnthropicUpstream]:
    server = AnthropicUpstream()
    await server.start(free_port())
    try:
        yield server
    finally:
        await server.close()


def _provider(upstream: AnthropicUpstream, key: str = API_KEY) -> AnthropicProvider:
    return AnthropicProvider(
        "anthropic", ProviderConfig(type="anthropic", base_url=upstream.url, api_key=key)
    )


def _config(**kw: Any) -> DeploymentConfig:
    return DeploymentConfig(provider="anthropic", model="claude-test-1", **kw)


@pytest.fixture
async def model(upstream: AnthropicUpstream) -> AsyncIterator[AnthropicModel]:
    provider = _provider(upstream)
    try:
        yield provider.deployment("claude", _config(context_window=4000))
    finally:
        await provider.aclose()


async def _collect(
    model: AnthropicModel, messages: list[Any], settings: ModelSettings
) -> list[StreamChunk]:
    return [c async for c in model.request_stream(messages, settings, Call())]


def test_entry_point_is_registered() -> None:
    provider = load_provider("main", ProviderConfig(type="anthropic", api_key="k"))
    assert isinstance(provider, AnthropicProvider)
    assert provider.http.base_url == "https://api.anthropic.com"


async def test_plain_text(model: AnthropicModel, upstream: AnthropicUpstream) -> None:
    upstream.script(
        Reply(
            [{"type": "text", "text": "Hello"}, {"type": "text", "text": " there"}], output_tokens=3
        )
    )
    response = await model.request(
        [SystemMessage(content="Be brief."), UserMessage(content="hi")], ModelSettings(), Call()
    )
    assert response.message.content == "Hello there"
    assert response.message.tool_calls == []
    assert response.finish_reason == "stop"
    assert response.model == "claude-test-1"
    assert response.usage.output_tokens == 3 and response.usage.input_tokens > 0
    assert upstream.last == {
        "model": "claude-test-1",
        "max_tokens": 1024,
        "system": "Be brief.",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
    }
    headers = upstream.headers[-1]
    assert headers["x-api-key"] == API_KEY
    assert headers["anthropic-version"] == "2023-06-01"


async def test_settings_mapping_and_deployment_params(upstream: AnthropicUpstream) -> None:
    provider = _provider(upstream)
    model = provider.deployment("claude", _config(params={"max_tokens": 300, "top_k": 40}))
    settings = ModelSettings(
        temperature=1.5,
        top_p=0.9,
        stop=["END"],
        seed=7,
        user="u-1",
        presence_penalty=0.5,
        extra={"service_tier": "auto"},
    )
    await model.request([UserMessage(content="x")], settings, Call())
    await provider.aclose()
    body = upstream.last
    assert body["max_tokens"] == 300
    assert body["temperature"] == 1.0  # clamped to Anthropic's range
    assert body["top_p"] == 0.9 and body["stop_sequences"] == ["END"]
    assert body["top_k"] == 40 and body["service_tier"] == "auto"
    assert body["metadata"] == {"user_id": "u-1"}
    assert "seed" not in body and "presence_penalty" not in body


async def test_tool_call_round_trip(model: AnthropicModel, upstream: AnthropicUpstream) -> None:
    upstream.script(
        Reply(
            [
                {"type": "text", "text": "Checking."},
                {
                    "type": "tool_use",
                    "id": "toolu_01",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                },
                {"type": "tool_use", "id": "toolu_02", "name": "get_time", "input": {}},
            ],
            stop_reason="tool_use",
        ),
        Reply([{"type": "text", "text": "Sunny, noon."}]),
    )
    settings = ModelSettings(tools=[WEATHER, CLOCK])
    history: list[Any] = [SystemMessage(content="sys"), UserMessage(content="Weather?")]
    first = await model.request(history, settings, Call())
    assert first.finish_reason == "tool_calls"
    assert first.message.content == "Checking."
    assert [(c.id, c.name, json.loads(c.arguments)) for c in first.message.tool_calls] == [
        ("toolu_01", "get_weather", {"city": "Paris"}),
        ("toolu_02", "get_time", {}),
    ]

    history += [
        first.message,
        ToolMessage(content="sunny", tool_call_id="toolu_01"),
        ToolMessage(content="12:00", tool_call_id="toolu_02"),
        UserMessage(content="Thanks"),
        SystemMessage(content="late system note"),
    ]
    second = await model.request(history, settings, Call())
    assert second.message.content == "Sunny, noon."
    assert upstream.last == {
        "model": "claude-test-1",
        "max_tokens": 1024,
        "system": "sys\n\nlate system note",
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Weather?"}]},
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Checking."},
                    {
                        "type": "tool_use",
                        "id": "toolu_01",
                        "name": "get_weather",
                        "input": {"city": "Paris"},
                    },
                    {"type": "tool_use", "id": "toolu_02", "name": "get_time", "input": {}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_01", "content": "sunny"},
                    {"type": "tool_result", "tool_use_id": "toolu_02", "content": "12:00"},
                    {"type": "text", "text": "Thanks"},
                ],
            },
        ],
        "tools": [
            {
                "name": "get_weather",
                "description": "Current weather in a city.",
                "input_schema": WEATHER.parameters,
            },
            {"name": "get_time", "input_schema": {"type": "object", "properties": {}}},
        ],
    }


async def test_tool_result_without_tool_use_is_rejected(model: AnthropicModel) -> None:
    messages: list[Any] = [
        UserMessage(content="a"),
        AssistantMessage(content="b"),
        ToolMessage(content="x", tool_call_id="toolu_missing"),
    ]
    with pytest.raises(UpstreamBadRequest, match="tool_use_id"):
        await model.request(messages, ModelSettings(), Call())


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        ("auto", None, {"type": "auto"}),
        ("none", None, {"type": "none"}),
        ("required", None, {"type": "any"}),
        ("get_time", None, {"type": "tool", "name": "get_time"}),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
        ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
        (None, None, None),
    ],
)
async def test_tool_choice_mapping(
    model: AnthropicModel,
    upstream: AnthropicUpstream,
    choice: str | None,
    parallel: bool | None,
    expected: dict[str, Any] | None,
) -> None:
    settings = ModelSettings(
        tools=[WEATHER, CLOCK], tool_choice=choice, parallel_tool_calls=parallel
    )
    await model.request([UserMessage(content="go")], settings, Call())
    assert [t["name"] for t in upstream.last["tools"]] == ["get_weather", "get_time"]
    assert upstream.last.get("tool_choice") == expected


PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
}


async def test_structured_output_via_forced_tool(
    model: AnthropicModel, upstream: AnthropicUpstream
) -> None:
    upstream.script(
        Reply(
            [
                {
                    "type": "tool_use",
                    "id": "toolu_9",
                    "name": "person",
                    "input": {"name": "Ada", "age": 36},
                }
            ],
            stop_reason="tool_use",
        )
    )
    settings = ModelSettings(
        response_format=ResponseFormat(type="json_schema", name="person", json_schema=PERSON)
    )
    response = await model.request([UserMessage(content="Who?")], settings, Call())
    assert json.loads(response.message.content or "") == {"name": "Ada", "age": 36}
    assert response.message.tool_calls == []
    assert response.finish_reason == "stop"
    assert upstream.last["tools"] == [
        {
            "name": "person",
            "input_schema": PERSON,
            "description": upstream.last["tools"][0]["description"],
        }
    ]
    assert upstream.last["tool_choice"] == {"type": "tool", "name": "person"}


async def test_json_object_and_non_object_schema(
    model: AnthropicModel, upstream: AnthropicUpstream
) -> None:
    upstream.script(
        Reply(
            [{"type": "tool_use", "id": "t1", "name": "json_output", "input": {"k": [1]}}],
            stop_reason="tool_use",
        ),
        Reply(
            [{"type": "tool_use", "id": "t2", "name": "output", "input": {"value": [1, 2]}}],
            stop_reason="tool_use",
        ),
    )
    response = await model.request(
        [UserMessage(content="j")],
        ModelSettings(response_format=ResponseFormat(type="json_object")),
        Call(),
    )
    assert json.loads(response.message.content or "") == {"k": [1]}
    assert upstream.last["tools"][0]["input_schema"] == {
        "type": "object",
        "additionalProperties": True,
    }
    array = {"type": "array", "items": {"type": "integer"}}
    settings = ModelSettings(response_format=ResponseFormat(type="json_schema", json_schema=array))
    response = await model.request([UserMessage(content="j")], settings, Call())
    assert json.loads(response.message.content or "") == [1, 2]
    assert upstream.last["tools"][0]["input_schema"]["properties"] == {"value": array}


async def test_streamed_structured_output(
    model: AnthropicModel, upstream: AnthropicUpstream
) -> None:
    upstream.script(
        Reply(
            [
                {
                    "type": "tool_use",
                    "id": "t",
                    "name": "person",
                    "input": {"name": "Grace", "age": 85},
                }
            ],
            stop_reason="tool_use",
        )
    )
    settings = ModelSettings(
        response_format=ResponseFormat(type="json_schema", name="person", json_schema=PERSON)
    )
    chunks = await _collect(model, [UserMessage(content="Who?")], settings)
    assert len([c for c in chunks if c.text]) > 1
    assert json.loads("".join(c.text for c in chunks)) == {"name": "Grace", "age": 85}
    assert not any(c.tool_calls for c in chunks)
    assert chunks[-1].finish_reason == "stop"

    upstream.script(
        Reply(
            [{"type": "tool_use", "id": "t", "name": "output", "input": {"value": ["a", "b"]}}],
            stop_reason="tool_use",
        )
    )
    array = {"type": "array", "items": {"type": "string"}}
    settings = ModelSettings(response_format=ResponseFormat(type="json_schema", json_schema=array))
    chunks = await _collect(model, [UserMessage(content="List?")], settings)
    assert json.loads("".join(c.text for c in chunks)) == ["a", "b"]


async def test_streaming_text(model: AnthropicModel, upstream: AnthropicUpstream) -> None:
    upstream.script(Reply([{"type": "text", "text": "Streaming works fine."}], output_tokens=4))
    chunks = await _collect(model, [UserMessage(content="s")], ModelSettings(max_tokens=50))
    assert upstream.last["stream"] is True and upstream.last["max_tokens"] == 50
    assert upstream.headers[-1]["Accept"] == "text/event-stream"
    assert len(chunks) > 3
    assert "".join(c.text for c in chunks) == "Streaming works fine."
    final = chunks[-1]
    assert final.finish_reason == "stop"
    assert final.usage is not None and final.usage.output_tokens == 4
    assert final.usage.input_tokens > 0
    assert final.model == "claude-test-1"
    assert all(c.finish_reason is None for c in chunks[:-1])


async def test_streaming_tool_calls_reassembled(
    model: AnthropicModel, upstream: AnthropicUpstream
) -> None:
    upstream.script(
        Reply(
            [
                {"type": "text", "text": "Let me look."},
                {
                    "type": "tool_use",
                    "id": "toolu_a",
                    "name": "get_weather",
                    "input": {"city": "Reykjavik, Iceland"},
                },
                {"type": "tool_use", "id": "toolu_b", "name": "get_time", "input": {}},
            ],
            stop_reason="tool_use",
        )
    )
    settings = ModelSettings(tools=[WEATHER, CLOCK])
    chunks = await _collect(model, [UserMessage(content="t")], settings)
    calls: dict[int, dict[str, str]] = {}
    for chunk in chunks:
        for delta in chunk.tool_calls:
            call = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
            call["id"] = delta.id or call["id"]
            call["name"] = delta.name or call["name"]
            call["arguments"] += delta.arguments
    assert sum(len(c.tool_calls) for c in chunks) > 4  # arguments arrive in fragments
    assert [(c["id"], c["name"], json.loads(c["arguments"])) for c in calls.values()] == [
        ("toolu_a", "get_weather", {"city": "Reykjavik, Iceland"}),
        ("toolu_b", "get_time", {}),
    ]
    assert sorted(calls) == [0, 1]
    assert "".join(c.text for c in chunks) == "Let me look."
    assert chunks[-1].finish_reason == "tool_calls"


@pytest.mark.parametrize("stream", [False, True])
async def test_rate_limited_with_retry_after(
    model: AnthropicModel, upstream: AnthropicUpstream, stream: bool
) -> None:
    upstream.script(
        ErrorReply(
            429,
            "rate_limit_error",
            "Number of request tokens has exceeded your per-minute rate limit",
            {"retry-after": "7"},
        )
    )
    with pytest.raises(RateLimited) as info:
        if stream:
            await _collect(model, [UserMessage(content="x")], ModelSettings())
        else:
            await model.request([UserMessage(content="x")], ModelSettings(), Call())
    assert info.value.retry_after == 7.0
    assert info.value.status == 429


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (ErrorReply(529, "overloaded_error", "Overloaded"), UpstreamServerError),
        (ErrorReply(500, "api_error", "Internal server error"), UpstreamServerError),
        (
            ErrorReply(403, "permission_error", "Your API key does not have permission"),
            UpstreamAuthError,
        ),
        (ErrorReply(400, "invalid_request_error", "messages.0: bad"), UpstreamBadRequest),
        (RawReply(b"<html>gateway</html>"), MalformedResponse),
        (RawReply(b'{"type": "completion", "completion": "hi"}'), MalformedResponse),
        (
            RawReply(b'{"type": "message", "content": [{"type": "tool_use", "id": "x"}]}'),
            MalformedResponse,
        ),
        (Reply([], stop_reason="refusal"), ContentFiltered),
    ],
)
async def test_error_classes(
    model: AnthropicModel, upstream: AnthropicUpstream, reply: Any, error: type[Exception]
) -> None:
    upstream.script(reply)
    with pytest.raises(error):
        await model.request([UserMessage(content="x")], ModelSettings(), Call())


async def test_overloaded_status_code(model: AnthropicModel, upstream: AnthropicUpstream) -> None:
    upstream.script(ErrorReply(529, "overloaded_error", "Overloaded"))
    with pytest.raises(UpstreamServerError) as info:
        await _collect(model, [UserMessage(content="x")], ModelSettings())
    assert info.value.status == 529 and info.value.error_class == "server_error"


async def test_prompt_too_long(upstream: AnthropicUpstream) -> None:
    upstream.context_window = 50
    provider = _provider(upstream)
    model = provider.deployment("claude", _config())
    try:
        with pytest.raises(ContextWindowExceeded, match="prompt is too long"):
            await model.request([UserMessage(content="word " * 100)], ModelSettings(), Call())
    finally:
        await provider.aclose()


async def test_wrong_api_key(upstream: AnthropicUpstream) -> None:
    provider = _provider(upstream, key="sk-ant-wrong")
    try:
        with pytest.raises(UpstreamAuthError):
            await provider.deployment("claude", _config()).request(
                [UserMessage(content="x")], ModelSettings(), Call()
            )
    finally:
        await provider.aclose()


async def test_unknown_field_in_extra_is_bad_request(model: AnthropicModel) -> None:
    with pytest.raises(UpstreamBadRequest, match="Extra inputs are not permitted"):
        await model.request(
            [UserMessage(content="x")], ModelSettings(extra={"frequency_bonus": 1}), Call()
        )


@pytest.mark.parametrize(
    ("kind", "error"),
    [
        ("overloaded_error", UpstreamServerError),
        ("rate_limit_error", RateLimited),
        ("invalid_request_error", UpstreamBadRequest),
        ("mystery_error", MalformedResponse),
    ],
)
async def test_stream_error_event(
    model: AnthropicModel, upstream: AnthropicUpstream, kind: str, error: type[Exception]
) -> None:
    upstream.script(
        Reply(
            [{"type": "text", "text": "partial answer"}, {"type": "text", "text": "never sent"}],
            stream_error={"type": kind, "message": "went wrong"},
        )
    )
    received: list[StreamChunk] = []
    with pytest.raises(error):
        async for chunk in model.request_stream(
            [UserMessage(content="x")], ModelSettings(), Call()
        ):
            received.append(chunk)
    assert "".join(c.text for c in received) == "partial answer"


async def test_stream_cut_before_message_stop(
    model: AnthropicModel, upstream: AnthropicUpstream
) -> None:
    upstream.script(Reply([{"type": "text", "text": "cut"}], truncate=True))
    with pytest.raises(MalformedResponse, match="message_stop"):
        await _collect(model, [UserMessage(content="x")], ModelSettings())


async def test_stream_refusal(model: AnthropicModel, upstream: AnthropicUpstream) -> None:
    upstream.script(Reply([{"type": "text", "text": "I"}], stop_reason="refusal"))
    with pytest.raises(ContentFiltered):
        await _collect(model, [UserMessage(content="x")], ModelSettings())


async def test_wrap_deployment_retries_429_honoring_retry_after(
    upstream: AnthropicUpstream,
) -> None:
    upstream.script(
        ErrorReply(429, "rate_limit_error", "slow down", {"retry-after": "0.3"}),
        Reply([{"type": "text", "text": "after the wait"}]),
    )
    provider = _provider(upstream)
    config = _config(retry=RetryConfig(attempts=3, backoff_base=0, backoff_max=0))
    model = wrap_deployment(provider.deployment("claude", config), "anthropic", config)
    call = Call()
    start = time.perf_counter()
    try:
        response = await model.request([UserMessage(content="x")], ModelSettings(), call)
    finally:
        await provider.aclose()
    elapsed = time.perf_counter() - start
    assert response.message.content == "after the wait"
    assert call.path == ["claude:rate_limit", "claude:ok"]
    assert 0.3 <= elapsed < 3
    assert len(upstream.requests) == 2
