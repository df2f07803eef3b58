"""Property-based fuzzing of the memory and session endpoints over real HTTP, on both stores,
with the real local embedder: bodies and query strings from each endpoint's own schema, near
misses and arbitrary bytes, path ids with NUL, ``/`` and thousands of characters. Whatever comes
in, no 5xx; every 4xx is an error object with a code (and a param for a 400); a schema-valid
request is never refused by the validator; the server still serves afterwards.

The strategies and checks are the API fuzz suite's (``test_fuzz``)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from elevenfactor.governance import create_key, create_user, local_admin, principal_for_user
from elevenfactor.memory import append_messages, grant
from elevenfactor.models import UserMessage
from elevenfactor.server._memory_schemas import (
    ForgetUser,
    MemoryCreate,
    MemoryQuery,
    MemorySearch,
    SessionQuery,
    SessionsQuery,
)
from elevenfactor.store import migrate, open_store
from tests.conftest import _pg_schema_url
from tests.integration.test_fuzz import (
    check,
    encode,
    from_model,
    mutated,
    path_ids,
    query_of,
    raw_bodies,
    send,
)
from tests.support.serve import Server

pytestmark = pytest.mark.integration

PROJECT = """
providers: {t: {type: test}}
models: {echo: {provider: t, model: echo-1}}
routes: {default: {chain: [echo]}}
memory: {embedder: local}
"""

FUZZ = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "60")),
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
)


@dataclass
class Target:
    admin: httpx.Client
    member: httpx.Client
    memories: list[str]
    sessions: list[str]

    def client(self, as_admin: bool) -> httpx.Client:
        return self.admin if as_admin else self.member


async def _setup(url: str) -> dict[str, str]:
    db = await open_store(url)
    try:
        await migrate(db)
        admin = local_admin("cli")
        await create_user(db, admin, "ada", roles=("admin",))
        await create_user(db, admin, "max", roles=("member",))
        max_ = await principal_for_user(db, "max")
        await append_messages(db, max_, "max-chat", [UserMessage(content="hello")])
        await append_messages(db, admin, "admin-chat", [UserMessage(content="hi")])
        await grant(db, admin, "notes", f"user:{max_.user_id}", read=True, write=True)
        return {
            name: (await create_key(db, admin, f"{name}-key", user=name))[1]
            for name in ("ada", "max")
        }
    finally:
        await db.close()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def target(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Target]:
    tmp: Path = tmp_path_factory.mktemp(f"memfuzz-{request.param}")
    url = f"sqlite:///{tmp}/test.db" if request.param == "sqlite" else _pg_schema_url(request)
    keys = asyncio.run(_setup(url))
    (tmp / "elevenfactor.yaml").write_text(PROJECT)
    server = Server(tmp, url, dev=False)
    server.start()
    timeout = httpx.Timeout(30.0)
    try:
        with (
            httpx.Client(
                base_url=server.base, timeout=timeout, headers=_auth(keys["ada"])
            ) as admin,
            httpx.Client(
                base_url=server.base, timeout=timeout, headers=_auth(keys["max"])
            ) as member,
        ):
            made = member.post("/v1/memories", json={"text": "max likes tea", "key": "max.tea"})
            assert made.status_code == 201, made.text
            other = admin.post("/v1/memories", json={"text": "the admin's own note"})
            assert other.status_code == 201, other.text
            yield Target(
                admin,
                member,
                [made.json()["id"], other.json()["id"]],
                ["max-chat", "admin-chat", "nope"],
            )
    finally:
        server.stop()


def _auth(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def still_serving(t: Target) -> None:
    for _ in range(6):
        assert t.member.get("/v1/memories").status_code == 200
        assert t.member.get("/v1/sessions/max-chat").status_code == 200


BODIES: dict[str, type[BaseModel]] = {
    "/v1/memories": MemoryCreate,
    "/v1/memories/search": MemorySearch,
    "/v1/admin/memory/forget": ForgetUser,
}


@FUZZ
@given(
    path=st.sampled_from(["/v1/memories", "/v1/memories/search"]),
    data=st.data(),
    as_admin=st.booleans(),
)
def test_bodies_from_the_schema(target: Target, path: str, data: Any, as_admin: bool) -> None:
    body = data.draw(from_model(BODIES[path]))
    if path == "/v1/memories" and "scope" in body:
        body = {**body, "scope": data.draw(st.sampled_from(["user", "space:notes", body["scope"]]))}
    resp = send(target.client(as_admin), "POST", path, content=encode(body))
    check(resp, schema_valid=True)


@FUZZ
@given(
    path=st.sampled_from(sorted(BODIES)),
    data=st.data(),
    raw=raw_bodies,
    use_raw=st.booleans(),
    as_admin=st.booleans(),
)
def test_near_misses_and_garbage_bodies(
    target: Target, path: str, data: Any, raw: bytes, use_raw: bool, as_admin: bool
) -> None:
    content = raw if use_raw else encode(data.draw(mutated(BODIES[path])))
    if path == "/v1/admin/memory/forget" and not use_raw:
        as_admin = False  # never forget the fixture's users; a member is refused before the body
    check(send(target.client(as_admin), "POST", path, content=content))


@FUZZ
@given(
    which=st.sampled_from(["memories", "sessions", "session"]),
    data=st.data(),
    as_admin=st.booleans(),
)
def test_query_strings(target: Target, which: str, data: Any, as_admin: bool) -> None:
    models: dict[str, type[BaseModel]] = {
        "memories": MemoryQuery,
        "sessions": SessionsQuery,
        "session": SessionQuery,
    }
    model = models[which]
    path = {"memories": "/v1/memories", "sessions": "/v1/sessions"}.get(
        which, "/v1/sessions/max-chat"
    )
    valid = data.draw(st.booleans())
    if valid:
        params: list[tuple[str, Any]] = [
            (k, str(v)) for k, v in data.draw(from_model(model)).items() if v is not None
        ]
    else:
        params = list(data.draw(query_of(model)))
    check(target.client(as_admin).get(path, params=params), schema_valid=False)


@FUZZ
@given(
    kind=st.sampled_from(["memories", "sessions"]),
    data=st.data(),
    method=st.sampled_from(["GET", "DELETE"]),
    as_admin=st.booleans(),
)
def test_path_ids(target: Target, kind: str, data: Any, method: str, as_admin: bool) -> None:
    known = target.memories if kind == "memories" else target.sessions
    ident = data.draw(path_ids(known))
    if method == "DELETE" and ident in known:
        method = "GET"  # keep the fixture's objects for the other examples
    check(send(target.client(as_admin), method, f"/v1/{kind}/{ident}"))


def test_still_serving_after_fuzzing(target: Target) -> None:
    still_serving(target)
    listed = target.member.get("/v1/memories").json()["data"]
    assert target.memories[0] in [m["id"] for m in listed]
