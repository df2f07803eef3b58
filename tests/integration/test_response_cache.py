"""The response cache seen from a client: ``elevenfactor serve`` in front of an upstream that
counts its requests, with answers kept in SQLite, PostgreSQL or Redis."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import redis

from elevenfactor.store import open_store
from tests.conftest import _pg_schema_url
from tests.support.fault_upstream import FaultUpstream
from tests.support.serve import Server, migrated

pytestmark = pytest.mark.integration

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
async def upstream() -> AsyncIterator[FaultUpstream]:
    up = await FaultUpstream(name="up").start()
    try:
        yield up
    finally:
        await up.stop()


@pytest.fixture(params=["sqlite", "postgresql", "redis"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """A database URL and the server's extra environment: answers in the store, or in Redis
    under a prefix of this test's own (deleted afterwards)."""
    if request.param == "postgresql":
        yield _pg_schema_url(request), {}
        return
    url = f"sqlite:///{tmp_path}/cache.db"
    if request.param == "sqlite":
        yield url, {}
        return
    prefix = f"ef-test-{uuid.uuid4().hex}:"
    yield url, {"REDIS_URL": REDIS_URL, "ELEVENFACTOR_REDIS_PREFIX": prefix}
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=prefix + "*"))
    if keys:
        client.delete(*keys)
    client.close()


def _project(up: FaultUpstream) -> str:
    return f"""
providers: {{up: {{type: openai, base_url: "{up.base_url}", api_key: k}}}}
models: {{m: {{provider: up, model: up-1, retry: {{attempts: 1}}}}}}
routes:
  default: {{chain: [m], cache: {{ttl: 60}}}}
  plain: {{chain: [m]}}
"""


async def _rows(db_url: str, n: int) -> list[tuple[Any, ...]]:
    """The first ``n`` call records, oldest first, once they are written."""
    db = await open_store(db_url)
    try:
        deadline = time.monotonic() + 10
        while True:
            rows = await db.fetchall(
                "SELECT route, cache_hit, failover_path, tokens_in, tokens_out, stream"
                " FROM model_calls ORDER BY created_at"
            )
            if len(rows) >= n:
                return rows
            assert time.monotonic() < deadline, f"{len(rows)} of {n} call records written"
            await asyncio.sleep(0.05)
    finally:
        await db.close()


async def _stored(db_url: str, env: dict[str, str]) -> int:
    """How many answers the backend holds: Redis keys under the prefix (not the owners'
    indexes), or store rows."""
    if "REDIS_URL" in env:
        client = redis.Redis.from_url(env["REDIS_URL"])
        try:
            keys = client.scan_iter(match=env["ELEVENFACTOR_REDIS_PREFIX"] + "cache:*")
            return len([k for k in keys if b":owner:" not in k])
        finally:
            client.close()
    db = await open_store(db_url)
    try:
        row = await db.fetchone("SELECT count(*) FROM response_cache")
        return int(row[0]) if row else 0
    finally:
        await db.close()


async def test_identical_requests_are_served_from_the_cache(
    upstream: FaultUpstream, backend: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    db_url, env = backend
    await migrated(db_url)
    (tmp_path / "elevenfactor.yaml").write_text(_project(upstream))
    server = Server(tmp_path, db_url, **env)
    await asyncio.to_thread(server.start)
    client = openai.AsyncOpenAI(base_url=server.base + "/v1", api_key="dev", max_retries=0)
    try:
        hi = [{"role": "user", "content": "hi there"}]
        first = await client.chat.completions.create(model="default", messages=hi, temperature=0)
        second = await client.chat.completions.create(model="default", messages=hi, temperature=0)
        assert upstream.requests == 1
        assert second.choices[0].message.content == first.choices[0].message.content
        assert second.choices[0].finish_reason == "stop"
        assert second.usage is not None and first.usage is not None
        assert second.usage.total_tokens == first.usage.total_tokens
        assert await _stored(db_url, env) == 1  # in Redis when configured, else in the store

        # a stream that hits is replayed as chunks; a stream that misses is stored
        other = [{"role": "user", "content": "tell me more"}]
        texts = []
        for _ in range(2):
            stream = await client.chat.completions.create(
                model="default",
                messages=other,
                temperature=0,
                stream=True,
                stream_options={"include_usage": True},
            )
            chunks = [c async for c in stream]
            texts.append("".join(c.choices[0].delta.content or "" for c in chunks if c.choices))
            assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
        assert texts[0] and texts[0] == texts[1]
        assert upstream.requests == 2

        # a sampling request is not cached unless it asks; `cache: false` bypasses
        for _ in range(2):
            await client.chat.completions.create(model="default", messages=hi, temperature=1)
        assert upstream.requests == 4
        await client.chat.completions.create(
            model="default", messages=hi, temperature=0, extra_body={"cache": False}
        )
        assert upstream.requests == 5
        for _ in range(2):
            await client.chat.completions.create(
                model="plain", messages=hi, temperature=1, extra_body={"cache": {"ttl": 30}}
            )
        assert upstream.requests == 6

        rows = await _rows(db_url, 9)
        hits = [(r[0], r[1], json.loads(r[2])) for r in rows]
        assert hits[:4] == [
            ("default", 0, ["m:ok"]),
            ("default", 1, ["m:cache_hit"]),
            ("default", 0, ["m:ok"]),
            ("default", 1, ["m:cache_hit"]),
        ]
        assert [r[1] for r in rows[4:]] == [0, 0, 0, 0, 1]
        assert rows[1][3:5] == rows[0][3:5]  # the hit carries the original usage
        assert rows[3][5] == 1  # the replayed stream is recorded as a stream

        # a malformed cache parameter is a clear 400
        async with httpx.AsyncClient(base_url=server.base) as http:
            resp = await http.post(
                "/v1/chat/completions",
                json={"model": "default", "messages": hi, "cache": {"ttl": "soon"}},
            )
        assert resp.status_code == 400
        error = resp.json()["error"]
        assert error["param"] == "cache.ttl" and error["code"] == "invalid_type"
    finally:
        await client.close()
        await asyncio.to_thread(server.stop)


ROUTING = """
providers: {t: {type: test}}
models:
  cheap-dep: {provider: t, model: cheap-1}
  strong-dep: {provider: t, model: strong-1}
routes:
  default:
    chain: [strong-dep]
    rules: [{max_prompt_tokens: 50, tools: false, use: cheap}]
  cheap: {chain: [cheap-dep], validator: json, escalate_to: default}
"""


async def test_cheap_route_by_rule_escalates_a_rejected_answer(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path}/routing.db"
    await migrated(db_url)
    (tmp_path / "elevenfactor.yaml").write_text(ROUTING)
    server = Server(tmp_path, db_url)
    await asyncio.to_thread(server.start)
    client = openai.AsyncOpenAI(base_url=server.base + "/v1", api_key="dev", max_retries=0)
    try:
        short = [{"role": "user", "content": "hi"}]
        # JSON asked and given: the cheap route's answer stands
        done = await client.chat.completions.create(
            model="default", messages=short, response_format={"type": "json_object"}
        )
        assert done.model == "cheap-1" and json.loads(done.choices[0].message.content or "")
        # plain text fails the json validator: the strong route answers
        done = await client.chat.completions.create(model="default", messages=short)
        assert done.model == "strong-1"
        # a long prompt goes to the strong route at once
        long = [{"role": "user", "content": "word " * 100}]
        done = await client.chat.completions.create(model="default", messages=long)
        assert done.model == "strong-1"
        rows = await _rows(db_url, 3)
        assert [(r[0], json.loads(r[2])) for r in rows] == [
            ("cheap", ["cheap-dep:ok"]),
            ("cheap", ["cheap-dep:rejected", "strong-dep:ok"]),
            ("default", ["strong-dep:ok"]),
        ]
    finally:
        await client.close()
        await asyncio.to_thread(server.stop)
