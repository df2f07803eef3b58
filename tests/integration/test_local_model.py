"""The bundled local provider against the real SmolLM2-135M model (llama.cpp, in-process)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from elevenfactor.config import DeploymentConfig, ProviderConfig, default_project
from elevenfactor.errors import ConfigError, ContextWindowExceeded, ModelTimeout
from elevenfactor.models import (
    AssistantMessage,
    Call,
    ModelRegistry,
    ModelSettings,
    ResponseFormat,
    StreamChunk,
    ToolCall,
    ToolDefinition,
    ToolMessage,
    UserMessage,
)
from elevenfactor.models._admission import client_timeout
from elevenfactor.models.providers.local import LocalModel, LocalProvider, default_model_path

pytestmark = pytest.mark.slow

PARAMS = {"temperature": 0.7, "repeat_penalty": 1.3, "seed": 7}
WEATHER = ToolDefinition(
    name="get_weather",
    description="Current weather for a city",
    parameters={
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        },
        "required": ["city", "unit"],
    },
)


def _deployment_config(context_window: int = 2048) -> DeploymentConfig:
    return DeploymentConfig(
        provider="local",
        model="SmolLM2-135M-Instruct-Q4_1",
        context_window=context_window,
        params=PARAMS,
    )


@pytest.fixture(scope="module")
def provider() -> Iterator[LocalProvider]:
    prov = LocalProvider("local", ProviderConfig(type="local"))
    yield prov
    asyncio.run(prov.aclose())


@pytest.fixture(scope="module")
def model(provider: LocalProvider) -> LocalModel:
    return provider.deployment("smollm2", _deployment_config())


def _ask(text: str) -> list[UserMessage]:
    return [UserMessage(content=text)]


async def test_plain_answer(model: LocalModel) -> None:
    response = await model.request(
        _ask("What is the capital of France?"), ModelSettings(max_tokens=32), Call()
    )
    assert response.message.content and response.message.content.strip()
    assert response.finish_reason in ("stop", "length")
    assert response.usage.input_tokens > 5
    assert 0 < response.usage.output_tokens <= 33
    assert response.model == "SmolLM2-135M-Instruct-Q4_1"


async def test_stream_yields_chunks_then_finish_and_usage(model: LocalModel) -> None:
    chunks: list[StreamChunk] = [
        c
        async for c in model.request_stream(
            _ask("Tell me about the sea."), ModelSettings(max_tokens=24), Call()
        )
    ]
    texts = [c.text for c in chunks if c.text]
    assert len(texts) >= 2
    assert all(c.finish_reason is None for c in chunks[:-1])
    last = chunks[-1]
    assert last.finish_reason in ("stop", "length")
    assert last.usage is not None
    assert last.usage.input_tokens > 5 and last.usage.output_tokens > 0


async def _tokens_in_context_once_idle(model: LocalModel) -> int:
    """Tokens the last long generation evaluated, read on its instance's (FIFO) worker thread."""
    job = model.pool.instances[0].submit(lambda llama: int(llama.n_tokens))
    return await asyncio.wait_for(asyncio.wrap_future(job), 60)


async def test_leaving_a_stream_stops_generation(model: LocalModel) -> None:
    stream = model.request_stream(
        _ask("Write a very long story about a dragon."), ModelSettings(max_tokens=1000), Call()
    )
    async for chunk in stream:
        assert chunk.text
        break
    await stream.aclose()
    # the abandoned generation stopped near its start instead of running to 1000 tokens
    assert await _tokens_in_context_once_idle(model) < 300
    response = await model.request(_ask("Hi"), ModelSettings(max_tokens=8), Call())
    assert response.message.content is not None


async def test_cancelled_request_stops_generation(model: LocalModel) -> None:
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(
            model.request(_ask("Write a very long story."), ModelSettings(max_tokens=1000), Call()),
            0.3,
        )
    assert await _tokens_in_context_once_idle(model) < 300
    response = await model.request(_ask("Hi"), ModelSettings(max_tokens=8), Call())
    assert response.message.content is not None


@pytest.mark.parametrize("choice", ["required", "get_weather"])
async def test_tool_call_has_schema_valid_arguments(model: LocalModel, choice: str) -> None:
    response = await model.request(
        _ask("What's the weather in Paris?"),
        ModelSettings(max_tokens=64, tools=[WEATHER], tool_choice=choice),
        Call(),
    )
    assert response.finish_reason == "tool_calls"
    [call] = response.message.tool_calls
    assert call.name == "get_weather"
    assert call.id.startswith("call_")
    args = json.loads(call.arguments)
    assert set(args) == {"city", "unit"}
    assert isinstance(args["city"], str)
    assert args["unit"] in ("celsius", "fahrenheit")


async def test_auto_tool_choice_gives_a_call_or_text(model: LocalModel) -> None:
    response = await model.request(
        _ask("What's the weather in Paris?"),
        ModelSettings(max_tokens=64, tools=[WEATHER], tool_choice="auto"),
        Call(),
    )
    if response.message.tool_calls:
        assert response.finish_reason == "tool_calls"
        assert set(json.loads(response.message.tool_calls[0].arguments)) == {"city", "unit"}
    else:
        assert response.message.content is not None


async def test_tool_history_renders_and_stream_with_tools(model: LocalModel) -> None:
    history = [
        UserMessage(content="What's the weather in Paris?"),
        AssistantMessage(
            tool_calls=[
                ToolCall(
                    id="call_1",
                    name="get_weather",
                    arguments='{"city": "Paris", "unit": "celsius"}',
                )
            ]
        ),
        ToolMessage(tool_call_id="call_1", content='{"temperature": 21, "sky": "sunny"}'),
    ]
    response = await model.request(history, ModelSettings(max_tokens=32), Call())
    assert response.message.content
    chunks = [
        c
        async for c in model.request_stream(
            history[:1],
            ModelSettings(max_tokens=64, tools=[WEATHER], tool_choice="required"),
            Call(),
        )
    ]
    assert chunks[-1].finish_reason == "tool_calls"
    deltas = [d for c in chunks for d in c.tool_calls]
    assert deltas and deltas[0].name == "get_weather"
    assert set(json.loads(deltas[0].arguments)) == {"city", "unit"}


async def test_structured_output_matches_the_schema(model: LocalModel) -> None:
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "age": {"type": "integer"},
            "pets": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["name", "age", "pets"],
    }
    response = await model.request(
        _ask("Invent a person: a name, an age and their pets."),
        ModelSettings(
            max_tokens=64, response_format=ResponseFormat(type="json_schema", json_schema=schema)
        ),
        Call(),
    )
    assert response.finish_reason == "stop"
    obj = json.loads(response.message.content or "")
    assert set(obj) == {"name", "age", "pets"}
    assert isinstance(obj["name"], str)
    assert isinstance(obj["age"], int) and not isinstance(obj["age"], bool)
    assert all(isinstance(p, str) for p in obj["pets"])


async def test_json_object_output(model: LocalModel) -> None:
    response = await model.request(
        _ask("Describe a cat as JSON."),
        ModelSettings(max_tokens=48, response_format=ResponseFormat(type="json_object")),
        Call(),
    )
    if response.finish_reason == "stop":
        assert isinstance(json.loads(response.message.content or ""), dict)
    else:
        assert (response.message.content or "").lstrip().startswith("{")


async def test_prompt_longer_than_the_context_window(provider: LocalProvider) -> None:
    small = provider.deployment("small", _deployment_config(context_window=256))
    assert small.context_window == 256
    long = _ask("word " * 400)
    started = time.perf_counter()
    with pytest.raises(ContextWindowExceeded) as info:
        await small.request(long, ModelSettings(max_tokens=8), Call())
    assert "256" in str(info.value)
    assert info.value.error_class == "context_window"
    with pytest.raises(ContextWindowExceeded):
        async for _ in small.request_stream(long, ModelSettings(max_tokens=8), Call()):
            pass
    assert time.perf_counter() - started < 30  # counted up front, nothing generated


async def test_deployments_share_one_loaded_model(
    provider: LocalProvider, model: LocalModel
) -> None:
    other = provider.deployment("smollm2-copy", _deployment_config())
    await model.request(_ask("Hello"), ModelSettings(max_tokens=4), Call())
    await other.request(_ask("Hello"), ModelSettings(max_tokens=4), Call())
    assert other.pool is model.pool
    assert all(instance.loads <= 1 for instance in model.pool.instances)
    assert any(instance.llama is not None for instance in model.pool.instances)


async def test_default_project_route_uses_the_local_model() -> None:
    registry = ModelRegistry.from_project(default_project())
    try:
        resolved = registry.routes["default"]
        call = Call()
        response = await resolved.request(_ask("Say hello."), ModelSettings(max_tokens=16), call)
        assert response.message.content
        assert call.path == ["smollm2:ok"]
    finally:
        for prov in registry.providers.values():
            await prov.aclose()


def test_missing_model_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="model file not found"):
        LocalProvider(
            "local",
            ProviderConfig(type="local", options={"model_path": str(tmp_path / "missing.gguf")}),
        )
    bundled = default_model_path()
    assert bundled is not None and bundled.is_file()


@pytest.fixture
def quick_provider() -> Iterator[LocalProvider]:
    """One full instance that stops generating after 1.5 s."""
    prov = LocalProvider(
        "quick",
        ProviderConfig(type="local", options={"generation_timeout": 1.5, "express_instances": 0}),
    )
    yield prov
    asyncio.run(prov.aclose())


async def test_the_generation_deadline_keeps_what_was_generated(
    quick_provider: LocalProvider,
) -> None:
    model = quick_provider.deployment("quick", _deployment_config())
    story = _ask("Write a very long story about a dragon.")
    await model.request(story, ModelSettings(max_tokens=1), Call())  # load; cache the prompt
    started = time.perf_counter()
    response = await model.request(story, ModelSettings(max_tokens=1000), Call())
    assert time.perf_counter() - started < 1.5 + 1.0
    assert response.finish_reason == "length"
    assert response.message.content
    assert 0 < response.usage.output_tokens < 1000


async def test_a_client_timeout_bounds_the_generation(model: LocalModel) -> None:
    token = client_timeout.set(1.0)
    started = time.perf_counter()
    try:
        response = await model.request(
            _ask("Write a very long story about a castle."), ModelSettings(max_tokens=1000), Call()
        )
        assert response.finish_reason == "length"
    except ModelTimeout:  # a busy machine: not even the prompt was evaluated in time
        pass
    finally:
        client_timeout.reset(token)
    assert time.perf_counter() - started < 1.0 + 1.0


async def test_a_huge_prompt_is_refused_before_tokenising(model: LocalModel) -> None:
    started = time.perf_counter()
    with pytest.raises(ContextWindowExceeded) as info:
        await model.request(_ask("x" * 3_000_000), ModelSettings(max_tokens=8), Call())
    assert time.perf_counter() - started < 0.5
    assert "at least" in str(info.value) and "2048" in str(info.value)
    with pytest.raises(ContextWindowExceeded):
        async for _ in model.request_stream(
            _ask("x" * 3_000_000), ModelSettings(max_tokens=8), Call()
        ):
            pass


async def test_output_tokens_are_the_tokens_generated(model: LocalModel) -> None:
    response = await model.request(
        _ask("Write a very long story about the sea."), ModelSettings(max_tokens=10), Call()
    )
    if response.finish_reason == "length":
        assert response.usage.output_tokens == 10
    chunks = [
        c
        async for c in model.request_stream(
            _ask("Write a very long story about the sea."), ModelSettings(max_tokens=10), Call()
        )
    ]
    last = chunks[-1]
    assert last.usage is not None
    assert last.usage.input_tokens == response.usage.input_tokens
    if last.finish_reason == "length":
        assert last.usage.output_tokens == 10


async def test_traced_calls_are_genai_client_spans(model: LocalModel) -> None:
    """With tracing on, a whole answer and a stream of the local model are each one GenAI
    client span with the response model, token usage and finish reason."""
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from elevenfactor.observe import _tracing as tracing

    exporter = InMemorySpanExporter()
    assert tracing.setup_tracing(exporters=[exporter], content=False)
    try:
        await model.request(_ask("Say hi."), ModelSettings(max_tokens=8, seed=3), Call())
        async for _ in model.request_stream(_ask("Say hi."), ModelSettings(max_tokens=8), Call()):
            pass
        for batcher in tracing._batchers:
            assert batcher.force_flush(5000)
        spans = [s for s in exporter.get_finished_spans() if s.name.startswith("chat ")]
    finally:
        tracing.shutdown_tracing(1.0)
    assert [s.name for s in spans] == ["chat SmolLM2-135M-Instruct-Q4_1"] * 2
    for span in spans:
        attrs = dict(span.attributes or {})
        assert attrs["gen_ai.system"] == "llama.cpp"
        assert attrs["gen_ai.request.model"] == "SmolLM2-135M-Instruct-Q4_1"
        assert attrs["gen_ai.response.model"] == "SmolLM2-135M-Instruct-Q4_1"
        assert attrs["gen_ai.usage.input_tokens"] > 5
        assert 0 < attrs["gen_ai.usage.output_tokens"] <= 9
        assert attrs["gen_ai.response.finish_reasons"] in (("stop",), ("length",))
    assert dict(spans[0].attributes or {})["gen_ai.request.seed"] == 3
    assert dict(spans[1].attributes or {})["elevenfactor.stream"] is True
