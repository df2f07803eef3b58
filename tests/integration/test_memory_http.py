"""Memory and sessions over real HTTP with real keys, outside dev mode, on both stores, with the
real local embedder (all-MiniLM-L6-v2): who sees what (another user's memory or session is 404),
shared spaces through grants, malformed bodies (400 with a stable code), and an admin forgetting
a user."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from elevenfactor.config import Settings, parse_project
from elevenfactor.governance import create_key, create_user, local_admin
from elevenfactor.memory import append_messages, grant, set_state
from elevenfactor.models import AssistantMessage, UserMessage
from elevenfactor.store import migrate, open_store
from tests.conftest import _pg_schema_url
from tests.support.server import running_gateway

pytestmark = pytest.mark.integration

PROJECT = parse_project(
    {
        "providers": {"t": {"type": "test"}},
        "models": {"echo": {"provider": "t", "model": "echo-1"}},
        "routes": {"default": {"chain": ["echo"]}},
        "memory": {"embedder": "local", "recall": {"min_score": 0.0}},
    }
)
PEOPLE = {"alice": ("member",), "bob": ("member",), "carol": ("member",), "boss": ("admin",)}


@dataclass
class World:
    base: str
    secrets: dict[str, str]
    user_ids: dict[str, str]

    def call(self, who: str, method: str, path: str, **kw: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.secrets[who]}"}
        with httpx.Client(base_url=self.base, headers=headers, timeout=60) as c:
            return c.request(method, path, **kw)


async def _seed(url: str) -> tuple[dict[str, str], dict[str, str]]:
    db = await open_store(url)
    try:
        await migrate(db)
        admin = local_admin("cli")
        secrets, ids = {}, {}
        for name, roles in PEOPLE.items():
            user = await create_user(db, admin, name, roles=roles)
            _, secrets[name] = await create_key(db, admin, f"key-{name}", user=name)
            ids[name] = user.id
        alice = await _principal(db, "alice")
        await append_messages(
            db,
            alice,
            "alice-chat",
            [UserMessage(content="plan the surprise"), AssistantMessage(content="sure")],
            run_id="run_a1",
        )
        await set_state(db, alice, "alice-chat", {"topic": "party"})
        await append_messages(
            db, await _principal(db, "bob"), "bob-chat", [UserMessage(content="hi")]
        )
        await grant(db, admin, "team-notes", f"user:{ids['alice']}", read=True, write=True)
        await grant(db, admin, "team-notes", f"user:{ids['bob']}", read=True, write=False)
        await grant(db, admin, "team-notes", f"user:{ids['carol']}", read=True, write=False)
        carol = await _principal(db, "carol")
        await append_messages(db, carol, "carol-chat", [UserMessage(content="my secret")])
        return secrets, ids
    finally:
        await db.close()


async def _principal(db: Any, name: str) -> Any:
    from elevenfactor.governance import principal_for_user

    return await principal_for_user(db, name)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    tmp: Path = tmp_path_factory.mktemp(f"memory-{request.param}")
    url = f"sqlite:///{tmp}/test.db" if request.param == "sqlite" else _pg_schema_url(request)
    secrets, ids = asyncio.run(_seed(url))
    settings = Settings(database_url=url, data_dir=tmp, dev=False)
    with running_gateway(settings, PROJECT) as (base, _):
        yield World(base, secrets, ids)


def _error(resp: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert resp.status_code == status, (resp.status_code, resp.text)
    err: dict[str, Any] = resp.json()["error"]
    assert err["code"] == code, resp.text
    return err


def test_remember_search_and_ownership(world: World) -> None:
    facts = [
        ("Alice has a golden retriever named Max", None),
        ("Alice is allergic to penicillin", "health.allergy"),
        ("Alice's favourite programming language is OCaml", "user.language"),
    ]
    made = []
    for text, key in facts:
        resp = world.call("alice", "POST", "/v1/memories", json={"text": text, "key": key})
        assert resp.status_code == 201, resp.text
        made.append(resp.json())
    assert made[0]["scope"] == f"user:{world.user_ids['alice']}"
    assert made[0]["embedder"] == "local/all-MiniLM-L6-v2"
    assert made[0]["provenance"] == {"source": "api"}

    # the real embedder ranks by meaning: no word of the query is in the answer
    found = world.call(
        "alice", "POST", "/v1/memories/search", json={"query": "What pet does she own?", "k": 1}
    )
    assert found.status_code == 200, found.text
    assert [m["text"] for m in found.json()["data"]] == [facts[0][0]]
    # a new fact with the same key supersedes, and the history is kept
    newer = world.call(
        "alice",
        "POST",
        "/v1/memories",
        json={"text": "Alice's favourite programming language is Rust", "key": "user.language"},
    ).json()
    assert newer["supersedes"] == made[2]["id"]
    detail = world.call("alice", "GET", f"/v1/memories/{newer['id']}").json()
    assert [h["id"] for h in detail["history"]] == [made[2]["id"], newer["id"]]
    listed = world.call("alice", "GET", "/v1/memories").json()["data"]
    assert made[2]["id"] not in [m["id"] for m in listed] and newer["id"] in [
        m["id"] for m in listed
    ]
    every = world.call("alice", "GET", "/v1/memories", params={"include_inactive": "true"}).json()
    assert made[2]["id"] in [m["id"] for m in every["data"]]

    # bob: another user's memory is 404, as if absent; its scope is refused
    for method in ("GET", "DELETE"):
        _error(world.call("bob", method, f"/v1/memories/{made[0]['id']}"), 404, "memory_not_found")
        _error(world.call("bob", method, "/v1/memories/mem_nope"), 404, "memory_not_found")
    mine = {m["id"] for m in made}
    assert mine.isdisjoint(m["id"] for m in world.call("bob", "GET", "/v1/memories").json()["data"])
    nothing = world.call("bob", "POST", "/v1/memories/search", json={"query": "golden retriever"})
    assert mine.isdisjoint(m["id"] for m in nothing.json()["data"])
    scope = f"user:{world.user_ids['alice']}"
    _error(world.call("bob", "GET", "/v1/memories", params={"scope": scope}), 403, "memory_denied")
    _error(
        world.call("bob", "POST", "/v1/memories/search", json={"query": "x", "scopes": [scope]}),
        403,
        "memory_denied",
    )
    # the admin reads the organisation's memory when it asks for the scope
    seen = world.call("boss", "GET", "/v1/memories", params={"scope": scope}).json()["data"]
    assert {m["id"] for m in seen} >= {made[0]["id"], newer["id"]}

    gone = world.call("alice", "DELETE", f"/v1/memories/{made[1]['id']}")
    assert gone.json() == {"id": made[1]["id"], "object": "memory.deleted", "deleted": 1}
    _error(world.call("alice", "GET", f"/v1/memories/{made[1]['id']}"), 404, "memory_not_found")


def test_shared_space_needs_a_grant(world: World) -> None:
    note = world.call(
        "alice",
        "POST",
        "/v1/memories",
        json={"text": "The office closes early on Friday", "scope": "space:team-notes"},
    )
    assert note.status_code == 201, note.text
    read = world.call(
        "bob",
        "POST",
        "/v1/memories/search",
        json={"query": "when does the office close", "scopes": ["space:team-notes"]},
    )
    assert read.status_code == 200 and read.json()["data"][0]["id"] == note.json()["id"]
    err = _error(
        world.call("bob", "POST", "/v1/memories", json={"text": "x", "scope": "space:team-notes"}),
        403,
        "memory_denied",
    )
    assert "team-notes" in err["message"]
    _error(
        world.call("alice", "POST", "/v1/memories", json={"text": "x", "scope": "space:nowhere"}),
        404,
        "space_not_found",
    )


def test_sessions_are_private(world: World) -> None:
    mine = world.call("alice", "GET", "/v1/sessions").json()["data"]
    assert [s["id"] for s in mine] == ["alice-chat"] and mine[0]["messages"] == 2
    session = world.call("alice", "GET", "/v1/sessions/alice-chat").json()
    assert session["state"] == {"topic": "party"}
    assert [m["message"]["content"] for m in session["data"]] == ["plan the surprise", "sure"]
    assert session["data"][0]["run_id"] == "run_a1"
    last = world.call("alice", "GET", "/v1/sessions/alice-chat", params={"limit": 1}).json()
    assert [m["seq"] for m in last["data"]] == [1]

    for method in ("GET", "DELETE"):
        _error(world.call("bob", method, "/v1/sessions/alice-chat"), 404, "session_not_found")
    assert [s["id"] for s in world.call("bob", "GET", "/v1/sessions").json()["data"]] == [
        "bob-chat"
    ]
    everyone = world.call("boss", "GET", "/v1/sessions").json()["data"]
    assert {s["id"] for s in everyone} >= {"alice-chat", "bob-chat"}
    gone = world.call("bob", "DELETE", "/v1/sessions/bob-chat")
    assert gone.status_code == 200 and gone.json()["deleted"] is True
    _error(world.call("bob", "GET", "/v1/sessions/bob-chat"), 404, "session_not_found")


@pytest.mark.parametrize(
    ("method", "path", "body", "code", "param"),
    [
        ("POST", "/v1/memories", b"{not json", "invalid_json", "body"),
        ("POST", "/v1/memories", b"[1]", "invalid_type", "body"),
        ("POST", "/v1/memories", {"text": ""}, None, "text"),
        ("POST", "/v1/memories", {"text": "a\u0000b"}, None, "text"),
        ("POST", "/v1/memories", {"text": "ok", "importance": 2}, None, "importance"),
        ("POST", "/v1/memories", {"text": "ok", "importance": "high"}, None, "importance"),
        ("POST", "/v1/memories", {"text": "ok", "kind": "rumour"}, None, "kind"),
        ("POST", "/v1/memories", {"text": "ok", "scope": "agent:x"}, None, "scope"),
        ("POST", "/v1/memories", {"text": "ok", "colour": "red"}, None, "colour"),
        ("POST", "/v1/memories/search", {"query": "x", "k": 0}, None, "k"),
        ("POST", "/v1/memories/search", {"query": "x", "scopes": ["team:x"]}, None, "scopes"),
        ("GET", "/v1/memories?limit=0", None, None, "limit"),
        ("GET", "/v1/memories?scope=nope", None, None, "scope"),
        ("GET", "/v1/sessions/a%20b", None, "invalid_id", "id"),
        ("GET", "/v1/sessions/x?limit=-1", None, None, "limit"),
        ("POST", "/v1/admin/memory/forget", {"user": 5}, None, "user"),
    ],
)
def test_malformed_requests_are_400_with_a_code(
    world: World, method: str, path: str, body: Any, code: str | None, param: str
) -> None:
    kw: dict[str, Any] = {}
    if isinstance(body, bytes):
        kw = {"content": body, "headers": {"content-type": "application/json"}}
    elif body is not None:
        kw = {"json": body}
    resp = world.call("boss", method, path, **kw)
    assert resp.status_code == 400, resp.text
    err = resp.json()["error"]
    assert err["code"] and (code is None or err["code"] == code), err
    assert err["param"] is not None and err["param"].startswith(param), err


def test_only_admins_forget_a_user_and_it_is_gone(world: World) -> None:
    made = world.call("carol", "POST", "/v1/memories", json={"text": "Carol collects stamps"})
    assert made.status_code == 201
    _error(
        world.call("alice", "POST", "/v1/admin/memory/forget", json={"user": "carol"}),
        403,
        "permission_denied",
    )
    _error(
        world.call("boss", "POST", "/v1/admin/memory/forget", json={"user": "nobody"}),
        404,
        "not_found",
    )
    done = world.call("boss", "POST", "/v1/admin/memory/forget", json={"user": "carol"})
    assert done.status_code == 200, done.text
    body = done.json()
    assert body["object"] == "memory.forgotten" and body["user_id"] == world.user_ids["carol"]
    assert (body["memories"], body["sessions"], body["messages"], body["grants"]) == (1, 1, 1, 1)
    assert body["cache_entries"] == body["response_cache_entries"] == 0  # no cached route
    assert world.call("carol", "GET", "/v1/memories").json()["data"] == []
    _error(world.call("carol", "GET", f"/v1/memories/{made.json()['id']}"), 404, "memory_not_found")
    assert world.call("carol", "GET", "/v1/sessions").json()["data"] == []
