"""``elevenfactor memory ...`` in-process on both stores, with the real local embedder: list,
search, sessions and forget, acting as an admin or a member (``--as``)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from click.testing import CliRunner, Result

from elevenfactor.cli._main import main
from elevenfactor.context._embed_local import LocalEmbedder
from elevenfactor.governance import DEFAULT_ORG, create_user, local_admin, principal_for_user
from elevenfactor.memory import MemoryActor, Scope, append_messages, remember
from elevenfactor.models import RedisCache, StoreCache, UserMessage
from elevenfactor.store import migrate, open_store

pytestmark = pytest.mark.integration

REDIS_URL = "redis://127.0.0.1:6379/0"


async def _seed(url: str) -> dict[str, str]:
    db = await open_store(url)
    embedder = LocalEmbedder()
    try:
        await migrate(db)
        admin = local_admin("cli")
        ids = {}
        for name in ("alice", "bob"):
            ids[name] = (await create_user(db, admin, name, roles=("member",))).id
        alice = MemoryActor(await principal_for_user(db, "alice"))
        me = Scope.user(alice.user_id)
        for text in ("Alice rides a red bicycle to work", "Alice is vegetarian"):
            await remember(db, embedder, alice, me, text)
        bob = MemoryActor(await principal_for_user(db, "bob"))
        await remember(db, embedder, bob, Scope.user(bob.user_id), "Bob plays chess")
        await append_messages(db, alice.principal, "alice-chat", [UserMessage(content="hi")])
        return ids
    finally:
        await embedder.aclose()
        await db.close()


@pytest.fixture
def cli(store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.chdir(tmp_path)
    ids = asyncio.run(_seed(store_url))
    runner = CliRunner()

    def invoke(
        *args: str, ok: bool = True, stdin: str | None = None, env: dict[str, str] | None = None
    ) -> Result:
        env = {"DATABASE_URL": store_url, **(env or {})}
        result = runner.invoke(main, list(args), env=env, input=stdin)
        if ok:
            assert result.exit_code == 0, (args, result.output, result.exception)
        return result

    invoke.ids = ids  # type: ignore[attr-defined]
    return invoke


async def _cache_answers(url: str, ids: dict[str, str], redis: RedisCache | None = None) -> None:
    """An answer to a call of alice's and one of bob's in the store's response cache (and in
    Redis, if given)."""
    db = await open_store(url)
    try:
        for cache in (StoreCache(db), redis) if redis is not None else (StoreCache(db),):
            assert cache is not None
            for name in ("alice", "bob"):
                await cache.put(f"{name}-q", b"{}", 600, "dep", (DEFAULT_ORG, ids[name]))
    finally:
        await db.close()
        if redis is not None:
            await redis.aclose()


async def _cached_owners(url: str) -> list[str]:
    db = await open_store(url)
    try:
        return sorted(r[0] for r in await db.fetchall("SELECT user_id FROM response_cache"))
    finally:
        await db.close()


def test_list_search_sessions_and_forget(cli: Any, store_url: str) -> None:
    ids = cli.ids
    mine = json.loads(cli("memory", "list", "--as", "alice", "--json").stdout)
    assert {m["text"] for m in mine} == {"Alice rides a red bicycle to work", "Alice is vegetarian"}
    table = cli("memory", "list", "--user", "alice").stdout  # the admin, for people
    assert "Alice is vegetarian" in table and "Bob plays chess" not in table

    found = json.loads(
        cli(
            "memory", "search", "how does she commute", "--user", "alice", "-k", "1", "--json"
        ).stdout
    )
    assert [r["text"] for r in found] == ["Alice rides a red bicycle to work"]
    assert found[0]["score"] > 0
    denied = cli("memory", "search", "chess", "--user", "bob", "--as", "alice", ok=False)
    assert denied.exit_code == 2 and "memory_denied" in denied.stderr

    sessions = json.loads(cli("memory", "sessions", "--json").stdout)
    assert [(s["id"], s["user_id"]) for s in sessions] == [("alice-chat", ids["alice"])]
    assert json.loads(cli("memory", "sessions", "--as", "bob", "--json").stdout) == []

    refused = cli("memory", "forget", "--user", "alice", "--as", "bob", "--yes", ok=False)
    assert refused.exit_code == 2 and "permission_denied" in refused.stderr
    kept = cli("memory", "forget", "--user", "alice", stdin="n\n", ok=False)
    assert kept.exit_code == 1 and "Aborted" in kept.output
    assert len(json.loads(cli("memory", "list", "--user", "alice", "--json").stdout)) == 2

    asyncio.run(_cache_answers(store_url, ids))
    done = cli("memory", "forget", "--user", "alice", stdin="y\n")
    assert "forgot user" in done.stdout and "2 memories" in done.stdout
    assert "1 sessions (1 messages)" in done.stdout
    assert "1 response cache entries" in " ".join(done.stdout.split())  # wrapped for people
    assert asyncio.run(_cached_owners(store_url)) == [ids["bob"]]
    assert json.loads(cli("memory", "list", "--user", "alice", "--json").stdout) == []
    assert json.loads(cli("memory", "sessions", "--json").stdout) == []
    again = json.loads(cli("memory", "forget", "--user", "alice", "--yes", "--json").stdout)
    assert again["memories"] == 0 and again["user_id"] == ids["alice"]
    assert [
        m["text"] for m in json.loads(cli("memory", "list", "--user", "bob", "--json").stdout)
    ] == ["Bob plays chess"]


def test_grants_and_purge(cli: Any) -> None:
    made = json.loads(cli("memory", "grant", "team-notes", "writer", "--write", "--json").stdout)
    assert made == {
        "space": "team-notes", "grantee": "writer", "read": True, "write": True, "source": "admin"
    }  # fmt: skip
    cli("memory", "grant", "team-notes", "reader")
    listed = json.loads(cli("memory", "grants", "--json").stdout)
    assert [(g["grantee"], g["write"]) for g in listed] == [("reader", False), ("writer", True)]
    assert "revoked reader" in cli("memory", "revoke", "team-notes", "reader").stdout
    assert "had no grant" in cli("memory", "revoke", "team-notes", "reader").stdout
    refused = cli("memory", "grant", "team-notes", "x", "--as", "alice", ok=False)
    assert refused.exit_code == 2 and "permission_denied" in refused.stderr
    assert json.loads(cli("memory", "purge", "--json").stdout) == {"deleted": 0}


def test_forget_clears_the_redis_response_cache_too(cli: Any, store_url: str, prefix: str) -> None:
    ids = cli.ids
    env = {"REDIS_URL": REDIS_URL, "ELEVENFACTOR_REDIS_PREFIX": prefix}
    redis = RedisCache.from_url(REDIS_URL, prefix=prefix + "cache:")
    asyncio.run(_cache_answers(store_url, ids, redis))  # rows from before REDIS_URL, and Redis
    done = json.loads(cli("memory", "forget", "--user", "alice", "--yes", "--json", env=env).stdout)
    assert done["response_cache_entries"] == 2  # her row in the store and her entry in Redis
    assert asyncio.run(_cached_owners(store_url)) == [ids["bob"]]

    async def left() -> list[bytes]:
        client = aioredis.Redis.from_url(REDIS_URL)
        try:
            return sorted([k async for k in client.scan_iter(match=prefix + "*")])
        finally:
            await client.aclose()

    owner = f"{prefix}cache:owner:{DEFAULT_ORG}:{ids['bob']}"
    assert asyncio.run(left()) == sorted([f"{prefix}cache:bob-q".encode(), owner.encode()])
