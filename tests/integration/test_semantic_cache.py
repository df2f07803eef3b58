"""The semantic response cache on SQLite and PostgreSQL with the real local embedder
(all-MiniLM-L6-v2) and a scripted model that fails loudly if it is asked more than expected:
paraphrases hit, other questions and other conversations miss, scopes, a second process, expiry,
eviction, streams, failures that never fail a call, forgetting a user, and the real gateway
through the official ``openai`` client."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import pytest

from elevenfactor.config import CacheConfig, SemanticCacheConfig, Settings, parse_project
from elevenfactor.context import LocalEmbedder, open_embedders
from elevenfactor.errors import ConfigError
from elevenfactor.governance import local_admin
from elevenfactor.memory import forget_user
from elevenfactor.models import (
    AssistantMessage,
    CacheRequest,
    Call,
    Deployment,
    MemoryCache,
    Message,
    ModelRegistry,
    ModelSettings,
    ResponseCache,
    ScriptedModel,
    SemanticCache,
    SemanticIndex,
    StreamChunk,
    SystemMessage,
    UserMessage,
    purge_semantic_expired,
)
from elevenfactor.models._assembler import StreamAssembler
from elevenfactor.runtime import Housekeeper, build_runtime
from elevenfactor.store import Store, open_store

pytestmark = pytest.mark.integration

SYSTEM = SystemMessage(content="You are the help desk of Example Corp.")
RESET = "How do I reset my password?"
RESET_2 = "How can I reset my password?"  # cosine 0.99 with RESET
CHANGE = "How do I change my password?"  # 0.87: close, but another question
VACATION = "How many days of vacation do I get?"
VACATION_2 = "How many vacation days do I get?"  # 0.98
SICK = "How many sick days do I get?"  # 0.69
BREAD = "How do I bake sourdough bread?"
T0 = ModelSettings(temperature=0)


def ask(text: str, *before: Message) -> list[Message]:
    return [SYSTEM, *before, UserMessage(content=text)]


def caller(user: str = "user_alice", org: str = "org_default") -> Call:
    return Call(org_id=org, user_id=user)


class Counting:
    """The real local embedder, counting its calls (or failing, or slow, when told)."""

    def __init__(self, fail: BaseException | None = None, delay: float = 0.0) -> None:
        self.inner = LocalEmbedder()
        self.fail = fail
        self.delay = delay
        self.calls = 0

    @property
    def name(self) -> str:
        return self.inner.name

    async def embed(self, texts: Sequence[str]) -> Any:
        self.calls += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail is not None:
            raise self.fail
        return await self.inner.embed(texts)


class NoExactCache:
    """An exact cache that never holds anything: what is left is the semantic cache."""

    async def get(self, key: str) -> bytes | None:
        return None

    async def put(self, key: str, value: bytes, ttl: int, model: str, owner: Any = None) -> None:
        pass

    async def forget(self, org_id: str, user_id: str) -> int:
        return 0

    async def aclose(self) -> None:
        pass


def cached(
    store: Store,
    script: Sequence[str],
    *,
    embedder: Counting | None = None,
    clock: Callable[[], float] = time.time,
    exact: bool = True,
    **semantic: Any,
) -> tuple[ResponseCache, ScriptedModel, Counting]:
    """A route ``default`` over a scripted deployment ``m``, with an exact cache in memory
    (unless not ``exact``) and a semantic cache in ``store``."""
    model = ScriptedModel(script, name="m")
    semantic.setdefault("timeout", 30)  # a busy CI machine may take a while to load the model
    config = CacheConfig(ttl=60, semantic=SemanticCacheConfig(**semantic))
    assert config.semantic is not None
    emb = embedder or Counting()
    sem = SemanticCache(
        config.semantic, emb, SemanticIndex(store, clock=clock), model_version="v1", route="default"
    )
    deployment = Deployment(model, provider="test", model_id="scripted-1", timeout=30)
    backend = MemoryCache() if exact else NoExactCache()
    return (
        ResponseCache(deployment, backend, config=config, model_version="v1", semantic=sem),
        model,
        emb,
    )


async def text_of(
    cache: ResponseCache, messages: list[Message], call: Call, settings: ModelSettings = T0
) -> str:
    response = await cache.request(messages, settings, call)
    return response.message.content or ""


async def rows(store: Store, where: str = "1 = 1", params: tuple[Any, ...] = ()) -> int:
    found = await store.fetchone(f"SELECT count(*) FROM semantic_cache WHERE {where}", params)
    return int(found[0]) if found else 0


async def test_a_paraphrase_hits_and_other_questions_miss(store: Store) -> None:
    cache, model, _ = cached(store, ["Use the reset link.", "Open settings.", "Flour, water."])
    first = caller()
    assert await text_of(cache, ask(RESET), first) == "Use the reset link."
    assert first.path == ["m:ok"] and not first.cache_hit

    near = caller()
    assert await text_of(cache, ask(RESET_2), near) == "Use the reset link."
    assert near.cache_hit and len(model.calls) == 1
    [hit] = near.attempts
    assert (hit.deployment, hit.provider, hit.model, hit.outcome) == (
        "m",
        "test",
        "scripted-1",
        "semantic_hit",
    )
    assert hit.similarity is not None and 0.95 <= hit.similarity <= 1.0
    assert near.path == [f"m:semantic_hit@{hit.similarity:.4f}"]

    assert await text_of(cache, ask(CHANGE), caller()) == "Open settings."  # 0.87 < 0.95
    assert await text_of(cache, ask(BREAD), caller()) == "Flour, water."
    # the identical question is an exact hit, found before any embedding
    again = caller()
    assert await text_of(cache, ask(RESET), again) == "Use the reset link."
    assert again.path == ["m:cache_hit"]
    assert len(model.calls) == 3 and await rows(store) == 3
    hits = await store.fetchone("SELECT hits FROM semantic_cache ORDER BY id LIMIT 1")
    assert hits is not None and int(hits[0]) == 1


async def test_the_rest_of_the_conversation_must_match_exactly(store: Store) -> None:
    cache, model, _ = cached(store, ["a1", "a2", "a3", "a4", "a5"])
    assert await text_of(cache, ask(VACATION), caller()) == "a1"
    other_system = [SystemMessage(content="You are a pirate."), UserMessage(content=VACATION_2)]
    assert await text_of(cache, other_system, caller()) == "a2"
    earlier = (UserMessage(content="I work in Spain."), AssistantMessage(content="Noted."))
    assert await text_of(cache, ask(VACATION_2, *earlier), caller()) == "a3"
    assert await text_of(cache, ask(VACATION_2), caller(), ModelSettings(seed=1)) == "a4"
    assert await text_of(cache, ask(SICK), caller()) == "a5"
    assert await text_of(cache, ask(VACATION, *earlier), caller()) == "a3"  # same prefix: hit
    assert len(model.calls) == 5


async def test_user_scope_keeps_answers_to_their_user_and_org_scope_to_the_org(
    store: Store,
) -> None:
    # (the exact cache is left out: it serves an identical request to anyone, by design)
    mine, model, _ = cached(store, ["alice's answer", "bob's answer"], exact=False)
    assert await text_of(mine, ask(RESET), caller("user_alice")) == "alice's answer"
    assert await text_of(mine, ask(RESET_2), caller("user_bob")) == "bob's answer"
    assert await text_of(mine, ask(RESET_2), caller("user_alice")) == "alice's answer"
    assert len(model.calls) == 2

    shared, model, _ = cached(store, ["for the org", "for the other org"], scope="org", exact=False)
    assert await text_of(shared, ask(VACATION), caller("user_alice")) == "for the org"
    assert await text_of(shared, ask(VACATION_2), caller("user_bob")) == "for the org"
    assert await text_of(shared, ask(VACATION_2), caller("user_eve", "org_other")) == (
        "for the other org"
    )
    # a call that does not say whose it is never uses the semantic cache
    no_one, model, emb = cached(store, ["unscoped"], scope="org")
    assert await text_of(no_one, ask(VACATION_2), Call()) == "unscoped"
    assert emb.calls == 0


async def test_a_second_process_on_the_same_store_sees_the_answers(
    store: Store, store_url: str
) -> None:
    first, _, _ = cached(store, ["Use the reset link."])
    other_store = await open_store(store_url)
    try:
        second, model, _ = cached(other_store, ["Flour, water, salt."])
        # the second one reads the namespace before the first stores anything in it ...
        assert await text_of(second, ask(BREAD), caller()) == "Flour, water, salt."
        assert await text_of(first, ask(RESET), caller()) == "Use the reset link."
        # ... and sees the first one's answer at its next lookup
        call = caller()
        assert await text_of(second, ask(RESET_2), call) == "Use the reset link."
        assert call.attempts[0].outcome == "semantic_hit" and len(model.calls) == 1
    finally:
        await other_store.close()


async def test_answers_expire_and_are_purged(store: Store, store_url: str) -> None:
    now = [time.time()]
    cache, model, _ = cached(store, ["old", "new", "short"], clock=lambda: now[0], exact=False)
    assert await text_of(cache, ask(RESET), caller()) == "old"
    now[0] += 61  # past the route's ttl of 60 s
    assert await text_of(cache, ask(RESET_2), caller()) == "new"
    # every serve and worker process's housekeeper deletes expired answers physically
    assert (await Housekeeper(store, 0).tick(now[0]))["semantic_cache"] == 1
    assert await rows(store) == 1

    # a row another process expired (or deleted) is not served from this one's memory
    await store.execute("UPDATE semantic_cache SET expires_at = ?", (now[0] - 1,))
    assert await text_of(cache, ask(RESET), caller()) == "short"
    # a request's own ttl applies to its semantic entry too
    brief = ModelSettings(temperature=0, cache=CacheRequest(ttl=5))
    cache2, _, _ = cached(store, ["five seconds"], clock=lambda: now[0])
    await text_of(cache2, ask(BREAD), caller(), brief)
    ttl = await store.fetchone(
        "SELECT expires_at - created_at FROM semantic_cache ORDER BY id DESC LIMIT 1"
    )
    assert ttl is not None and float(ttl[0]) == pytest.approx(5)
    assert await purge_semantic_expired(store, now[0] + 6) == 2  # "new" and "five seconds"
    assert len(model.calls) == 3


async def test_only_what_the_route_caches_is_looked_up(store: Store) -> None:
    cache, _, emb = cached(store, ["sampled 1", "sampled 2", "asked", "tool"])
    sampling = ModelSettings(temperature=0.7)
    assert await text_of(cache, ask(RESET), caller(), sampling) == "sampled 1"
    assert await text_of(cache, ask(RESET_2), caller(), sampling) == "sampled 2"
    assert emb.calls == 0  # not cached: not embedded either
    no_cache = ModelSettings(temperature=0, cache=False)
    assert await text_of(cache, ask(RESET), caller(), no_cache) == "asked"
    after_tool = [*ask(RESET), AssistantMessage(content="...")]
    assert await text_of(cache, after_tool, caller()) == "tool"
    assert emb.calls == 0 and await rows(store) == 0


async def test_the_oldest_answers_of_a_full_namespace_go_first(store: Store) -> None:
    cache, _, _ = cached(store, ["1", "2", "3"], max_entries=2)
    for text in (RESET, VACATION, BREAD):
        await text_of(cache, ask(text), caller())
    assert await rows(store) == 2
    left = await store.fetchall("SELECT response FROM semantic_cache ORDER BY id")
    assert [json.loads(r[0])["message"]["content"] for r in left] == ["2", "3"]


async def test_a_stream_that_hits_is_replayed_as_chunks(store: Store) -> None:
    cache, model, _ = cached(store, ["Open the reset link we e-mailed you."])

    async def streamed(text: str, call: Call) -> tuple[str, list[StreamChunk]]:
        chunks = [c async for c in cache.request_stream(ask(text), T0, call)]
        assembler = StreamAssembler()
        for chunk in chunks:
            assembler.add(chunk)
        return assembler.response().message.content or "", chunks

    first, _ = await streamed(RESET, caller())  # a missed stream is stored once complete
    call = caller()
    again, chunks = await streamed(RESET_2, call)
    assert again == first == "Open the reset link we e-mailed you."
    assert len(chunks) > 2 and chunks[-1].finish_reason == "stop" and chunks[-1].usage
    assert call.cache_hit and call.attempts[0].outcome == "semantic_hit"
    assert len(model.calls) == 1


async def test_a_failing_embedder_or_store_never_fails_the_call(
    store: Store, store_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="elevenfactor.cache")
    broken = Counting(fail=RuntimeError("embedder down"))
    cache, model, _ = cached(store, ["from the model", "again"], embedder=broken)
    assert await text_of(cache, ask(RESET), caller()) == "from the model"
    assert await text_of(cache, ask(RESET_2), caller()) == "again"  # backing off: not asked
    assert broken.calls == 1

    slow, model, _ = cached(store, ["not waited for"], embedder=Counting(delay=5), timeout=0.2)
    started = time.monotonic()
    assert await text_of(slow, ask(RESET), caller()) == "not waited for"
    assert time.monotonic() - started < 3

    closed = await open_store(store_url)
    await closed.close()
    gone, model, _ = cached(closed, ["store down"])
    assert await text_of(gone, ask(RESET), caller()) == "store down"
    assert len(model.calls) == 1

    logged = [r.__dict__ for r in caplog.records if r.getMessage() == "semantic_cache_unavailable"]
    assert [(e["route"], e["op"]) for e in logged] == [("default", "lookup")] * 3
    assert "embedder down" in logged[0]["error"] and logged[1]["error"] == "timed out"
    assert logged[2]["error"]  # the store's own error


async def test_forgetting_a_user_deletes_their_entries_and_keeps_the_others(
    store: Store,
) -> None:
    cache, model, _ = cached(store, ["alice's", "bob's", "alice's again"])
    await text_of(cache, ask(RESET), caller("user_alice"))
    await text_of(cache, ask(VACATION), caller("user_bob"))
    index = cache.semantic.index  # type: ignore[union-attr]
    assert await text_of(cache, ask(RESET_2), caller("user_alice")) == "alice's"
    held = index.rows

    done = await forget_user(store, local_admin("cli"), "user_alice")
    assert done.cache_entries == 1 and done.to_dict()["cache_entries"] == 1
    assert await rows(store, "user_id = ?", ("user_alice",)) == 0
    assert await rows(store, "user_id = ?", ("user_bob",)) == 1
    # this process still held the vector: it is not served, and dropped
    assert await text_of(cache, ask(RESET_2), caller("user_alice")) == "alice's again"
    assert index.rows == held - 1  # alice's old vector is dropped (her new one is read later)
    assert await text_of(cache, ask(VACATION_2), caller("user_bob")) == "bob's"
    assert len(model.calls) == 3
    [entry] = await store.fetchall(
        "SELECT body FROM ledger WHERE kind = 'admin.memory.forget_user'"
    )
    assert json.loads(entry[0])["cache_entries"] == 1  # counts only, never the content


PROJECT = {
    "providers": {"t": {"type": "test"}},
    "models": {"m": {"provider": "t", "model": "echo-1"}},
    "routes": {
        "default": {"chain": ["m"], "cache": {"ttl": 60, "semantic": {"timeout": 30}}},
        "plain": {"chain": ["m"], "cache": {"ttl": 60}},
    },
}


@pytest.fixture
async def registry(store: Store) -> AsyncIterator[ModelRegistry]:
    project = parse_project(PROJECT)
    embedders = open_embedders(project)
    reg = ModelRegistry.from_project(project, store=store, embedders=embedders)
    try:
        yield reg
    finally:
        await reg.aclose()
        await embedders.aclose()


async def test_the_registry_wires_the_routes_that_ask(registry: ModelRegistry) -> None:
    route = registry.resolve("default").model
    assert isinstance(route, ResponseCache) and route.semantic is not None
    plain = registry.resolve("plain").model
    assert isinstance(plain, ResponseCache) and plain.semantic is None
    first = await route.request(ask(RESET), T0, caller())
    call = caller()
    second = await route.request(ask(RESET_2), T0, call)
    assert second.message.content == first.message.content == f"echo: {RESET}"
    assert call.path[0].startswith("m:semantic_hit@0.9")
    index = registry.semantic
    assert index is not None
    with pytest.raises(ConfigError) as info:  # a store but no embedders: refused at startup
        ModelRegistry.from_project(registry.project, store=index.store)
    assert info.value.key == "routes.default.cache.semantic.embedder"


async def test_a_worker_runtime_gets_the_semantic_cache_and_shares_its_embedders(
    store: Store, tmp_path: Any
) -> None:
    settings = Settings(database_url="sqlite:///unused.db", data_dir=tmp_path)
    runtime = build_runtime(settings, parse_project(PROJECT), store=store)
    try:
        route = runtime.registry.resolve("default").model
        assert isinstance(route, ResponseCache) and route.semantic is not None
        assert runtime.deps is not None and runtime.deps.embedders is not None
        assert route.semantic.embedder is runtime.deps.embedders.get()
    finally:
        await runtime.aclose()
    # without a store (`elevenfactor run` without a worker, `config check`): exact cache only
    runtime = build_runtime(settings, parse_project(PROJECT))
    try:
        route = runtime.registry.resolve("default").model
        assert isinstance(route, ResponseCache) and route.semantic is None
    finally:
        await runtime.aclose()
