"""The exact response cache: its key, when it caches, expiry, single flight, failures, and the
store and Redis backends."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from elevenfactor.config import CacheConfig, Settings, parse_project
from elevenfactor.errors import RequestError
from elevenfactor.models import (
    AssistantMessage,
    CacheRequest,
    Call,
    FunctionModel,
    MemoryCache,
    Message,
    ModelRegistry,
    ModelSettings,
    RedisCache,
    Response,
    ResponseCache,
    StoreCache,
    ToolDefinition,
    Usage,
    UserMessage,
    cache_key,
    open_response_cache,
    purge_expired,
)
from elevenfactor.models._cache import StreamAssembler
from elevenfactor.server._wire import parse_chat_request
from elevenfactor.store import Store

MESSAGES: list[Message] = [UserMessage(content="hi")]
REDIS_URL = "redis://127.0.0.1:6379/0"


def answer(text: str = "hello", finish: str = "stop") -> Response:
    return Response.model_validate(
        {
            "message": AssistantMessage(content=text),
            "usage": Usage(input_tokens=3, output_tokens=5),
            "model": "up-1",
            "finish_reason": finish,
        }
    )


class Counting(FunctionModel):
    """A model that counts its calls and answers ``answer()`` (after ``gate``, if set)."""

    def __init__(self, response: Response | None = None) -> None:
        self.response = response or answer()
        self.gate: asyncio.Event | None = None
        super().__init__(self._answer, name="dep")

    async def _answer(self, messages: Sequence[Message], settings: ModelSettings) -> Response:
        if self.gate is not None:
            await self.gate.wait()
        return self.response.model_copy(deep=True)


def cached(
    inner: Counting | None = None,
    config: CacheConfig | None = None,
    backend: Any = None,
    **kw: Any,
) -> tuple[ResponseCache, Counting]:
    model = inner or Counting()
    return ResponseCache(model, backend or MemoryCache(), config=config, **kw), model


async def ask(model: ResponseCache, settings: ModelSettings) -> tuple[Response, Call]:
    call = Call()
    return await model.request(MESSAGES, settings, call), call


# -- the key ----------------------------------------------------------------------------------


def _tool(params: dict[str, Any]) -> ToolDefinition:
    return ToolDefinition(name="f", parameters=params)


def test_key_ignores_dict_order_number_form_user_and_tags() -> None:
    a = ModelSettings(
        temperature=0,
        tools=[_tool({"type": "object", "properties": {"a": {"type": "integer", "maximum": 1.0}}})],
        extra={"x": 1, "y": {"b": 2, "a": 1}},
        user="alice",
        tags=["t1"],
    )
    b = ModelSettings(
        temperature=0.0,
        tools=[_tool({"properties": {"a": {"maximum": 1, "type": "integer"}}, "type": "object"})],
        extra={"y": {"a": 1, "b": 2}, "x": 1.0},
        user="bob",
        tags=["t2"],
        cache=CacheRequest(ttl=5),
    )
    assert cache_key(MESSAGES, a, "v") == cache_key(MESSAGES, b, "v")


@pytest.mark.parametrize(
    "change",
    [
        {"temperature": 0.5},
        {"seed": 7},
        {"max_tokens": 10},
        {"stop": ["x"]},
        {"tool_choice": "none"},
        {"extra": {"reasoning": "high"}},
        {"prompt_version": "p2"},
    ],
)
def test_key_changes_with_what_changes_the_answer(change: dict[str, Any]) -> None:
    base = ModelSettings(temperature=0)
    changed = base.model_copy(update=change)
    assert cache_key(MESSAGES, base, "v") != cache_key(MESSAGES, changed, "v")
    assert cache_key(MESSAGES, base, "v") != cache_key(MESSAGES, base, "v2")
    other = [UserMessage(content="hi!")]
    assert cache_key(MESSAGES, base, "v") != cache_key(other, base, "v")


def _registry(params: dict[str, Any], cache: Any = None) -> ModelRegistry:
    return ModelRegistry.from_project(
        parse_project(
            {
                "providers": {"t": {"type": "test"}},
                "models": {"m": {"provider": "t", "model": "echo-1", "params": params}},
                "routes": {"default": {"chain": ["m"], "cache": {"ttl": 60}}},
            }
        ),
        cache=cache,
    )


async def test_a_model_param_change_is_a_new_key() -> None:
    backend = MemoryCache()
    settings = ModelSettings(temperature=0)
    first = _registry({"top_p": 0.5}, backend).resolve("default").model
    await first.request(MESSAGES, settings, Call())
    same = _registry({"top_p": 0.5}, backend).resolve("default").model
    call = Call()
    await same.request(MESSAGES, settings, call)
    assert call.cache_hit
    changed = _registry({"top_p": 0.9}, backend).resolve("default").model
    call = Call()
    await changed.request(MESSAGES, settings, call)
    assert not call.cache_hit


# -- when it caches ---------------------------------------------------------------------------


async def test_a_deterministic_request_is_served_from_the_cache() -> None:
    model, inner = cached(config=CacheConfig(ttl=60))
    first, call1 = await ask(model, ModelSettings(temperature=0))
    second, call2 = await ask(model, ModelSettings(temperature=0, user="other"))
    assert len(inner.calls) == 1
    assert not call1.cache_hit and call2.cache_hit
    assert second.message.content == "hello" and second.usage == first.usage
    assert call2.path == ["dep:cache_hit"]


@pytest.mark.parametrize(
    ("settings", "calls"),
    [
        (ModelSettings(), 2),  # unset temperature: the provider's default samples
        (ModelSettings(temperature=0.7), 2),
        (ModelSettings(temperature=0.7, seed=1), 1),
        (ModelSettings(temperature=0.7, cache=CacheRequest()), 1),  # asked explicitly
        (ModelSettings(temperature=0, cache=False), 2),  # bypassed
    ],
)
async def test_non_deterministic_requests_are_not_cached_unless_asked(
    settings: ModelSettings, calls: int
) -> None:
    model, inner = cached(config=CacheConfig(ttl=60))
    await ask(model, settings)
    await ask(model, settings)
    assert len(inner.calls) == calls


async def test_route_may_cache_non_deterministic_requests() -> None:
    model, inner = cached(config=CacheConfig(ttl=60, nondeterministic=True))
    await ask(model, ModelSettings(temperature=1))
    await ask(model, ModelSettings(temperature=1))
    assert len(inner.calls) == 1


async def test_deployment_defaults_decide_for_an_unset_temperature() -> None:
    reg = _registry({"temperature": 0})
    model = reg.resolve("default").model
    for _ in range(2):
        call = Call()
        await model.request(MESSAGES, ModelSettings(), call)
    assert call.cache_hit
    reg = _registry({"temperature": 0.2})
    model = reg.resolve("default").model
    for _ in range(2):
        call = Call()
        await model.request(MESSAGES, ModelSettings(), call)
    assert not call.cache_hit


async def test_an_uncached_route_caches_only_on_request() -> None:
    model, inner = cached(config=None)
    await ask(model, ModelSettings(temperature=0))
    await ask(model, ModelSettings(temperature=0))
    assert len(inner.calls) == 2
    _, call = await ask(model, ModelSettings(cache=CacheRequest(ttl=5)))
    _, call = await ask(model, ModelSettings(cache=CacheRequest(ttl=5)))
    assert len(inner.calls) == 3 and call.cache_hit


@pytest.mark.parametrize("finish", ["content_filter"])
async def test_incomplete_answers_are_not_stored(finish: str) -> None:
    model, inner = cached(Counting(answer(finish=finish)), CacheConfig(ttl=60))
    await ask(model, ModelSettings(temperature=0))
    await ask(model, ModelSettings(temperature=0))
    assert len(inner.calls) == 2


async def test_a_failed_call_is_not_stored() -> None:
    from elevenfactor.errors import UpstreamServerError

    calls = 0

    def flaky(messages: Sequence[Message], settings: ModelSettings) -> Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise UpstreamServerError("boom")
        return answer()

    model = ResponseCache(FunctionModel(flaky), MemoryCache(), config=CacheConfig())
    with pytest.raises(UpstreamServerError):
        await model.request(MESSAGES, ModelSettings(temperature=0), Call())
    await model.request(MESSAGES, ModelSettings(temperature=0), Call())
    call = Call()
    await model.request(MESSAGES, ModelSettings(temperature=0), call)
    assert calls == 2 and call.cache_hit


async def test_ttl_expiry() -> None:
    now = [1000.0]
    backend = MemoryCache(clock=lambda: now[0])
    model, inner = cached(config=CacheConfig(ttl=60), backend=backend)
    await ask(model, ModelSettings(temperature=0))
    now[0] += 59
    _, call = await ask(model, ModelSettings(temperature=0))
    assert call.cache_hit
    now[0] += 2
    _, call = await ask(model, ModelSettings(temperature=0))
    assert not call.cache_hit and len(inner.calls) == 2
    # a request's ttl wins over the route's
    await ask(model, ModelSettings(temperature=1, cache=CacheRequest(ttl=5)))
    now[0] += 6
    _, call = await ask(model, ModelSettings(temperature=1, cache=CacheRequest(ttl=5)))
    assert not call.cache_hit


async def test_single_flight_sends_identical_misses_once() -> None:
    model, inner = cached(config=CacheConfig(ttl=60))
    inner.gate = asyncio.Event()
    tasks = [asyncio.create_task(ask(model, ModelSettings(temperature=0))) for _ in range(5)]
    deadline = asyncio.get_running_loop().time() + 5
    while not inner.calls:  # the first one reached the model; the others are waiting
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0)
    for _ in range(20):
        await asyncio.sleep(0)
    inner.gate.set()
    results = await asyncio.gather(*tasks)
    assert len(inner.calls) == 1
    assert sorted(call.cache_hit for _, call in results) == [False, True, True, True, True]
    assert {r.message.content for r, _ in results} == {"hello"}


async def test_single_flight_waiters_go_to_the_model_when_the_first_fails() -> None:
    from elevenfactor.errors import UpstreamServerError

    gate, started = asyncio.Event(), asyncio.Event()
    calls = 0

    async def first_fails(messages: Sequence[Message], settings: ModelSettings) -> Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            started.set()
            await gate.wait()
            raise UpstreamServerError("boom")
        return answer()

    model = ResponseCache(FunctionModel(first_fails), MemoryCache(), config=CacheConfig())
    settings = ModelSettings(temperature=0)
    first = asyncio.create_task(model.request(MESSAGES, settings, Call()))
    await asyncio.wait_for(started.wait(), 5)
    second = asyncio.create_task(model.request(MESSAGES, settings, Call()))
    for _ in range(10):
        await asyncio.sleep(0)
    gate.set()
    with pytest.raises(UpstreamServerError):
        await first
    assert (await second).message.content == "hello"
    assert calls == 2


# -- streams ----------------------------------------------------------------------------------


async def _stream(model: ResponseCache, settings: ModelSettings) -> tuple[Response, Call]:
    call = Call()
    assembler = StreamAssembler()
    async for chunk in model.request_stream(MESSAGES, settings, call):
        assembler.add(chunk)
    return assembler.response(), call


async def test_a_stream_miss_is_stored_and_a_stream_hit_replays() -> None:
    model, inner = cached(config=CacheConfig(ttl=60))
    first, call1 = await _stream(model, ModelSettings(temperature=0))
    second, call2 = await _stream(model, ModelSettings(temperature=0))
    plain, call3 = await ask(model, ModelSettings(temperature=0))
    assert len(inner.calls) == 1
    assert not call1.cache_hit and call2.cache_hit and call3.cache_hit
    assert first.message.content == second.message.content == plain.message.content == "hello"
    assert second.usage == Usage(input_tokens=3, output_tokens=5)
    assert second.finish_reason == "stop"


async def test_a_stream_the_client_leaves_is_not_stored() -> None:
    model, inner = cached(config=CacheConfig(ttl=60))
    stream = model.request_stream(MESSAGES, ModelSettings(temperature=0), Call())
    await anext(aiter(stream))
    await stream.aclose()  # type: ignore[attr-defined]
    await ask(model, ModelSettings(temperature=0))
    assert len(inner.calls) == 2


# -- failures ---------------------------------------------------------------------------------


class Broken:
    """A backend whose every operation fails."""

    def __init__(self) -> None:
        self.tries = 0

    async def get(self, key: str) -> bytes | None:
        self.tries += 1
        raise ConnectionError("redis is down")

    async def put(self, key: str, value: bytes, ttl: int, model: str, owner: Any = None) -> None:
        self.tries += 1
        raise ConnectionError("redis is down")

    async def forget(self, org_id: str, user_id: str) -> int:
        raise ConnectionError("redis is down")

    async def aclose(self) -> None:
        pass


async def test_a_failing_backend_never_fails_the_call(caplog: pytest.LogCaptureFixture) -> None:
    backend = Broken()
    model, inner = cached(config=CacheConfig(ttl=60), backend=backend)
    with caplog.at_level(logging.WARNING, logger="elevenfactor.cache"):
        for _ in range(3):
            response, call = await ask(model, ModelSettings(temperature=0))
            assert response.message.content == "hello" and not call.cache_hit
    assert len(inner.calls) == 3
    assert backend.tries == 1  # then left alone for a while
    logged = [r for r in caplog.records if r.getMessage() == "cache_unavailable"]
    assert len(logged) == 1


# -- the request parameter --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "param"),
    [
        ("yes", "cache"),
        ([60], "cache"),
        ({"ttl": "60"}, "cache.ttl"),
        ({"ttl": 0}, "cache.ttl"),
        ({"ttl": True}, "cache.ttl"),
        ({"ttl": 10**9}, "cache.ttl"),
        ({"tll": 60}, "cache"),
    ],
)
def test_malformed_cache_parameter_is_a_clear_400(value: Any, param: str) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "cache": value}
    with pytest.raises(RequestError) as info:
        parse_chat_request(body, [])
    assert info.value.param == param
    assert info.value.code in ("invalid_type", "invalid_value")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"ttl": 60}, CacheRequest(ttl=60)),
        ({}, CacheRequest()),
        (True, CacheRequest()),
        (False, False),
        (None, None),
    ],
)
def test_cache_parameter_values(value: Any, expected: Any) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "cache": value}
    assert parse_chat_request(body, []).settings.cache == expected


# -- backends ---------------------------------------------------------------------------------


async def test_store_backend(store: Store) -> None:
    backend = StoreCache(store)
    assert await backend.get("k") is None
    await backend.put("k", b'{"a": 1}', 60, "dep")
    assert await backend.get("k") == b'{"a": 1}'
    assert await backend.get("k") == b'{"a": 1}'
    row = await store.fetchone("SELECT model, hits FROM response_cache WHERE key = 'k'")
    assert row is not None and (row[0], row[1]) == ("dep", 2)
    await backend.put("old", b"{}", 1, "dep")
    await store.execute("UPDATE response_cache SET expires_at = 0 WHERE key = 'old'")
    assert await backend.get("old") is None
    await backend.put("k", b'{"a": 2}', 60, "dep")  # replaced
    assert await backend.get("k") == b'{"a": 2}'
    assert await purge_expired(store) == 1
    assert await store.fetchone("SELECT 1 FROM response_cache WHERE key = 'old'") is None


async def test_store_backend_through_the_wrapper(store: Store) -> None:
    backend = open_response_cache(Settings(database_url=store.url), store)
    assert isinstance(backend, StoreCache)
    model, inner = cached(config=CacheConfig(ttl=60), backend=backend)
    await ask(model, ModelSettings(temperature=0))
    response, call = await ask(model, ModelSettings(temperature=0))
    assert call.cache_hit and response.message.content == "hello" and len(inner.calls) == 1


@pytest.fixture
async def redis_backend() -> AsyncIterator[RedisCache]:
    prefix = f"ef-test-{uuid.uuid4().hex}:"
    settings = Settings(redis_url=REDIS_URL, redis_prefix=prefix)
    backend = open_response_cache(settings, None)
    assert isinstance(backend, RedisCache) and backend.prefix == prefix + "cache:"
    try:
        yield backend
    finally:
        keys = [k async for k in backend.client.scan_iter(match=prefix + "*")]
        if keys:
            await backend.client.delete(*keys)
        await backend.aclose()


async def test_redis_backend(redis_backend: RedisCache) -> None:
    assert await redis_backend.get("k") is None
    await redis_backend.put("k", b"v", 60, "dep")
    assert await redis_backend.get("k") == b"v"
    ttl = await redis_backend.client.ttl(redis_backend.prefix + "k")
    assert 0 < ttl <= 60
    model, inner = cached(config=CacheConfig(ttl=60), backend=redis_backend)
    await ask(model, ModelSettings(temperature=0))
    _, call = await ask(model, ModelSettings(temperature=0))
    assert call.cache_hit and len(inner.calls) == 1


async def test_redis_down_goes_to_the_model() -> None:
    from tests.conftest import free_port

    backend = RedisCache.from_url(f"redis://127.0.0.1:{free_port()}/0")
    model, inner = cached(config=CacheConfig(ttl=60), backend=backend)
    response, call = await ask(model, ModelSettings(temperature=0))
    assert response.message.content == "hello" and not call.cache_hit
    assert len(inner.calls) == 1
    await backend.aclose()


# -- owners and forgetting --------------------------------------------------------------------

ADA = ("org_default", "user_ada")
BOB = ("org_default", "user_bob")


async def _ada_and_bob(backend: Any) -> None:
    """Two entries of Ada's, one of Bob's, one of no known user; Ada is forgotten."""
    await backend.put("a1", b"ada 1", 60, "dep", ADA)
    await backend.put("a2", b"ada 2", 3600, "dep", ADA)
    await backend.put("b1", b"bob 1", 60, "dep", BOB)
    await backend.put("anon", b"anon", 60, "dep")
    assert await backend.forget("org_default", "user_ada") == 2
    assert await backend.get("a1") is None and await backend.get("a2") is None
    assert await backend.get("b1") == b"bob 1" and await backend.get("anon") == b"anon"
    assert await backend.forget("org_default", "user_ada") == 0
    assert await backend.forget("org_other", "user_bob") == 0  # another organisation's Bob
    assert await backend.forget("org_default", "user_bob") == 1
    assert await backend.get("b1") is None


async def test_memory_backend_forgets_an_owner() -> None:
    await _ada_and_bob(MemoryCache())


async def test_store_backend_forgets_an_owner(store: Store) -> None:
    await _ada_and_bob(StoreCache(store))


async def test_redis_backend_forgets_an_owner(redis_backend: RedisCache) -> None:
    await _ada_and_bob(redis_backend)
    assert await redis_backend.client.exists(redis_backend.owner_key(*ADA)) == 0


async def test_the_wrapper_stores_the_calls_owner() -> None:
    backend = MemoryCache()
    model, inner = cached(config=CacheConfig(ttl=60), backend=backend)
    settings = ModelSettings(temperature=0)
    await model.request(MESSAGES, settings, Call(org_id=ADA[0], user_id=ADA[1]))
    await model.request([UserMessage(content="anonymous")], settings, Call())
    assert await backend.forget(*ADA) == 1
    _, call = await ask(model, settings)  # Ada's answer is gone: asked again, not a hit
    assert not call.cache_hit and len(inner.calls) == 3
    assert await backend.forget("", "") == 0  # no owner: nothing indexed under empty ids


async def test_store_backend_the_last_writer_owns_the_entry(store: Store) -> None:
    backend = StoreCache(store)
    await backend.put("k", b"ada's", 60, "dep", ADA)
    await backend.put("k", b"bob's", 60, "dep", BOB)  # the same request, answered again
    row = await store.fetchone("SELECT org_id, user_id, response FROM response_cache")
    assert row is not None and tuple(row) == ("org_default", "user_bob", "bob's")
    assert await backend.forget(*ADA) == 0 and await backend.get("k") == b"bob's"
    await backend.put("k", b"anyone's", 60, "dep")
    row = await store.fetchone("SELECT org_id, user_id FROM response_cache")
    assert row is not None and tuple(row) == (None, None)
    assert await backend.forget(*BOB) == 0


async def test_memory_backend_keeps_its_owner_index_exact() -> None:
    now = [1000.0]
    backend = MemoryCache(max_entries=2, clock=lambda: now[0])
    await backend.put("k", b"ada's", 60, "dep", ADA)
    await backend.put("k", b"bob's", 60, "dep", BOB)  # taken over
    assert await backend.forget(*ADA) == 0 and await backend.get("k") == b"bob's"
    await backend.put("b2", b"bob 2", 60, "dep", BOB)
    await backend.put("a1", b"ada 1", 60, "dep", ADA)  # evicts "k"
    assert await backend.get("k") is None
    now[0] += 61  # expired: dropped when read
    assert await backend.get("b2") is None
    assert await backend.forget(*BOB) == 0 and await backend.forget(*ADA) == 1
    assert backend._owned == {} and len(backend._entries) == 0


async def test_redis_owner_index_lives_as_long_as_its_longest_entry(
    redis_backend: RedisCache,
) -> None:
    index = redis_backend.owner_key(*ADA)
    await redis_backend.put("long", b"1", 3600, "dep", ADA)
    await redis_backend.put("short", b"2", 60, "dep", ADA)
    assert 3590 < await redis_backend.client.ttl(index) <= 3600
    # a member whose entry has expired is trimmed by the next put
    await redis_backend.client.zadd(index, {"expired-long-ago": 1})
    await redis_backend.put("third", b"3", 60, "dep", ADA)
    members = await redis_backend.client.zrange(index, 0, -1)
    assert sorted(members) == [b"long", b"short", b"third"]
    ttl = await redis_backend.client.ttl(redis_backend.prefix + "third")
    assert 0 < ttl <= 60
    assert await redis_backend.forget(*ADA) == 3


async def test_m015_empties_the_unattributable_cache_and_records_owners(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from elevenfactor.store import MIGRATIONS, _migrations, migrate, open_store

    db = await open_store(store_url)
    try:
        before = MIGRATIONS[: [m.name for m in MIGRATIONS].index("m015_semantic_cache")]
        monkeypatch.setattr(_migrations, "MIGRATIONS", before)
        await migrate(db)
        await db.execute(
            "INSERT INTO response_cache (key, response, model, created_at, expires_at)"
            " VALUES ('old', '{}', 'dep', 0, 1e12)"
        )
        monkeypatch.setattr(_migrations, "MIGRATIONS", MIGRATIONS)
        assert "m015_semantic_cache" in await migrate(db)
        assert await db.fetchall("SELECT key FROM response_cache") == []  # no owner to forget
        await StoreCache(db).put("new", b"{}", 60, "dep", ADA)
        row = await db.fetchone("SELECT org_id, user_id FROM response_cache WHERE key = 'new'")
        assert row is not None and tuple(row) == ADA
    finally:
        await db.close()
