"""``GET /metrics`` under ``elevenfactor serve --workers 2``, parsed with ``prometheus_client``'s
parser: counters sum over both processes whichever answers the scrape, histograms are
consistent, tokens and cost match the ``model_calls`` rows, cache hits, failovers and the
circuit breaker are counted, a killed child neither loses the others' counts nor double-counts;
and who may scrape (token, admin of its own organisation, member 403, no key 401). On both
stores."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from elevenfactor.governance import (
    DEFAULT_ORG,
    Principal,
    create_key,
    create_user,
    local_admin,
    set_budget,
)
from elevenfactor.store import migrate, open_store
from tests.conftest import _pg_schema_url, free_port
from tests.support.fault_upstream import FaultUpstreamProcess
from tests.support.serve import wait_for

pytestmark = pytest.mark.integration

EXE = str(Path(sys.executable).parent / "elevenfactor")
TOKEN = "scrape-secret-0123456789"
CHAT = "/v1/chat/completions"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _project(upstream: str) -> str:
    return f"""
providers:
  t: {{type: test}}
  up: {{type: openai, base_url: "{upstream}", api_key: k}}
models:
  echo: {{provider: t, model: echo-1}}
  flaky: {{provider: up, model: up-1, timeout: 2, retry: {{attempts: 1}},
          breaker: {{failures: 2, cooldown: 600}}}}
routes:
  default: {{chain: [echo], cache: {{ttl: 600}}}}
  plain: {{chain: [echo]}}
  resilient: {{chain: [flaky, echo]}}
prices:
  echo: {{input_per_mtok: 1000, output_per_mtok: 500, per_request: 0.01}}
"""


async def _seed(url: str) -> dict[str, str]:
    db = await open_store(url)
    try:
        await migrate(db)
        admin = local_admin("cli")
        keys = {}
        for name, roles in (("boss", ("admin",)), ("ann", ("member",))):
            await create_user(db, admin, name, roles=roles)
            keys[name] = (await create_key(db, admin, f"key-{name}", user=name))[1]
        await db.execute("INSERT INTO orgs (id, name, created_at) VALUES ('org_b', 'b', 0)")
        eve = Principal("org_b", "u_root2", "root2", roles=frozenset({"admin"}))
        await create_user(db, eve, "eve", roles=("admin",))
        keys["eve"] = (await create_key(db, eve, "key-eve", user="eve"))[1]
        await set_budget(db, admin, "org", 50.0, window="month")
        await set_budget(db, eve, "org", 7.0, window="day")
        for i, (org, group) in enumerate(((DEFAULT_ORG, "legal"), ("org_b", "secret-group"))):
            await db.execute(
                "INSERT INTO approvals (id, run_id, step_id, name, status, request_hash,"
                " reviewer_group, created_at, on_timeout, org_id)"
                " VALUES (?, ?, 's', 'n', 'pending', 'h', ?, ?, 'reject', ?)",
                (f"ap{i}", f"run{i}", group, time.time() - 60, org),
            )
        return keys
    finally:
        await db.close()


@dataclass
class World:
    base: str
    url: str
    keys: dict[str, str]
    log: Path
    tmp: Path
    proc: subprocess.Popen[bytes]
    upstream: FaultUpstreamProcess
    sent: dict[str, int] = field(default_factory=dict)

    def chat(self, route: str, content: str = "hello", who: str = "boss") -> httpx.Response:
        body = {
            "model": route,
            "messages": [{"role": "user", "content": content}],
            "temperature": 0,
        }
        headers = {"Authorization": f"Bearer {self.keys[who]}"}
        with httpx.Client(base_url=self.base, timeout=30) as http:  # a new connection each time
            resp = http.post(CHAT, json=body, headers=headers)
        self.sent[route] = self.sent.get(route, 0) + 1
        return resp

    def scrape(self, auth: str | None = f"Bearer {TOKEN}", **headers: str) -> httpx.Response:
        if auth is not None:
            headers["Authorization"] = auth
        with httpx.Client(base_url=self.base, timeout=30) as http:
            return http.get("/metrics", headers=headers)

    def samples(self) -> Samples:
        resp = self.scrape()
        assert resp.status_code == 200, resp.text
        assert resp.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
        out: Samples = {}
        for family in text_string_to_metric_families(resp.text):
            for s in family.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return out

    def events(self) -> list[dict[str, Any]]:
        lines = self.log.read_text(errors="replace").splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]


def total(samples: Samples, name: str, **match: str) -> float:
    return sum(
        v
        for (n, labels), v in samples.items()
        if n == name and all(dict(labels).get(k) == m for k, m in match.items())
    )


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp(f"metrics-{request.param}")
    url = f"sqlite:///{tmp}/db.sqlite" if request.param == "sqlite" else _pg_schema_url(request)
    keys = asyncio.run(_seed(url))
    upstream = FaultUpstreamProcess(default="500").start()
    (tmp / "elevenfactor.yaml").write_text(_project(upstream.base_url))
    (tmp / "tmp").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ELEVENFACTOR_")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.update(
        DATABASE_URL=url,
        TMPDIR=str(tmp / "tmp"),  # where the supervisor makes its private metrics directory
        ELEVENFACTOR_METRICS_TOKEN=TOKEN,
        ELEVENFACTOR_METRICS_CACHE_SECONDS="0",
        ELEVENFACTOR_DRAIN_SECONDS="0",
        ELEVENFACTOR_IN_PROCESS_WORKER="false",
    )
    port = free_port()
    log = tmp / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [EXE, "serve", "--workers", "2", "--port", str(port)],
            cwd=tmp,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    world = World(f"http://127.0.0.1:{port}", url, keys, log, tmp, proc, upstream)

    def up() -> bool:
        try:
            return httpx.get(world.base + "/readyz").status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for(up, "server ready", proc=proc)
        yield world
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        upstream.stop()
    # the supervisor removes the private directory it made
    assert list((tmp / "tmp").glob("elevenfactor-metrics-*")) == []


async def _call_rows(url: str, n: int) -> tuple[int, int, float]:
    """Sum of input and output tokens and cost of the call records, once ``n`` are written."""
    db = await open_store(url)
    try:
        deadline = time.monotonic() + 20
        while True:
            row = await db.fetchone(
                "SELECT COUNT(*), SUM(tokens_in), SUM(tokens_out), SUM(cost) FROM model_calls"
            )
            assert row is not None
            if row[0] >= n:
                assert row[0] == n
                return int(row[1]), int(row[2]), float(row[3])
            assert time.monotonic() < deadline, f"{row[0]} of {n} call records written"
            await asyncio.sleep(0.05)
    finally:
        await db.close()


def test_counts_over_both_processes(world: World) -> None:
    for i in range(30):
        assert world.chat("plain", f"question {i}").status_code == 200
    assert world.chat("default", "same question").status_code == 200
    hit = world.chat("default", "same question")  # the store-backed cache answers
    assert hit.status_code == 200 and hit.headers.get("x-elevenfactor-cache") == "hit"
    calls = sum(world.sent.values())
    # both processes served some (the JSON log line of each call names its process)
    pids = {e["pid"] for e in world.events() if e.get("event") == "model_call"}
    assert len(pids) == 2, f"calls served by {pids}"
    mp_dirs = list((world.tmp / "tmp").glob("elevenfactor-metrics-*"))
    assert len(mp_dirs) == 1
    assert {f"counter_{pid}.db" for pid in pids} <= {p.name for p in mp_dirs[0].iterdir()}

    tokens_in, tokens_out, cost = asyncio.run(_call_rows(world.url, calls))
    for _ in range(6):  # whichever process answers, the totals are the same
        s = world.samples()
        assert total(s, "elevenfactor_http_requests_total", route=CHAT, status="200") == calls
        assert total(s, "elevenfactor_model_calls_total", status="ok") == calls
        assert total(s, "elevenfactor_model_calls_total", route="plain") == 30
        assert total(s, "elevenfactor_model_tokens_total", type="input") == tokens_in
        assert total(s, "elevenfactor_model_tokens_total", type="output") == tokens_out
        assert total(s, "elevenfactor_model_cost_usd_total") == pytest.approx(cost, rel=1e-9)
        assert total(s, "elevenfactor_cache_hits_total", route="default", type="exact") == 1
        _histogram_consistent(
            s, "elevenfactor_http_request_duration_seconds", calls, route=CHAT, method="POST"
        )
        _histogram_consistent(s, "elevenfactor_model_call_duration_seconds", calls)
        # the store gauges: this organisation's and the other's, for the scraper token
        assert total(s, "elevenfactor_approvals_pending", org=DEFAULT_ORG, group="legal") == 1
        assert total(s, "elevenfactor_budget_limit_usd", org="org_b") == 7.0


def _histogram_consistent(s: Samples, name: str, count: int, **match: str) -> None:
    assert total(s, name + "_count", **match) == count
    buckets: dict[str, float] = {}
    for (n, labels), v in s.items():
        lab = dict(labels)
        if n == name + "_bucket" and all(lab.get(k) == m for k, m in match.items()):
            buckets[lab["le"]] = buckets.get(lab["le"], 0.0) + v
    ordered = [buckets[le] for le in sorted(buckets, key=float)]
    assert ordered == sorted(ordered) and ordered[-1] == count  # cumulative; +Inf is the count


def test_failover_and_the_circuit_breaker(world: World) -> None:
    before = world.samples()
    assert total(before, "elevenfactor_circuit_state", deployment="flaky") == 0
    for _ in range(6):  # flaky answers 500 and echo takes over; one process sees >= 3 failures
        assert world.chat("resilient").status_code == 200
    s = world.samples()
    fo = dict(route="resilient", from_deployment="flaky", to_deployment="echo")
    assert total(s, "elevenfactor_failovers_total", **fo) == 6
    assert total(s, "elevenfactor_model_attempt_failures_total", deployment="flaky") == 6
    assert total(s, "elevenfactor_circuit_state", deployment="flaky") == 2  # open (the worst)
    assert total(s, "elevenfactor_circuit_transitions_total", deployment="flaky", state="open") >= 1


def test_a_killed_child_loses_nothing_and_counts_nothing_twice(world: World) -> None:
    before = total(world.samples(), "elevenfactor_http_requests_total", route=CHAT)
    started = next(e for e in world.events() if e.get("event") == "supervising")
    victim = started["pids"][1]
    os.kill(victim, signal.SIGKILL)
    wait_for(
        lambda: any(e.get("event") == "process_restarted" for e in world.events()),
        "the child restarted",
        proc=world.proc,
    )
    after_kill = total(world.samples(), "elevenfactor_http_requests_total", route=CHAT)
    assert after_kill == before  # the dead child's counts stay
    for i in range(10):
        assert world.chat("plain", f"after {i}").status_code == 200
    for _ in range(4):
        s = world.samples()
        assert total(s, "elevenfactor_http_requests_total", route=CHAT) == before + 10


def test_who_may_scrape(world: World) -> None:
    assert world.scrape(None).status_code == 401
    assert world.scrape("Basic Zm9vOmJhcg==").status_code == 401
    assert world.scrape("Bearer").status_code == 401
    assert world.scrape("Bearer not-the-token").status_code == 401
    member = world.scrape(f"Bearer {world.keys['ann']}")
    assert member.status_code == 403 and member.json()["error"]["code"] == "permission_denied"
    mine = world.scrape(f"Bearer {world.keys['boss']}")
    assert mine.status_code == 200
    assert 'org="org_default"' in mine.text and "org_b" not in mine.text
    assert "secret-group" not in mine.text
    theirs = world.scrape(f"Bearer {world.keys['eve']}").text
    assert 'org="org_b"' in theirs and "org_default" not in theirs
    everything = world.scrape().text
    assert 'org="org_b"' in everything and 'org="org_default"' in everything
    # the process metrics go to every admin
    assert "elevenfactor_http_requests_total" in mine.text


def test_openmetrics_on_request(world: World) -> None:
    resp = world.scrape(Accept="application/openmetrics-text; version=1.0.0")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("application/openmetrics-text")
    assert resp.text.rstrip().endswith("# EOF")
