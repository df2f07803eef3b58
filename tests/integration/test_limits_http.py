"""Rate limits and budgets as clients meet them over HTTP: the official ``openai`` client gets
429s with ``Retry-After`` and budget refusals as proper error objects; a tokens-per-minute limit
shared through Redis by 3 ``serve`` processes never admits more than it allows; with Redis down
a deployment that relies on it fails closed for budgets and says so in ``/readyz``."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import _pg_schema_url
from tests.support.serve import EXE, ROOT, Server, migrated, serving

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

PROJECT = """
providers: {t: {type: test}}
models:
  priced:
    provider: t
    model: echo
    price: {input_per_mtok: 0, output_per_mtok: 25000}
    retry: {attempts: 1}
routes: {default: {chain: [priced]}}
"""
HI = [{"role": "user", "content": "one two three four five"}]


def _cli(home: Path, env: dict[str, str], *args: str) -> str:
    full = {k: v for k, v in os.environ.items() if not k.startswith("ELEVENFACTOR_")}
    full.update(env, PYTHONPATH=str(ROOT))
    out = subprocess.run([EXE, *args], cwd=home, env=full, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A key prefix of this test's own in the real Redis, removed afterwards."""
    import redis

    prefix = f"ef-test-{uuid.uuid4().hex[:8]}:"
    yield prefix
    client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    keys = list(client.scan_iter(match=prefix + "*"))
    if keys:
        client.delete(*keys)


def test_openai_client_sees_rate_limits_and_budget_errors(tmp_path: Path, store_url: str) -> None:
    asyncio.run(migrated(store_url))
    project = PROJECT + "limits: {user: {rpm: 2}}\n"
    with serving(tmp_path, store_url, project) as srv:
        client = openai.OpenAI(base_url=srv.base + "/v1", api_key="dev", max_retries=0)
        fast = {"x-elevenfactor-timeout": "0.2"}  # no waiting for capacity: refuse at once
        for _ in range(2):
            client.chat.completions.create(model="default", messages=HI, extra_headers=fast)
        started = time.monotonic()
        with pytest.raises(openai.RateLimitError) as limited:
            client.chat.completions.create(model="default", messages=HI, extra_headers=fast)
        assert time.monotonic() - started < 2  # refused at once: the wait cannot be met
        assert limited.value.code == "rate_limit_exceeded"
        assert int(limited.value.response.headers["retry-after"]) >= 1
        body = limited.value.body
        assert isinstance(body, dict)
        assert body["details"] == {"limit": "user:local", "kind": "rpm", "value": 2}

    # No rate limits now: a budget that cannot cover one call ($0.125) is what refuses.
    _cli(tmp_path, {"DATABASE_URL": store_url}, "budgets", "set", "org", "--limit", "0.1")
    with serving(tmp_path, store_url, PROJECT) as srv:
        client = openai.OpenAI(base_url=srv.base + "/v1", api_key="dev")  # default retries
        with pytest.raises(openai.RateLimitError) as refused:
            client.chat.completions.create(model="default", messages=HI, max_tokens=5)
        err = refused.value
        assert err.code == "budget_exceeded"
        assert err.response.headers["x-should-retry"] == "false"  # not retried by the client
        assert isinstance(err.body, dict)
        details = err.body["details"]
        assert details["budget"] == "org" and details["limit"] == 0.1
        assert details["requested"] == 0.125 and details["window"] == "month"
        assert details["resets_at"] > time.time()


def test_tokens_per_minute_shared_through_redis_is_never_exceeded(
    tmp_path: Path, request: pytest.FixtureRequest, redis_prefix: str
) -> None:
    """3 processes x 100 concurrent calls of ~10 tokens against 400 tokens a minute: at most
    the burst (400 tokens) plus what refills during the run is admitted; every other call is a
    429 ``rate_limit_exceeded`` with ``Retry-After``."""
    db_url = _pg_schema_url(request)
    asyncio.run(migrated(db_url))
    (tmp_path / "elevenfactor.yaml").write_text(PROJECT + "limits: {user: {tpm: 400}}\n")
    env = {"REDIS_URL": "redis://127.0.0.1:6379/0", "ELEVENFACTOR_REDIS_PREFIX": redis_prefix}
    servers = [Server(tmp_path, db_url, **env) for _ in range(3)]
    for s in servers:
        s.start()
    try:
        started = time.monotonic()
        responses = asyncio.run(_hammer([s.base for s in servers], 100))
        elapsed = time.monotonic() - started
    finally:
        for s in servers:
            s.stop()
    ok = [r for r in responses if r.status_code == 200]
    tokens = [r.json()["usage"]["total_tokens"] for r in ok]
    assert set(tokens) == {10}  # 5 in, 5 out; estimated as 23 bytes / 4 + 5 = 10
    allowed = 400 + 400 * elapsed / 60
    assert 30 <= len(ok) * 10 <= allowed, (len(ok), elapsed)
    for r in responses:
        if r.status_code != 200:
            assert r.status_code == 429, r.text
            assert r.json()["error"]["code"] == "rate_limit_exceeded"
            assert int(r.headers["retry-after"]) >= 1


async def _hammer(bases: list[str], per_server: int) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=len(bases) * per_server)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        body = {"model": "default", "max_tokens": 5, "messages": HI}
        headers = {"x-elevenfactor-timeout": "0.5"}
        return await asyncio.gather(
            *(
                client.post(base + "/v1/chat/completions", json=body, headers=headers)
                for base in bases
                for _ in range(per_server)
            )
        )


def test_redis_down_fails_closed_and_readyz_says_so(tmp_path: Path, store_url: str) -> None:
    asyncio.run(migrated(store_url))
    (tmp_path / "elevenfactor.yaml").write_text(PROJECT)
    _cli(tmp_path, {"DATABASE_URL": store_url}, "budgets", "set", "org", "--limit", "10")
    srv = Server(tmp_path, store_url, ready="/healthz", REDIS_URL="redis://127.0.0.1:1/0")
    srv.start()
    try:
        ready = httpx.get(srv.base + "/readyz")
        assert ready.status_code == 503
        assert "budgets" in ready.json()["checks"]
        body = {"model": "default", "max_tokens": 5, "messages": HI}
        r = httpx.post(srv.base + "/v1/chat/completions", json=body, timeout=30)
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "budget_unavailable"
        rows = _cli(tmp_path, {"DATABASE_URL": store_url}, "budgets", "show", "org", "--json")
        assert '"spent": 0' in rows.replace("0.0", "0")  # nothing was charged
    finally:
        srv.stop()


@pytest.mark.parametrize("soft", [False, True])
def test_a_budget_can_downgrade_to_a_cheaper_route(
    tmp_path: Path, store_url: str, soft: bool
) -> None:
    """A call the budget cannot cover on the premium route (a hard budget), or that would go
    past it (a soft one), goes to the cheap route its policy names; the answer says so in its
    headers, and what the budget charged is the cheap cost."""
    asyncio.run(migrated(store_url))
    project = PROJECT.replace(
        "routes: {default: {chain: [priced]}}",
        """  premium:
    provider: t
    model: echo-large
    price: {input_per_mtok: 0, output_per_mtok: 1000000}
    retry: {attempts: 1}
routes:
  default: {chain: [premium]}
  cheap: {chain: [priced]}""",
    )
    env = {"DATABASE_URL": store_url}
    args = ["budgets", "set", "org", "--limit", "1", "--on-exceed", "downgrade:cheap"]
    _cli(tmp_path, env, *args, *(["--soft"] if soft else []))
    with serving(tmp_path, store_url, project) as srv:
        body = {"model": "default", "max_tokens": 5, "messages": HI}
        r = httpx.post(srv.base + "/v1/chat/completions", json=body, timeout=30)
        assert r.status_code == 200, r.text
        assert r.headers["x-elevenfactor-route"] == "cheap"
        assert r.headers["x-elevenfactor-downgraded"] == "budget org"
    shown = _cli(tmp_path, env, "budgets", "show", "org", "--json")
    assert '"spent": 0.125' in shown


def test_malformed_tags_and_priority_headers_are_400s(tmp_path: Path, store_url: str) -> None:
    asyncio.run(migrated(store_url))
    with serving(tmp_path, store_url, PROJECT) as srv:
        body = {"model": "default", "messages": HI}
        for name, value in [
            ("x-elevenfactor-tags", "fine, not fine!"),
            ("x-elevenfactor-tags", ",".join(f"t{i}" for i in range(33))),
            ("x-elevenfactor-priority", "urgent"),
            ("x-elevenfactor-timeout", "-1"),
        ]:
            r = httpx.post(
                srv.base + "/v1/chat/completions", json=body, headers={name: value}, timeout=30
            )
            assert r.status_code == 400, (name, value, r.text)
            assert r.json()["error"]["param"] == name
