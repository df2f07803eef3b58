"""Every chat parameter is served or refused (issue 7), through the official ``openai`` client.

Refusals are 400s naming the parameter, decided while parsing: no model runs for them (checked
against the call log). Parsing does not touch the store, so SQLite alone is enough here.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from elevenfactor.config import Settings, parse_project
from elevenfactor.governance import create_key, local_admin
from elevenfactor.server import Gateway
from elevenfactor.store import migrate, open_store
from tests.support.server import on_gateway, running_gateway

PROJECT = parse_project(
    {
        "providers": {"t": {"type": "test"}},
        "models": {"echo": {"provider": "t", "model": "echo-1"}},
        "routes": {"default": {"chain": ["echo"]}},
    }
)
HI: Any = [{"role": "user", "content": "hi"}]
WEATHER = {
    "name": "get_weather",
    "description": "Weather for a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}
OTHER = {"name": "get_time", "parameters": {"type": "object", "properties": {}}}
TOOLS: Any = [{"type": "function", "function": WEATHER}, {"type": "function", "function": OTHER}]


def _format(schema: Any) -> Any:
    return {"type": "json_schema", "json_schema": {"name": "out", "schema": schema}}


def _tool(parameters: Any) -> Any:
    return [{"type": "function", "function": {"name": "f", "parameters": parameters}}]


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[tuple[openai.AsyncOpenAI, Gateway, str]]:
    url = f"sqlite:///{tmp_path}/chat.db"
    db = await open_store(url)
    await migrate(db)
    _, secret = await create_key(db, local_admin("cli"), "tests")
    await db.close()
    settings = Settings(database_url=url, data_dir=tmp_path)
    with running_gateway(settings, PROJECT) as (base, gw):
        client = openai.AsyncOpenAI(base_url=base + "/v1", api_key=secret, max_retries=0)
        yield client, gw, base
        await client.close()


REFUSED: list[tuple[dict[str, Any], str, str]] = [
    ({"n": 2}, "n", "unsupported_parameter"),
    ({"tool_choice": "required"}, "tool_choice", "invalid_value"),
    ({"tool_choice": {"type": "function", "function": {"name": "f"}}}, "tool_choice", ""),
    ({"n": 0}, "n", "invalid_value"),
    ({"logprobs": True}, "logprobs", "unsupported_parameter"),
    ({"logprobs": True, "top_logprobs": 3}, "logprobs", "unsupported_parameter"),
    ({"top_logprobs": 3}, "top_logprobs", "invalid_value"),
    ({"functions": [WEATHER], "tools": TOOLS}, "functions", "invalid_request"),
    ({"function_call": "auto", "tool_choice": "auto", "tools": TOOLS}, "function_call", ""),
    ({"functions": [WEATHER], "function_call": {"name": "nope"}}, "function_call", ""),
    ({"functions": [WEATHER], "function_call": "required"}, "function_call", ""),
    ({"functions": [{"parameters": {}}]}, "functions[0]", "invalid_type"),
    (
        {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}},
        "tool_choice",
        "invalid_value",
    ),
    ({"max_completion_tokens": 0}, "max_completion_tokens", "invalid_value"),
    ({"max_tokens": 0}, "max_tokens", "invalid_value"),
    ({"max_tokens": -5}, "max_tokens", "invalid_value"),
    ({"temperature": 2.5}, "temperature", "invalid_value"),
    ({"top_p": 1.5}, "top_p", "invalid_value"),
    ({"presence_penalty": 1e308}, "presence_penalty", "invalid_value"),
    ({"frequency_penalty": -1e308}, "frequency_penalty", "invalid_value"),
    ({"logit_bias": "x"}, "logit_bias", "invalid_value"),
    ({"logit_bias": {"50256": 500}}, "logit_bias", "invalid_value"),
    ({"logit_bias": {"not-a-token": 1}}, "logit_bias", "invalid_value"),
    ({"logit_bias": {"50256": -100}}, "logit_bias", "unsupported_parameter"),
    ({"seed": 1.5}, "seed", "invalid_type"),
    ({"seed": "7"}, "seed", "invalid_type"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop", "invalid_value"),
    ({"stop": 5}, "stop", "invalid_type"),
    ({"response_format": {"type": "banana"}}, "response_format.type", "invalid_value"),
    (
        {"response_format": _format({"type": "banana"})},
        "response_format.json_schema.schema",
        "invalid_schema",
    ),
    (
        {"response_format": _format({"type": "object", "properties": {"a": {"$ref": "#/x"}}})},
        "response_format.json_schema.schema",
        "invalid_schema",
    ),
    (
        {"response_format": _format({"$ref": "https://example.com/s.json"})},
        "response_format.json_schema.schema",
        "invalid_schema",
    ),
    (
        {"response_format": _format({"type": "string", "pattern": "("})},
        "response_format.json_schema.schema",
        "invalid_schema",
    ),
    ({"tools": _tool({"type": "banana"})}, "tools[0].function.parameters", "invalid_schema"),
    ({"tools": _tool({"$ref": "#/nowhere"})}, "tools[0].function.parameters", "invalid_schema"),
    ({"tools": _tool("object")}, "tools[0].function.parameters", "invalid_type"),
    (
        {"functions": [{"name": "f", "parameters": {"required": "city"}}]},
        "functions[0].parameters",
        "invalid_schema",
    ),
]


@pytest.mark.parametrize(("params", "param", "code"), REFUSED)
async def test_unserved_or_invalid_parameters_are_refused_by_name(
    gateway: tuple[openai.AsyncOpenAI, Gateway, str], params: dict[str, Any], param: str, code: str
) -> None:
    client, _, _ = gateway
    with pytest.raises(openai.BadRequestError) as caught:
        await client.chat.completions.create(model="default", messages=HI, **params)
    err = caught.value
    assert err.status_code == 400 and err.param == param, err.body
    assert code == "" or err.code == code, err.body
    assert isinstance(err.body, dict) and err.body["message"]


async def test_refused_requests_reach_no_model(
    gateway: tuple[openai.AsyncOpenAI, Gateway, str],
) -> None:
    """Schemas and bounds are checked before any model runs: only the valid call is logged."""
    client, gw, _ = gateway
    for params, _, _ in REFUSED:
        with pytest.raises(openai.BadRequestError):
            await client.chat.completions.create(model="default", messages=HI, **params)
    await client.chat.completions.create(model="default", messages=HI)
    assert gw.recorder is not None and gw.store is not None
    deadline = time.monotonic() + 10
    rows: list[Any] = []
    recorder, store = gw.recorder, gw.store
    while not rows and time.monotonic() < deadline:
        await on_gateway(gw, recorder.flush)
        rows = await on_gateway(gw, lambda: store.fetchall("SELECT status FROM model_calls"))
    assert [tuple(r) for r in rows] == [("ok",)]


async def test_served_parameters_at_their_bounds(
    gateway: tuple[openai.AsyncOpenAI, Gateway, str],
) -> None:
    client, _, _ = gateway
    completion = await client.chat.completions.create(
        model="default",
        messages=HI,
        n=1,
        logprobs=False,
        logit_bias={},
        temperature=0,
        top_p=1,
        presence_penalty=2,
        frequency_penalty=-2,
        max_completion_tokens=1,
        max_tokens=5,
        seed=-(2**40),
        stop=["a", "b", "c", "d"],
    )
    assert len(completion.choices) == 1
    # max_completion_tokens (1) wins over max_tokens (5): one word of "echo: hi".
    assert completion.choices[0].message.content == "echo:"
    assert completion.choices[0].finish_reason == "length"


async def test_legacy_functions_are_translated_to_tools(
    gateway: tuple[openai.AsyncOpenAI, Gateway, str],
) -> None:
    client, _, _ = gateway
    legacy: dict[str, Any] = {"functions": [OTHER, WEATHER]}
    called = await client.chat.completions.create(
        model="default", messages=HI, function_call={"name": "get_weather"}, **legacy
    )
    choice = called.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls or []
    assert call.type == "function" and call.function.name == "get_weather"
    assert "city" in json.loads(call.function.arguments)
    first = await client.chat.completions.create(model="default", messages=HI, **legacy)
    assert [c.function.name for c in first.choices[0].message.tool_calls or []] == ["get_time"]
    plain = await client.chat.completions.create(
        model="default", messages=HI, function_call="none", **legacy
    )
    assert plain.choices[0].message.content == "echo: hi"
    assert not plain.choices[0].message.tool_calls


async def test_tool_choice_naming_a_listed_tool_calls_it(
    gateway: tuple[openai.AsyncOpenAI, Gateway, str],
) -> None:
    client, _, _ = gateway
    completion = await client.chat.completions.create(
        model="default",
        messages=HI,
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_time"}},
    )
    [call] = completion.choices[0].message.tool_calls or []
    assert call.type == "function" and call.function.name == "get_time"


async def test_schemas_with_local_refs_are_served(
    gateway: tuple[openai.AsyncOpenAI, Gateway, str],
) -> None:
    client, _, _ = gateway
    schema = {
        "type": "object",
        "$defs": {"name": {"type": "string"}, "a/b": {"type": "integer"}},
        "properties": {"who": {"$ref": "#/$defs/name"}, "n": {"$ref": "#/$defs/a~1b"}},
        "required": ["who", "n"],
    }
    completion = await client.chat.completions.create(
        model="default",
        messages=HI,
        response_format=_format(schema),
    )
    assert set(json.loads(completion.choices[0].message.content or "")) == {"who", "n"}
    called = await client.chat.completions.create(
        model="default",
        messages=HI,
        tools=_tool(schema),
    )
    [call] = called.choices[0].message.tool_calls or []
    assert call.type == "function" and set(json.loads(call.function.arguments)) == {"who", "n"}


@pytest.mark.parametrize("ctype", ["text/plain", "application/x-www-form-urlencoded", None])
async def test_chat_needs_a_json_content_type(
    gateway: tuple[openai.AsyncOpenAI, Gateway, str], ctype: str | None
) -> None:
    client, _, base = gateway
    headers = {"Authorization": f"Bearer {client.api_key}"}
    if ctype:
        headers["Content-Type"] = ctype
    body = json.dumps({"model": "default", "messages": HI}).encode()
    async with httpx.AsyncClient(base_url=base) as http:
        resp = await http.post("/v1/chat/completions", content=body, headers=headers)
    assert resp.status_code == 415, resp.text
    err = resp.json()["error"]
    assert err["code"] == "unsupported_media_type" and err["param"] == "content-type"
