"""Failover seen from a client: through the HTTP gateway to fault-injecting upstreams."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import openai
import pytest

from elevenfactor.config import Settings, parse_project
from elevenfactor.server import Gateway
from elevenfactor.store import migrate, open_store
from tests.support.fault_upstream import FaultUpstream
from tests.support.server import on_gateway, running_gateway

pytestmark = pytest.mark.integration


@pytest.fixture
async def upstreams() -> AsyncIterator[tuple[FaultUpstream, FaultUpstream]]:
    a = await FaultUpstream(name="a").start()
    b = await FaultUpstream(name="b").start()
    try:
        yield a, b
    finally:
        await a.stop()
        await b.stop()


@pytest.fixture
async def gateway(
    upstreams: tuple[FaultUpstream, FaultUpstream], tmp_path: Path
) -> AsyncIterator[tuple[str, Gateway]]:
    a, b = upstreams
    url = f"sqlite:///{tmp_path}/gw.db"
    db = await open_store(url)
    await migrate(db)
    await db.close()
    project = parse_project(
        {
            "providers": {
                "pa": {"type": "openai", "base_url": a.base_url, "api_key": "k"},
                "pb": {"type": "openai", "base_url": b.base_url, "api_key": "k"},
            },
            "models": {
                "a": {"provider": "pa", "model": "up-a", "timeout": 1, "retry": {"attempts": 1}},
                "b": {"provider": "pb", "model": "up-b", "timeout": 1, "retry": {"attempts": 1}},
            },
            "routes": {"default": {"chain": ["a", "b"]}},
        }
    )
    settings = Settings(database_url=url, dev=True)
    with running_gateway(settings, project) as (base, gw):
        yield base, gw


async def _last_row(gw: Gateway) -> tuple[object, ...]:
    assert gw.recorder is not None and gw.store is not None
    deadline = time.monotonic() + 5
    recorder, store = gw.recorder, gw.store
    while time.monotonic() < deadline:
        await on_gateway(gw, recorder.flush)
        row = await on_gateway(
            gw,
            lambda: store.fetchone(
                "SELECT status, error_class, failover_path, deployment FROM model_calls"
                " ORDER BY created_at DESC LIMIT 1"
            ),
        )
        if row is not None:
            return row
    raise AssertionError("no model call recorded")


async def test_5xx_fails_over_and_the_path_is_recorded(
    gateway: tuple[str, Gateway], upstreams: tuple[FaultUpstream, FaultUpstream]
) -> None:
    base, gw = gateway
    a, b = upstreams
    a.script("500")
    client = openai.AsyncOpenAI(base_url=base + "/v1", api_key="dev", max_retries=0)
    completion = await client.chat.completions.create(
        model="default", messages=[{"role": "user", "content": "hi"}]
    )
    assert completion.model == "up-b"
    assert (a.requests, b.requests) == (1, 1)
    status, error_class, path, deployment = await _last_row(gw)
    assert (status, error_class, deployment) == ("ok", None, "b")
    assert json.loads(str(path)) == ["a:server_error", "b:ok"]
    await client.close()


async def test_stream_fails_over_before_the_first_token(
    gateway: tuple[str, Gateway], upstreams: tuple[FaultUpstream, FaultUpstream]
) -> None:
    base, gw = gateway
    a, _ = upstreams
    a.script("reset")
    client = openai.AsyncOpenAI(base_url=base + "/v1", api_key="dev", max_retries=0)
    stream = await client.chat.completions.create(
        model="default", stream=True, messages=[{"role": "user", "content": "hi"}]
    )
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text
    _, _, path, _ = await _last_row(gw)
    assert json.loads(str(path)) == ["a:connection", "b:ok"]
    await client.close()


async def test_all_rate_limited_returns_429_with_retry_after(
    gateway: tuple[str, Gateway], upstreams: tuple[FaultUpstream, FaultUpstream]
) -> None:
    base, gw = gateway
    a, b = upstreams
    a.script("429:2")
    b.script("429:3")
    async with httpx.AsyncClient(base_url=base) as http:
        resp = await http.post(
            "/v1/chat/completions",
            json={"model": "default", "messages": [{"role": "user", "content": "hi"}]},
        )
    assert resp.status_code == 429
    assert resp.headers["retry-after"] == "3"
    err = resp.json()["error"]
    assert err["code"] == "rate_limit_exceeded" and err["error_class"] == "rate_limit"
    status, error_class, path, _ = await _last_row(gw)
    assert (status, error_class) == ("error", "rate_limit")
    assert json.loads(str(path)) == ["a:rate_limit", "b:rate_limit"]


async def test_hang_then_bad_gateway(
    gateway: tuple[str, Gateway], upstreams: tuple[FaultUpstream, FaultUpstream]
) -> None:
    base, _ = gateway
    a, b = upstreams
    a.script("hang")
    b.script("malformed")
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        resp = await http.post(
            "/v1/chat/completions",
            json={"model": "default", "messages": [{"role": "user", "content": "hi"}]},
        )
    assert resp.status_code == 502
    assert resp.json()["error"]["error_class"] == "malformed_response"
