"""Agents' circuit breakers over HTTP, on both stores, with real keys outside dev mode: every
member reads its organisation's breakers (never another's); only an admin resets a paused one,
with a reason in the ledger; a member is 403, an unknown or another organisation's agent 404
``agent_not_found``, one not paused 409 ``agent_not_paused``, a malformed body 400."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from elevenfactor.config import Settings, parse_project
from elevenfactor.governance import Principal, create_key, create_user, local_admin
from elevenfactor.governance._agent_breaker import record_run_outcome
from elevenfactor.governance._policy_model import AgentBreaker
from elevenfactor.store import migrate, open_store
from tests.conftest import _pg_schema_url
from tests.support.http import expect_error as _error
from tests.support.server import running_gateway

pytestmark = pytest.mark.integration

BREAKER = AgentBreaker(window_seconds=3600, min_runs=4, max_error_rate=0.5, max_block_rate=0.75)
PROJECT = parse_project(
    {
        "providers": {"t": {"type": "test"}},
        "models": {"echo": {"provider": "t", "model": "echo-1"}},
        "routes": {"default": {"chain": ["echo"]}},
    }
)


async def _trip(url: str, org: str, agent: str, outcomes: str) -> None:
    """Record one outcome per letter (s: succeeded, f: failed, b: blocked), ending now."""
    names = {"s": "succeeded", "f": "failed", "b": "blocked"}
    db = await open_store(url)
    try:
        for letter in outcomes:
            await record_run_outcome(db, org, agent, names[letter], BREAKER, policy="p@1")
    finally:
        await db.close()


async def _ledger(url: str, kind: str) -> list[dict[str, Any]]:
    db = await open_store(url)
    try:
        rows = await db.fetchall("SELECT body FROM ledger WHERE kind = ? ORDER BY seq", (kind,))
        return [json.loads(str(r[0])) for r in rows]
    finally:
        await db.close()


@dataclass
class World:
    base: str
    url: str
    secrets: dict[str, str]

    def call(self, who: str | None, method: str, path: str, **kw: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.secrets[who]}"} if who else {}
        with httpx.Client(base_url=self.base, headers=headers, timeout=30) as c:
            return c.request(method, path, **kw)

    def breakers(self, who: str, **params: Any) -> dict[str, dict[str, Any]]:
        resp = self.call(who, "GET", "/v1/agents/breakers", params=params)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["object"] == "list"
        return {b["agent"]: b for b in body["data"]}

    def reset(self, who: str | None, agent: str, body: Any = None, **kw: Any) -> httpx.Response:
        if body is not None:
            kw["json"] = body
        return self.call(who, "POST", f"/v1/agents/{agent}/reset", **kw)


async def _seed(url: str) -> dict[str, str]:
    db = await open_store(url)
    try:
        await migrate(db)
        admin = local_admin("cli")
        secrets = {}
        for name in ("ann", "boss"):
            roles = ("admin",) if name == "boss" else ("member",)
            await create_user(db, admin, name, roles=roles)
            _, secrets[name] = await create_key(db, admin, f"key-{name}", user=name)
        await db.execute("INSERT INTO orgs (id, name, created_at) VALUES ('org_two', 'two', 0)")
        alien_admin = Principal("org_two", "u_root2", "root2", roles=frozenset({"admin"}))
        await create_user(db, alien_admin, "eve", roles=("admin",))
        _, secrets["eve"] = await create_key(db, alien_admin, "key-eve", user="eve")
        return secrets
    finally:
        await db.close()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    tmp: Path = tmp_path_factory.mktemp(f"breakerapi-{request.param}")
    url = f"sqlite:///{tmp}/test.db" if request.param == "sqlite" else _pg_schema_url(request)
    secrets = asyncio.run(_seed(url))
    asyncio.run(_trip(url, "org_default", "support", "sfff"))  # paused: 75% errors
    asyncio.run(_trip(url, "org_default", "sales", "ssb"))  # closed: too few runs
    asyncio.run(_trip(url, "org_two", "billing", "bbbb"))  # paused, another organisation
    settings = Settings(database_url=url, data_dir=tmp, dev=False, in_process_worker=False)
    with running_gateway(settings, PROJECT) as (base, _):
        yield World(base, url, secrets)


def test_members_read_their_organisations_breakers(world: World) -> None:
    seen = world.breakers("ann")
    assert set(seen) >= {"support", "sales"} and "billing" not in seen
    support = seen["support"]
    assert support["object"] == "agent_breaker" and support["state"] == "paused"
    assert "error rate 75%" in support["reason"] and support["tripped_at"] is not None
    assert support["window"]["runs"] == 4 and support["window"]["errors"] == 3
    assert support["window"]["error_rate"] == 0.75 and support["policy"] == "p@1"
    assert support["limits"] == {"min_runs": 4, "max_error_rate": 0.5, "max_block_rate": 0.75}
    sales = seen["sales"]
    assert sales["state"] == "closed" and sales["reason"] is None
    assert (sales["window"]["runs"], sales["window"]["blocks"]) == (3, 1)
    assert world.breakers("boss")["support"]["state"] == "paused"
    assert "support" in world.breakers("ann", state="paused")
    assert "sales" not in world.breakers("ann", state="paused")
    assert set(world.breakers("ann", state="closed")) >= {"sales"}
    assert "support" not in world.breakers("ann", state="closed")
    assert set(world.breakers("eve")) == {"billing"}  # another organisation's only


def test_a_member_may_not_reset(world: World) -> None:
    _error(world.reset("ann", "support", {"reason": "looks fine"}), 403, "permission_denied")
    assert world.breakers("ann")["support"]["state"] == "paused"


def test_an_admin_resets_with_a_reason_in_the_ledger(world: World) -> None:
    asyncio.run(_trip(world.url, "org_default", "refunds", "ffff"))
    assert world.breakers("boss")["refunds"]["state"] == "paused"
    resp = world.reset("boss", "refunds", {"reason": "upstream fixed"})
    assert resp.status_code == 200, resp.text
    state = resp.json()
    assert (state["agent"], state["state"], state["reset_by"], state["reset_reason"]) == (
        "refunds",
        "closed",
        "boss",
        "upstream fixed",
    )
    assert state["window"]["runs"] == 0  # outcomes before the reset no longer count
    assert world.breakers("ann")["refunds"]["state"] == "closed"
    entries = [
        e for e in asyncio.run(_ledger(world.url, "admin.agent_reset")) if e["agent"] == "refunds"
    ]
    assert len(entries) == 1 and entries[0]["reason"] == "upstream fixed"
    assert entries[0]["org_id"] == "org_default" and "error rate" in entries[0]["was"]
    # resetting again, or an agent that is not paused: 409, as the CLI answers
    _error(world.reset("boss", "refunds", {"reason": "again"}), 409, "agent_not_paused")
    _error(world.reset("boss", "sales", {"reason": "why not"}), 409, "agent_not_paused")


def test_unknown_or_another_organisations_agent_is_404(world: World) -> None:
    _error(world.reset("boss", "nobody", {"reason": "x"}), 404, "agent_not_found", "name")
    _error(world.reset("boss", "billing", {"reason": "x"}), 404, "agent_not_found", "name")
    _error(world.reset("eve", "support", {"reason": "x"}), 404, "agent_not_found", "name")
    assert world.breakers("eve")["billing"]["state"] == "paused"
    assert world.breakers("ann")["support"]["state"] == "paused"


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        ({}, "missing_required_parameter", "reason"),
        ({"reason": ""}, "invalid_value", "reason"),
        ({"reason": "   "}, "missing_required_parameter", "reason"),
        ({"reason": 7}, "invalid_type", "reason"),
        ({"reason": "x" * 1001}, "invalid_value", "reason"),
        ({"reason": "bell\x07"}, "invalid_value", "reason"),
        ({"reason": "ok", "by": "someone"}, "unknown_parameter", "by"),
        ([1], "invalid_type", "body"),
    ],
)
def test_malformed_reset_bodies_are_400(world: World, body: Any, code: str, param: str) -> None:
    _error(world.reset("boss", "support", body), 400, code, param)
    assert world.breakers("boss")["support"]["state"] == "paused"


def test_malformed_requests_are_400(world: World) -> None:
    raw = world.reset(
        "boss", "support", content=b"{nope", headers={"Content-Type": "application/json"}
    )
    _error(raw, 400, "invalid_json", "body")
    _error(world.reset("boss", "bad%20name", {"reason": "x"}), 400, "invalid_id", "name")
    bad = world.call("ann", "GET", "/v1/agents/breakers", params={"state": "open"})
    _error(bad, 400, "invalid_value", "state")
    bad = world.call("ann", "GET", "/v1/agents/breakers", params={"org": "org_two"})
    _error(bad, 400, "unknown_parameter", "org")


def test_authentication_and_openapi(world: World) -> None:
    assert world.call(None, "GET", "/v1/agents/breakers").status_code == 401
    assert world.reset(None, "support", {"reason": "x"}).status_code == 401
    paths = world.call("ann", "GET", "/openapi.json").json()["paths"]
    assert set(paths["/v1/agents/breakers"]) == {"get"}
    reset = paths["/v1/agents/{name}/reset"]["post"]
    assert "requestBody" in reset and reset["parameters"][0]["name"] == "name"
