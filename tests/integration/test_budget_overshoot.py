"""Budgets never overshoot: 3 ``serve`` processes x 100 concurrent requests against a budget
that covers 40 of them, on PostgreSQL (one transaction per reservation) and with Redis (one
script). Exactly the requests that did not succeed got the budget error, and committed spend
never passes the limit. A process SIGKILLed while holding reservations: they expire and the
budget is whole again.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from tests.conftest import _pg_schema_url
from tests.support.serve import EXE, ROOT, Server, migrated, wait_for

pytestmark = pytest.mark.timeout(300)

# Output tokens are priced so one 5-word echo costs exactly $0.125 (a binary fraction: sums are
# exact), and max_tokens is 5: the reservation asked for equals the real cost, so the budget
# of $5.00 admits exactly 40 calls however they interleave.
PROJECT = """
providers:
  t: {type: test}
models:
  priced:
    provider: t
    model: echo
    price: {input_per_mtok: 0, output_per_mtok: 25000}
    retry: {attempts: 1}
  slow:
    provider: t
    model: echo
    price: {input_per_mtok: 0, output_per_mtok: 25000}
    retry: {attempts: 1}
routes:
  default: {chain: [priced]}
"""
PROMPT = "one two three four five"
COST, LIMIT, CALLS = 0.125, 5.0, 40
TTL = "10"  # seconds a dead process's holds live


@pytest.fixture(params=["postgresql", "redis"])
def backend(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """The environment of the serve processes: the store alone, or the store plus Redis
    (counters under a prefix of this test's own, removed afterwards)."""
    db_url = _pg_schema_url(request)
    asyncio.run(migrated(db_url))
    env = {"DATABASE_URL": db_url}
    prefix = f"ef-test-{uuid.uuid4().hex[:8]}:"
    if request.param == "redis":
        env.update(REDIS_URL="redis://127.0.0.1:6379/0", ELEVENFACTOR_REDIS_PREFIX=prefix)
    yield env
    if request.param == "redis":
        import redis

        client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
        keys = list(client.scan_iter(match=prefix + "*"))
        if keys:
            client.delete(*keys)


def _cli(home: Path, env: dict[str, str], *args: str) -> str:
    full = {k: v for k, v in os.environ.items() if not k.startswith("ELEVENFACTOR_")}
    full.update(env, PYTHONPATH=str(ROOT))
    out = subprocess.run(
        [EXE, *args], cwd=home, env=full, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def _start(home: Path, env: dict[str, str], n: int, **extra: str) -> list[Server]:
    servers = [Server(home, env["DATABASE_URL"], **{**env, **extra}) for _ in range(n)]
    for s in servers:
        s.start()
    return servers


async def _hammer(bases: list[str], per_server: int) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=len(bases) * per_server)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        body = {
            "model": "default",
            "max_tokens": 5,
            "messages": [{"role": "user", "content": PROMPT}],
        }
        return await asyncio.gather(
            *(
                client.post(base + "/v1/chat/completions", json=body)
                for base in bases
                for _ in range(per_server)
            )
        )


def _status(home: Path, env: dict[str, str]) -> dict[str, float]:
    data = orjson.loads(_cli(home, env, "budgets", "show", "org", "--json"))
    return {k: float(data[k]) for k in ("spent", "reserved", "limit")}


def test_concurrent_requests_never_overshoot(tmp_path: Path, backend: dict[str, str]) -> None:
    (tmp_path / "elevenfactor.yaml").write_text(PROJECT)
    _cli(tmp_path, backend, "budgets", "set", "org", "--limit", str(LIMIT), "--window", "total")
    servers = _start(tmp_path, backend, 3)
    try:
        responses = asyncio.run(_hammer([s.base for s in servers], 100))
    finally:
        for s in servers:
            s.stop()
    ok = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code != 200]
    assert len(ok) == CALLS, [r.text for r in refused[:3]]
    for r in refused:
        assert r.status_code == 429, r.text
        err = r.json()["error"]
        assert err["code"] == "budget_exceeded"
        assert err["details"]["budget"] == "org"
        assert err["details"]["limit"] == LIMIT
        assert err["details"]["requested"] == COST
        assert r.headers["x-should-retry"] == "false"
    status = _status(tmp_path, backend)
    assert status["spent"] == LIMIT
    assert status["reserved"] == 0


def test_killed_process_holds_expire(tmp_path: Path, backend: dict[str, str]) -> None:
    """Streams paced slowly hold reservations; SIGKILL their server; the holds expire after the
    hold TTL and the whole budget can be spent again."""
    project = PROJECT.replace("routes:", "  # paced\nroutes:").replace(
        "  slow:\n    provider: t", "  slow:\n    provider: slowp"
    )
    project = project.replace(
        "providers:\n", "providers:\n  slowp: {type: test, options: {chunk_delay: 5}}\n"
    )
    (tmp_path / "elevenfactor.yaml").write_text(project)
    _cli(tmp_path, backend, "budgets", "set", "org", "--limit", str(LIMIT), "--window", "total")
    (victim,) = _start(tmp_path, backend, 1, ELEVENFACTOR_HOLD_TTL=TTL)
    body = {
        "model": "slow",
        "max_tokens": 5,
        "stream": True,
        "messages": [{"role": "user", "content": PROMPT}],
    }
    streams = subprocess.Popen(  # one client process holding CALLS slow streams open
        [sys.executable, "-c", _STREAMS, victim.base, orjson.dumps(body).decode(), str(CALLS)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: _status(tmp_path, backend)["reserved"] == LIMIT, "all holds taken", 60)
        assert victim.proc is not None
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait(10)
    finally:
        streams.kill()
        streams.wait()
    (survivor,) = _start(tmp_path, backend, 1, ELEVENFACTOR_HOLD_TTL=TTL)
    try:
        deadline = time.monotonic() + 30 + float(TTL)
        while True:  # refused until the dead process's holds expire, then admitted again
            r = httpx.post(
                survivor.base + "/v1/chat/completions",
                json={**body, "model": "default", "stream": False},
                timeout=30,
            )
            if r.status_code == 200:
                break
            assert r.json()["error"]["code"] == "budget_exceeded", r.text
            assert time.monotonic() < deadline, "the dead process's holds never expired"
            time.sleep(0.2)
        responses = asyncio.run(_hammer([survivor.base], 60))
    finally:
        survivor.stop()
    assert sum(r.status_code == 200 for r in responses) == CALLS - 1
    status = _status(tmp_path, backend)
    assert status["spent"] == LIMIT
    assert status["reserved"] == 0


_STREAMS = """
import asyncio, sys, httpx
async def one(client):
    async with client.stream("POST", sys.argv[1] + "/v1/chat/completions", content=sys.argv[2],
                             headers={"content-type": "application/json"}) as r:
        async for _ in r.aiter_bytes():
            pass
async def main():
    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=100)) as c:
        await asyncio.gather(*(one(c) for _ in range(int(sys.argv[3]))))
asyncio.run(main())
"""
