"""``GET /v1/cost`` over real HTTP with real keys, outside dev mode, on both stores: the gateway
attributes each call (owner, tags, session, price version); a member sees only its own spend;
malformed queries and session headers are 400s naming the parameter."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from elevenfactor.config import Settings, parse_project
from elevenfactor.governance import PriceBook, create_key, create_user, local_admin
from elevenfactor.store import migrate, open_store
from tests.conftest import _pg_schema_url
from tests.support.server import running_gateway

pytestmark = pytest.mark.integration

PROJECT = parse_project(
    {
        "providers": {"t": {"type": "test"}},
        "models": {"echo": {"provider": "t", "model": "echo-1"}},
        "routes": {"default": {"chain": ["echo"]}},
        "prices": {"echo": {"input_per_mtok": 1000, "output_per_mtok": 0, "per_request": 0.01}},
    }
)


@dataclass
class World:
    base: str
    url: str
    secrets: dict[str, str]

    def get(self, who: str | None, path: str, **kw: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.secrets[who]}"} if who else {}
        return httpx.get(self.base + path, headers=headers, timeout=30, **kw)

    def chat(self, who: str, text: str, **headers: str) -> httpx.Response:
        return httpx.post(
            self.base + "/v1/chat/completions",
            json={"model": "default", "messages": [{"role": "user", "content": text}]},
            headers={"Authorization": f"Bearer {self.secrets[who]}", **headers},
            timeout=30,
        )

    def report(self, who: str, **params: str) -> dict[str, Any]:
        resp = self.get(who, "/v1/cost", params=params)
        assert resp.status_code == 200, resp.text
        return dict(resp.json())


async def _people(url: str) -> dict[str, str]:
    db = await open_store(url)
    try:
        await migrate(db)
        admin = local_admin("cli")
        secrets = {}
        for name, roles in (("ann", ("member",)), ("bob", ("member",)), ("boss", ("admin",))):
            await create_user(db, admin, name, roles=roles)
            _, secrets[name] = await create_key(db, admin, f"key-{name}", user=name)
        return secrets
    finally:
        await db.close()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    tmp: Path = tmp_path_factory.mktemp(f"cost-{request.param}")
    url = f"sqlite:///{tmp}/test.db" if request.param == "sqlite" else _pg_schema_url(request)
    secrets = asyncio.run(_people(url))
    settings = Settings(database_url=url, data_dir=tmp, dev=False, in_process_worker=True)
    with running_gateway(settings, PROJECT) as (base, _gw):
        w = World(base, url, secrets)
        for who, text, headers in (
            ("ann", "one two three", {"x-elevenfactor-tags": "search, prod",
                                      "x-elevenfactor-session": "chat:42"}),
            ("ann", "four", {}),
            ("bob", "five six", {"x-elevenfactor-tags": "prod"}),
        ):  # fmt: skip
            resp = w.chat(who, text, **headers)
            assert resp.status_code == 200, resp.text
        _wait_for_calls(w, 3)
        yield w


def _wait_for_calls(w: World, n: int) -> None:
    deadline = time.monotonic() + 15
    while w.report("boss")["totals"]["calls"] < n:
        assert time.monotonic() < deadline, "the call records were not written"
        time.sleep(0.05)


def test_the_gateway_attributes_each_call(world: World) -> None:
    async def rows() -> list[tuple[Any, ...]]:
        db = await open_store(world.url)
        try:
            return await db.fetchall(
                "SELECT u.name, c.tags, c.session_id, c.cost, c.price_version, c.tokens_cached"
                " FROM model_calls c JOIN users u ON u.id = c.user_id ORDER BY c.created_at"
            )
        finally:
            await db.close()

    found = asyncio.run(rows())
    version = PriceBook.from_project(PROJECT).price("echo")
    assert version is not None
    assert found[0][:3] == ("ann", '["search","prod"]', "chat:42")
    assert found[0][3] == pytest.approx(3 * 1000 / 1e6 + 0.01)
    assert found[0][4] == version.version and found[0][5] == 0
    assert found[1][1:3] == (None, None)


def test_members_see_their_own_spend_admins_everyone(world: World) -> None:
    ann = world.report("ann", by="user,model")
    assert [(r["names"]["user"], r["group"]["model"]) for r in ann["data"]] == [("ann", "echo")]
    assert ann["totals"]["calls"] == 2
    assert ann["totals"]["cost"] == pytest.approx(4 * 1000 / 1e6 + 0.02)
    boss = world.report("boss", by="user")
    assert {r["names"]["user"]: r["calls"] for r in boss["data"]} == {"ann": 2, "bob": 1}
    # a member's filter on another user finds nothing
    assert world.report("bob", where="user:ann")["totals"]["calls"] == 0


def test_tags_sessions_buckets_and_csv(world: World) -> None:
    tags = world.report("boss", by="tag")
    assert {r["group"]["tag"]: r["calls"] for r in tags["data"]} == {
        "prod": 2,
        "search": 1,
        None: 1,
    }
    assert tags["totals"]["calls"] == 3
    sessions = world.report("boss", by="session", where="tag:search")
    assert [(r["group"]["session"], r["calls"]) for r in sessions["data"]] == [("chat:42", 1)]
    today = time.strftime("%Y-%m-%d", time.gmtime())
    daily = world.report("boss", per="day", since="1d")
    assert [r["bucket"] for r in daily["data"]] == [today]
    assert world.report("boss", until="2000-01-01")["data"] == []
    resp = world.get("boss", "/v1/cost", params={"by": "user", "format": "csv"})
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/csv")
    lines = resp.text.strip().splitlines()
    assert lines[0].startswith("user,calls,errors") and lines[-1].startswith("total,3,0")


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"by": "colour"}, "by"),
        ({"by": "user,"}, "by"),
        ({"by": "user,user"}, "by"),
        ({"per": "year"}, "per"),
        ({"since": "yesterday"}, "since"),
        ({"since": "2026-13-45"}, "since"),
        ({"until": "x" * 100}, "until"),
        ({"where": "colour:red"}, "where"),
        ({"where": "model"}, "where"),
        ({"where": "model:a,model:b"}, "where"),
        ({"format": "xml"}, "format"),
        ({"limit": "3"}, "limit"),
    ],
)
def test_malformed_queries_are_400s_naming_the_parameter(
    world: World, params: dict[str, str], param: str
) -> None:
    resp = world.get("ann", "/v1/cost", params=params)
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["param"] == param


def test_a_duplicated_parameter_and_no_key_are_refused(world: World) -> None:
    resp = world.get("ann", "/v1/cost?by=user&by=model")
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "by"
    assert world.get(None, "/v1/cost").status_code == 401


def test_a_malformed_session_header_is_a_400(world: World) -> None:
    resp = world.chat("ann", "x", **{"x-elevenfactor-session": "bad/session"})
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["param"] == "x-elevenfactor-session"
    ok = world.chat("ann", "x", **{"x-elevenfactor-session": "s-1"})
    assert ok.status_code == 200 and ok.headers["x-elevenfactor-session"] == "s-1"
