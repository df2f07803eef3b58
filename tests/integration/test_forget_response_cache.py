"""Forgetting a user deletes the exact response cache's answers to the user's calls: in the
store's table (SQLite and PostgreSQL), in Redis and in process memory, through ``forget_user``
and through the real gateway (``POST /v1/admin/memory/forget``); another user's stay."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import httpx
import openai
import pytest
import redis.asyncio as aioredis

from elevenfactor.config import CacheConfig, Settings, parse_project
from elevenfactor.errors import StoreError
from elevenfactor.governance import Principal, create_key, create_user, local_admin
from elevenfactor.memory import forget_user
from elevenfactor.models import (
    AssistantMessage,
    CacheBackend,
    Call,
    FunctionModel,
    MemoryCache,
    Message,
    ModelSettings,
    RedisCache,
    Response,
    ResponseCache,
    StoreCache,
    Usage,
    UserMessage,
)
from elevenfactor.store import Store, migrate, open_store
from tests.conftest import free_port
from tests.support.principals import member
from tests.support.server import running_gateway

pytestmark = pytest.mark.integration

REDIS_URL = "redis://127.0.0.1:6379/0"
ADA = member("ada")
BOB = member("bob")
T0 = ModelSettings(temperature=0)


async def _echo(messages: Sequence[Message], settings: ModelSettings) -> Response:
    return Response(
        message=AssistantMessage(content=f"you asked: {messages[-1].content}"),
        usage=Usage(input_tokens=1, output_tokens=1),
        model="echo",
        finish_reason="stop",
    )


async def _ask(model: ResponseCache, who: Principal, text: str) -> Call:
    call = Call(org_id=who.org_id, user_id=who.user_id)
    await model.request([UserMessage(content=text)], T0, call)
    return call


@pytest.fixture(params=["store", "redis", "memory"])
async def backend(
    request: pytest.FixtureRequest, store: Store, prefix: str
) -> AsyncIterator[CacheBackend]:
    """The deployment's exact cache: the store's table, Redis (under the test's ``prefix``) or
    process memory."""
    if request.param == "store":
        yield StoreCache(store)
        return
    if request.param == "memory":
        yield MemoryCache()
        return
    cache = RedisCache.from_url(REDIS_URL, prefix=prefix + "cache:")
    try:
        yield cache
    finally:
        await cache.aclose()


async def test_forget_user_deletes_the_answers_to_the_users_calls(
    store: Store, backend: CacheBackend
) -> None:
    # an answer of Ada's left in the store's table from before the deployment used Redis
    await StoreCache(store).put("from-before", b"{}", 600, "dep", (ADA.org_id, ADA.user_id))
    model = ResponseCache(FunctionModel(_echo, name="dep"), backend, config=CacheConfig(ttl=600))
    await _ask(model, ADA, "What is Ada's diagnosis?")
    await _ask(model, BOB, "What is Bob's favourite opening?")
    assert (await _ask(model, ADA, "What is Ada's diagnosis?")).cache_hit

    done = await forget_user(store, local_admin("cli"), ADA.user_id, cache=backend)
    assert done.response_cache_entries == 2  # her call's answer and the row from before
    assert done.to_dict()["response_cache_entries"] == 2

    assert not (await _ask(model, ADA, "What is Ada's diagnosis?")).cache_hit  # asked again
    assert (await _ask(model, BOB, "What is Bob's favourite opening?")).cache_hit  # Bob's stays
    assert await store.fetchall("SELECT 1 FROM response_cache WHERE key = 'from-before'") == []
    [entry] = await store.fetchall(
        "SELECT body FROM ledger WHERE kind = 'admin.memory.forget_user'"
    )
    assert "diagnosis" not in entry[0]  # counts only, never the content
    assert json.loads(entry[0])["user_id"] == ADA.user_id


async def test_redis_down_forgets_the_rest_and_says_to_run_again(store: Store) -> None:
    await StoreCache(store).put("k", b"{}", 600, "dep", (ADA.org_id, ADA.user_id))
    down = RedisCache.from_url(f"redis://127.0.0.1:{free_port()}/0")
    try:
        with pytest.raises(StoreError) as info:
            await forget_user(store, local_admin("cli"), ADA.user_id, cache=down)
    finally:
        await down.aclose()
    assert "run the forget again" in str(info.value)
    assert await store.fetchall("SELECT 1 FROM response_cache") == []  # committed
    assert await store.fetchall("SELECT 1 FROM ledger WHERE kind = 'admin.memory.forget_user'")


# -- the gateway --------------------------------------------------------------------------------

PROJECT = parse_project(
    {
        "providers": {"t": {"type": "test"}},
        "models": {"echo": {"provider": "t", "model": "echo-1"}},
        "routes": {"default": {"chain": ["echo"], "cache": {"ttl": 600}}},
    }
)


async def _seed(url: str) -> tuple[dict[str, str], dict[str, str]]:
    """Ada and Bob (members) and the boss (an admin), with keys: secrets and ids by name."""
    db = await open_store(url)
    try:
        await migrate(db)
        admin = local_admin("cli")
        secrets, ids = {}, {}
        for name, roles in {"ada": ("member",), "bob": ("member",), "boss": ("admin",)}.items():
            ids[name] = (await create_user(db, admin, name, roles=roles)).id
            _, secrets[name] = await create_key(db, admin, f"key-{name}", user=name)
        return secrets, ids
    finally:
        await db.close()


async def _owners(url: str, redis_prefix: str | None) -> list[str]:
    """The user ids that own stored answers: the store's rows, or the owners' indexes in
    Redis (``<prefix>cache:owner:<org>:<user>``)."""
    if redis_prefix is not None:
        client = aioredis.Redis.from_url(REDIS_URL)
        try:
            found = [k async for k in client.scan_iter(match=redis_prefix + "cache:owner:*")]
            return sorted(k.decode().rsplit(":", 1)[1] for k in found)
        finally:
            await client.aclose()
    db = await open_store(url)
    try:
        return sorted(r[0] for r in await db.fetchall("SELECT user_id FROM response_cache"))
    finally:
        await db.close()


@pytest.mark.parametrize("where", ["store", "redis"])
def test_the_gateway_forgets_a_users_cached_answers(
    where: str, store_url: str, tmp_path: Path, prefix: str
) -> None:
    secrets, ids = asyncio.run(_seed(store_url))
    settings = Settings(database_url=store_url, data_dir=tmp_path, dev=False)
    redis_prefix: str | None = None
    if where == "redis":
        redis_prefix = prefix
        settings = settings.model_copy(
            update={"redis_url": REDIS_URL, "redis_prefix": redis_prefix}
        )
    with running_gateway(settings, PROJECT) as (base, _):

        def chat(who: str, text: str) -> tuple[str, httpx.Headers]:
            client = openai.OpenAI(base_url=base + "/v1", api_key=secrets[who], max_retries=0)
            raw = client.chat.completions.with_raw_response.create(
                model="default", messages=[{"role": "user", "content": text}], temperature=0
            )
            return raw.parse().choices[0].message.content or "", raw.headers

        ada_q, bob_q = "Ada's account number is 4711, right?", "Bob asks about chess"
        for who, text in (("ada", ada_q), ("bob", bob_q)):
            assert "x-elevenfactor-cache" not in chat(who, text)[1]
            assert chat(who, text)[1]["x-elevenfactor-cache"] == "hit"
        assert asyncio.run(_owners(store_url, redis_prefix)) == sorted([ids["ada"], ids["bob"]])

        with httpx.Client(base_url=base, timeout=60) as http:
            done = http.post(
                "/v1/admin/memory/forget",
                json={"user": "ada"},
                headers={"Authorization": f"Bearer {secrets['boss']}"},
            )
        assert done.status_code == 200, done.text
        assert done.json()["response_cache_entries"] == 1
        assert asyncio.run(_owners(store_url, redis_prefix)) == [ids["bob"]]

        # her answer is served to no one any more (identical requests share an entry)
        text, headers = chat("bob", ada_q)
        assert text == f"echo: {ada_q}" and "x-elevenfactor-cache" not in headers
        assert chat("bob", bob_q)[1]["x-elevenfactor-cache"] == "hit"  # Bob's stays
