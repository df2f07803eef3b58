"""Our OpenAI provider against a real third-party upstream: ``llama_cpp.server`` with SmolLM2.

The server runs the bundled GGUF. It is started through a tiny launcher that turns off llama.cpp's
"extra" weight buffers before running ``python -m llama_cpp.server`` unchanged: the AMX kernels
they select fault (SIGSEGV on ``ldtilecfg``) under this machine's hypervisor, the same reason the
local provider loads with ``extra_buffers`` off.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from elevenfactor.config import DeploymentConfig, ProviderConfig
from elevenfactor.models import (
    Call,
    Model,
    ModelSettings,
    ResponseFormat,
    StreamChunk,
    ToolDefinition,
    UserMessage,
    wrap_deployment,
)
from elevenfactor.models.providers.local import default_model_path
from elevenfactor.models.providers.openai import OpenAIProvider
from tests.conftest import free_port

pytestmark = [pytest.mark.slow, pytest.mark.integration]

LAUNCHER = """
import runpy
import llama_cpp.llama_cpp as low
original = low.llama_model_default_params
def params():
    p = original()
    p.use_extra_bufts = False
    return p
low.llama_model_default_params = params
runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
"""


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    gguf = default_model_path()
    assert gguf is not None and gguf.is_file()
    port = free_port()
    log: Path = tmp_path_factory.mktemp("llama_server") / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                LAUNCHER,
                "--model",
                str(gguf),
                "--model_alias",
                "smollm2",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--n_ctx",
                "2048",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(
                    f"llama_cpp.server exited with {proc.returncode}:\n"
                    f"{log.read_text(errors='replace')[-2000:]}"
                )
            try:
                with urllib.request.urlopen(f"{base}/models", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("llama_cpp.server did not answer /v1/models within 60 s")
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture
async def model(server_url: str) -> AsyncIterator[Model]:
    provider = OpenAIProvider("llama-server", ProviderConfig(type="openai", base_url=server_url))
    config = DeploymentConfig(
        provider="llama-server",
        model="smollm2",
        timeout=60,
        params={"temperature": 0.7, "repeat_penalty": 1.3, "seed": 7},
    )
    yield wrap_deployment(provider.deployment("upstream", config), "llama-server", config)
    await provider.aclose()


def _ask(text: str) -> list[UserMessage]:
    return [UserMessage(content=text)]


async def test_plain_request(model: Model) -> None:
    call = Call()
    response = await model.request(
        _ask("What is the capital of France?"), ModelSettings(max_tokens=32), call
    )
    assert response.message.content and response.message.content.strip()
    assert response.finish_reason in ("stop", "length")
    assert response.usage.input_tokens > 5 and response.usage.output_tokens > 0
    assert call.path == ["upstream:ok"]


async def test_streaming(model: Model) -> None:
    call = Call()
    chunks: list[StreamChunk] = [
        c
        async for c in model.request_stream(
            _ask("Tell me about the sea."), ModelSettings(max_tokens=24), call
        )
    ]
    assert len([c for c in chunks if c.text]) >= 2
    assert chunks[-1].finish_reason in ("stop", "length")
    assert call.path == ["upstream:ok"]


async def test_tool_call_with_a_named_tool(model: Model) -> None:
    # llama_cpp.server constrains arguments to the schema when tool_choice names a function.
    # Its grammar lets a free string run on (raw newlines included) until max_tokens, so the
    # city is an enum here: the test is about the plumbing, not the model's judgement.
    tool = ToolDefinition(
        name="get_weather",
        description="Current weather for a city",
        parameters={
            "type": "object",
            "properties": {"city": {"type": "string", "enum": ["Paris", "London", "Tokyo"]}},
            "required": ["city"],
        },
    )
    response = await model.request(
        _ask("What's the weather in Paris?"),
        ModelSettings(max_tokens=48, tools=[tool], tool_choice="get_weather"),
        Call(),
    )
    assert response.finish_reason == "tool_calls"
    [call] = response.message.tool_calls
    assert call.name == "get_weather"
    args = json.loads(call.arguments)
    assert set(args) == {"city"} and args["city"] in ("Paris", "London", "Tokyo")


async def test_json_object_response_format(model: Model) -> None:
    # llama_cpp.server accepts json_object (not json_schema) as a response format
    response = await model.request(
        _ask("Describe a cat as a JSON object."),
        ModelSettings(max_tokens=48, response_format=ResponseFormat(type="json_object")),
        Call(),
    )
    text = (response.message.content or "").lstrip()
    assert text.startswith("{")
    if response.finish_reason == "stop":
        assert isinstance(json.loads(text, strict=False), dict)
