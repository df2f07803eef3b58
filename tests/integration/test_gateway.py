"""The gateway through the official ``openai`` client, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from elevenfactor.config import Settings, parse_project
from elevenfactor.governance import create_key, local_admin, revoke_key
from elevenfactor.server import Gateway
from elevenfactor.store import open_store
from tests.support.server import on_gateway, running_gateway

PROJECT = parse_project(
    {
        "providers": {"t": {"type": "test"}},
        "models": {
            "echo": {
                "provider": "t",
                "model": "echo-1",
                "price": {"input_per_mtok": 1.0, "output_per_mtok": 2.0},
            },
            "echo-big": {"provider": "t", "model": "echo-2", "context_window": 100000},
        },
        "routes": {
            "default": {"chain": ["echo"]},
            "tagged": {"chain": ["echo"], "rules": [{"tags": ["big"], "use": "echo-big"}]},
        },
    }
)


async def _migrated(url: str) -> None:
    from elevenfactor.store import migrate

    db = await open_store(url)
    await migrate(db)
    await db.close()


async def _key(url: str, revoke: bool = False) -> str:
    db = await open_store(url)
    key, secret = await create_key(db, local_admin("cli"), "tests")
    if revoke:
        await revoke_key(db, local_admin("cli"), key.id)
    await db.close()
    return secret


@pytest.fixture
async def gateway(store_url: str, tmp_path: Path) -> Iterator[tuple[str, Gateway, str]]:
    await _migrated(store_url)
    secret = await _key(store_url)
    settings = Settings(database_url=store_url, data_dir=tmp_path, max_body_bytes=20_000)
    with running_gateway(settings, PROJECT) as (base, gw):
        yield base, gw, secret


def _client(base: str, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=base + "/v1", api_key=key, max_retries=0)


async def _rows(gw: Gateway, want: int) -> list[tuple[object, ...]]:
    assert gw.recorder is not None and gw.store is not None
    deadline = time.monotonic() + 10
    recorder, store = gw.recorder, gw.store
    while True:
        rows = await on_gateway(
            gw,
            lambda: store.fetchall(
                "SELECT trace_id, route, deployment, model, stream, status, error_class,"
                " tokens_in, tokens_out, cost, failover_path, request_hash, response_hash"
                " FROM model_calls ORDER BY created_at"
            ),
        )
        if len(rows) >= want or time.monotonic() > deadline:
            return rows
        await on_gateway(gw, recorder.flush)


async def test_plain_completion_is_logged_and_recorded(
    gateway: tuple[str, Gateway, str], capsys: pytest.CaptureFixture[str]
) -> None:
    base, gw, key = gateway
    client = _client(base, key)
    raw = await client.chat.completions.with_raw_response.create(
        model="default", messages=[{"role": "user", "content": "hello gateway"}]
    )
    completion = raw.parse()
    trace_id = raw.headers["x-trace-id"]
    assert len(trace_id) == 32
    assert completion.choices[0].message.content == "echo: hello gateway"
    assert completion.usage is not None and completion.usage.completion_tokens > 0
    rows = await _rows(gw, 1)
    assert rows[0][:7] == (trace_id, "default", "echo", "echo-1", 0, "ok", None)
    assert rows[0][9] is not None and rows[0][9] > 0  # cost from the configured price
    assert json.loads(str(rows[0][10])) == ["echo:ok"]
    assert str(rows[0][11]).startswith("sha256:") and str(rows[0][12]).startswith("sha256:")
    await client.close()


async def test_streaming(gateway: tuple[str, Gateway, str]) -> None:
    base, gw, key = gateway
    client = _client(base, key)
    stream = await client.chat.completions.create(
        model="default",
        stream=True,
        stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "stream me please"}],
    )
    text, usage, finishes = "", None, []
    async for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            if chunk.choices[0].finish_reason:
                finishes.append(chunk.choices[0].finish_reason)
        if chunk.usage:
            usage = chunk.usage
    assert text == "echo: stream me please"
    assert finishes == ["stop"]
    assert usage is not None and usage.total_tokens > 0
    rows = await _rows(gw, 1)
    assert rows[0][4] == 1 and rows[0][5] == "ok"
    await client.close()


async def test_tool_calls(gateway: tuple[str, Gateway, str]) -> None:
    base, _, key = gateway
    client = _client(base, key)
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather for a city",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            },
        }
    ]
    completion = await client.chat.completions.create(
        model="default",
        tools=tools,  # type: ignore[arg-type]
        messages=[{"role": "user", "content": "weather in Paris?"}],
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    assert "city" in json.loads(call.function.arguments)  # type: ignore[union-attr]
    follow = await client.chat.completions.create(
        model="default",
        tools=tools,  # type: ignore[arg-type]
        messages=[
            {"role": "user", "content": "weather in Paris?"},
            {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
            {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
        ],
    )
    assert follow.choices[0].finish_reason == "stop"
    await client.close()


async def test_structured_output(gateway: tuple[str, Gateway, str]) -> None:
    base, _, key = gateway
    client = _client(base, key)
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
    }
    completion = await client.chat.completions.create(
        model="default",
        messages=[{"role": "user", "content": "a person"}],
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "person", "schema": schema},
        },
    )
    data = json.loads(completion.choices[0].message.content or "")
    assert set(data) == {"name", "age"} and isinstance(data["age"], int)
    await client.close()


async def test_tags_route_by_rule(gateway: tuple[str, Gateway, str]) -> None:
    base, _, key = gateway
    client = _client(base, key)
    raw = await client.chat.completions.with_raw_response.create(
        model="tagged",
        messages=[{"role": "user", "content": "x"}],
        extra_headers={"x-elevenfactor-tags": "big"},
    )
    assert raw.parse().model == "echo-2"
    assert raw.headers["x-elevenfactor-route"] == "echo-big"
    await client.close()


async def test_models_lists_routes_and_deployments(gateway: tuple[str, Gateway, str]) -> None:
    base, _, key = gateway
    client = _client(base, key)
    ids = [m.id async for m in client.models.list()]
    assert ids == ["default", "tagged", "echo", "echo-big"]
    await client.close()


@pytest.mark.parametrize(
    ("body", "status", "code", "param"),
    [
        (b"{not json", 400, "invalid_json", "body"),
        (b"[]", 400, "invalid_type", "body"),
        (
            b'{"messages": [{"role": "user", "content": "x"}]}',
            400,
            "missing_required_parameter",
            "model",
        ),
        (
            b'{"model": "nope", "messages": [{"role": "user", "content": "x"}]}',
            404,
            "model_not_found",
            "model",
        ),
        (b'{"model": "default", "messages": "hi"}', 400, "invalid_type", "messages"),
        (
            b'{"model": "default", "messages": [{"role": "user", "content": "x"}],'
            b' "temperature": "hot"}',
            400,
            "invalid_type",
            "temperature",
        ),
        (
            b'{"model": "default", "messages": [{"role": "user", "content": "x"}],'
            b' "temperature": 7}',
            400,
            "invalid_value",
            "temperature",
        ),
        (
            b'{"model": "default", "messages": [{"role": "wizard", "content": "x"}]}',
            400,
            "invalid_value",
            "messages[0].role",
        ),
        (
            b'{"model": "default", "messages": [{"role": "user", "content": [{"type":'
            b' "image_url"}]}]}',
            400,
            "unsupported_content",
            "messages[0].content[0]",
        ),
        (
            b'{"model": "default", "messages": [{"role": "user", "content": "x"}],'
            b' "frobnicate": 1}',
            400,
            "unknown_parameter",
            "frobnicate",
        ),
        (
            b'{"model": "default", "messages": [{"role": "user", "content": "'
            + b"x" * 30_000
            + b'"}]}',
            413,
            "request_too_large",
            "body",
        ),
    ],
)
async def test_bad_requests_get_openai_errors(
    gateway: tuple[str, Gateway, str], body: bytes, status: int, code: str, param: str
) -> None:
    base, _, key = gateway
    async with httpx.AsyncClient(base_url=base) as http:
        resp = await http.post(
            "/v1/chat/completions",
            content=body,
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        )
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert err["code"] == code and err["param"] == param and err["message"]
    assert resp.headers["x-trace-id"]


async def test_authentication(gateway: tuple[str, Gateway, str], store_url: str) -> None:
    base, _, _ = gateway
    revoked = await _key(store_url, revoke=True)
    async with httpx.AsyncClient(base_url=base) as http:
        payload = {"model": "default", "messages": [{"role": "user", "content": "x"}]}
        for headers in (
            {},
            {"Authorization": "Bearer ef_wrong"},
            {"Authorization": f"Bearer {revoked}"},
            {"Authorization": "Basic x"},
        ):
            resp = await http.post("/v1/chat/completions", json=payload, headers=headers)
            assert resp.status_code == 401
            assert resp.json()["error"]["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        await _client(base, "ef_nope").chat.completions.create(
            model="default", messages=[{"role": "user", "content": "x"}]
        )


async def test_health_readiness_and_unknown_paths(gateway: tuple[str, Gateway, str]) -> None:
    base, gw, _ = gateway
    async with httpx.AsyncClient(base_url=base) as http:
        assert (await http.get("/healthz")).json() == {"status": "ok"}
        assert (await http.get("/readyz")).status_code == 200
        missing = await http.get("/v2/nothing")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
        wrong = await http.get("/v1/chat/completions")
        assert wrong.status_code == 405
        gw.start_draining()
        assert (await http.get("/readyz")).status_code == 503
        drained = await http.get("/v1/models")
        assert drained.status_code == 503
        assert drained.json()["error"]["code"] == "shutting_down"
        assert (await http.get("/healthz")).status_code == 200


async def test_trace_ids_on_every_response(gateway: tuple[str, Gateway, str]) -> None:
    base, _, key = gateway
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    async with httpx.AsyncClient(base_url=base) as http:
        resp = await http.post(
            "/v1/chat/completions",
            json={"model": "default", "messages": [{"role": "user", "content": "x"}]},
            headers={
                "Authorization": f"Bearer {key}",
                "traceparent": f"00-{trace}-00f067aa0ba902b7-01",
            },
        )
        assert resp.headers["x-trace-id"] == trace
        for path in ("/v1/models", "/healthz", "/nowhere"):
            got = await http.get(path, headers={"Authorization": f"Bearer {key}"})
            assert len(got.headers["x-trace-id"]) == 32
