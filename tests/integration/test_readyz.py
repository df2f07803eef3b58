"""``/readyz`` answer by answer, over a real server on SQLite and PostgreSQL: ready (200, no
details), ready with paused agents named (200, names only, of every organisation), ready while
the store cannot list paused agents (200, ``agents_paused: null``), the budget backend down
(503 with the failing check), draining (503); always JSON with a trace id, never a key needed.
The health page reads the same facts (``server._readiness``): its checks agree with the body."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from elevenfactor.config import Settings, parse_project
from elevenfactor.governance._agent_breaker import record_run_outcome
from elevenfactor.governance._policy_model import AgentBreaker
from elevenfactor.server import Gateway
from elevenfactor.server._readiness import Readiness, readiness
from elevenfactor.store import migrate, open_store
from tests.conftest import _pg_schema_url
from tests.support.serve import migrated
from tests.support.server import on_gateway, running_gateway

pytestmark = pytest.mark.integration

PROJECT = parse_project(
    {
        "providers": {"t": {"type": "test"}},
        "models": {"echo": {"provider": "t", "model": "echo-1"}},
        "routes": {"default": {"chain": ["echo"]}},
    }
)
TRIP = AgentBreaker(window_seconds=3600, min_runs=1, max_error_rate=0.5)


@dataclass
class Site:
    base: str
    url: str
    gw: Gateway

    def readyz(self) -> httpx.Response:
        return httpx.get(self.base + "/readyz", timeout=30)

    def readiness(self) -> Readiness:
        return asyncio.run(on_gateway(self.gw, lambda: readiness(self.gw)))

    def sql(self, *statements: str) -> None:
        async def go() -> None:
            db = await open_store(self.url)
            try:
                for statement in statements:
                    await db.execute(statement)
            finally:
                await db.close()

        asyncio.run(go())


async def _pause(url: str, org: str, agent: str) -> None:
    db = await open_store(url)
    try:
        await migrate(db)
        state = await record_run_outcome(db, org, agent, "failed", TRIP)
        assert state.paused
    finally:
        await db.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def site(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Site]:
    url = f"sqlite:///{tmp_path}/test.db" if request.param == "sqlite" else _pg_schema_url(request)
    asyncio.run(migrated(url))
    settings = Settings(database_url=url, data_dir=tmp_path, dev=False)
    with running_gateway(settings, PROJECT) as (base, gw):
        yield Site(base, url, gw)


def _body(r: httpx.Response, status: int) -> Any:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    assert len(r.headers["x-trace-id"]) == 32
    return r.json()


def test_a_ready_server_says_ready_and_nothing_else(site: Site) -> None:
    assert _body(site.readyz(), 200) == {"status": "ready"}


def test_paused_agents_of_every_organisation_are_named_and_the_server_stays_ready(
    site: Site,
) -> None:
    asyncio.run(_pause(site.url, "org-b", "support"))
    asyncio.run(_pause(site.url, "org-a", "billing"))
    asyncio.run(_pause(site.url, "org-a", "support"))
    body = _body(site.readyz(), 200)
    assert body == {"status": "ready", "details": {"agents_paused": ["billing", "support"]}}


def test_a_store_that_cannot_list_paused_agents_leaves_them_unknown(site: Site) -> None:
    site.sql("ALTER TABLE agent_breakers RENAME TO agent_breakers_away")
    try:
        assert _body(site.readyz(), 200) == {"status": "ready", "details": {"agents_paused": None}}
        state = site.readiness()
        assert (state.ready, state.paused) == (True, None)
        assert state.checks[-1].detail.startswith("unknown: listing them failed")
    finally:
        site.sql("ALTER TABLE agent_breakers_away RENAME TO agent_breakers")
    assert _body(site.readyz(), 200) == {"status": "ready"}


def test_the_budget_backend_down_makes_the_server_unavailable(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert site.gw.meter is not None

    async def down() -> bool:
        return False

    monkeypatch.setattr(site.gw.meter.gate, "ready", down)
    assert _body(site.readyz(), 503) == {
        "status": "unavailable",
        "checks": {"budgets": "the budget backend (REDIS_URL) does not answer"},
    }


def test_a_draining_server_says_draining(site: Site) -> None:
    site.gw.start_draining()
    assert _body(site.readyz(), 503) == {"status": "draining"}


def test_the_health_page_reads_the_very_facts_readyz_answers(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    asyncio.run(_pause(site.url, "org-a", "support"))
    state = site.readiness()
    assert state.body() == _body(site.readyz(), 200)
    checks = [(c.name, c.ok) for c in state.checks]
    assert checks == [("server", True), ("budgets", True), ("agents", True)]
    assert state.checks[-1].detail.startswith("paused: support ")
    assert site.gw.meter is not None

    async def down() -> bool:
        return False

    monkeypatch.setattr(site.gw.meter.gate, "ready", down)
    state = site.readiness()
    assert (state.status, state.http_status, state.paused) == ("unavailable", 503, ("support",))
    assert state.body() == _body(site.readyz(), 503)
    assert [(c.name, c.ok) for c in state.checks] == [
        ("server", True),
        ("budgets", False),
        ("agents", True),
    ]
