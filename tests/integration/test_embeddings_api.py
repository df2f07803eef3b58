"""``POST /v1/embeddings`` through the official ``openai`` client against a real gateway on
loopback (the bundled all-MiniLM-L6-v2), an upstream embedder pointed at another gateway, the
upstream embedder against a loopback server that misbehaves on purpose, and the metering of
embeddings (call records, prices, budgets, rate limits, kill switches, the cost report) on both
stores."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from elevenfactor.config import ProviderConfig, Settings, parse_project
from elevenfactor.config._embeddings import EmbeddingModelConfig
from elevenfactor.context._embed_local import LocalEmbedder
from elevenfactor.context._embed_openai import OpenAIEmbedder
from elevenfactor.errors import (
    MalformedResponse,
    ModelTimeout,
    RateLimited,
    UpstreamAuthError,
    UpstreamConnectionError,
    UpstreamServerError,
)
from elevenfactor.governance import (
    create_key,
    create_user,
    kill,
    local_admin,
    set_budget,
)
from elevenfactor.governance._embed_pricing import EmbeddingPrices
from elevenfactor.store import migrate, open_store
from tests.conftest import free_port
from tests.support.server import on_gateway, running_gateway

pytestmark = pytest.mark.integration

CHAT = {
    "providers": {"t": {"type": "test"}},
    "models": {"echo": {"provider": "t", "model": "echo-1"}},
    "routes": {"default": {"chain": ["echo"]}},
}
PROJECT = parse_project(CHAT)  # no `embeddings:` key: the local model, as `local`
TEXTS = ["Hello world", "Bonjour le monde", "def add(a, b): return a + b"]


async def _migrated_with_key(url: str) -> str:
    db = await open_store(url)
    try:
        await migrate(db)
        _, secret = await create_key(db, local_admin("cli"), "tests")
    finally:
        await db.close()
    return secret


@pytest.fixture
async def gateway(store_url: str, tmp_path: Path) -> AsyncIterator[tuple[str, str]]:
    secret = await _migrated_with_key(store_url)
    settings = Settings(database_url=store_url, data_dir=tmp_path, max_body_bytes=100_000)
    with running_gateway(settings, PROJECT) as (base, _):
        yield base, secret


def _client(base: str, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=base + "/v1", api_key=key, max_retries=0)


@pytest.fixture(scope="module")
def local() -> LocalEmbedder:
    return LocalEmbedder()


async def test_the_openai_client_gets_the_local_models_vectors(
    gateway: tuple[str, str], local: LocalEmbedder
) -> None:
    base, key = gateway
    expected, tokens = await local.embed_with_usage(TEXTS)
    async with _client(base, key) as client:
        # Unless told otherwise, the client asks for base64 and decodes it; asked for base64
        # explicitly, it hands over the strings.
        for fmt in (openai.NOT_GIVEN, "float", "base64"):
            answer = await client.embeddings.create(model="local", input=TEXTS, encoding_format=fmt)
            rows = [d.embedding for d in answer.data]
            if fmt == "base64":
                rows = [np.frombuffer(base64.b64decode(r), "<f4") for r in rows]  # type: ignore[arg-type]
            got = np.array(rows)
            assert [d.index for d in answer.data] == [0, 1, 2]
            assert got.shape == (3, 384)
            assert np.allclose(got, expected, atol=1e-6)
            assert answer.model == "local"
            assert answer.usage.prompt_tokens == answer.usage.total_tokens == tokens
        one = await client.embeddings.create(model="local", input="Hello world", dimensions=384)
    assert np.allclose(one.data[0].embedding, expected[0], atol=1e-6)


async def test_what_is_not_served_has_a_stable_code(gateway: tuple[str, str]) -> None:
    base, key = gateway
    cases: list[tuple[dict[str, Any], int, str, str | None]] = [
        ({"model": "ada", "input": "x"}, 404, "model_not_found", "model"),
        ({"model": "local", "input": [1, 2, 3]}, 400, "unsupported_input", "input.0"),
        ({"model": "local", "input": [[1, 2], [3]]}, 400, "unsupported_input", "input.0"),
        ({"model": "local", "input": ""}, 400, "empty_input", "input"),
        ({"model": "local", "input": ["a", ""]}, 400, "empty_input", "input.1"),
        ({"model": "local", "input": []}, 400, "empty_input", "input"),
        ({"model": "local", "input": ["a", True]}, 400, "invalid_type", "input.1"),
        ({"model": "local", "input": {"text": "a"}}, 400, "invalid_type", "input"),
        ({"model": "local", "input": ["a"] * 2049}, 400, "too_many_inputs", "input"),
        ({"model": "local", "input": "a", "dimensions": 128}, 400, "unsupported_dimensions",
         "dimensions"),
        ({"model": "local", "input": "a", "dimensions": True}, 400, "invalid_type", "dimensions"),
        ({"model": "local", "input": "a", "encoding_format": "int8"}, 400, "invalid_value",
         "encoding_format"),
        ({"model": "local", "input": "a", "logit_bias": {}}, 400, "unknown_parameter",
         "logit_bias"),
        ({"input": "a"}, 400, "missing_required_parameter", "model"),
        ({"model": "local", "input": "x" * 200_000}, 413, "request_too_large", "body"),
    ]  # fmt: skip
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {key}"}) as h:
        for body, status, code, param in cases:
            answer = await h.post("/v1/embeddings", json=body)
            error = answer.json()["error"]
            assert (answer.status_code, error["code"], error["param"]) == (status, code, param)
        unknown = (await h.post("/v1/embeddings", json={"model": "ada", "input": "x"})).json()
        assert "local" in unknown["error"]["message"]  # the names that exist
        anonymous = await h.post(
            "/v1/embeddings", json={"model": "local", "input": "x"}, headers={"Authorization": ""}
        )
        assert anonymous.status_code == 401
    async with _client(base, key) as client:
        with pytest.raises(openai.NotFoundError) as caught:
            await client.embeddings.create(model="text-embedding-3-small", input="x")
        assert caught.value.code == "model_not_found"


async def test_an_upstream_embedder_through_another_gateway(
    store_url: str, tmp_path: Path, gateway: tuple[str, str], local: LocalEmbedder
) -> None:
    first, key = gateway

    def relay(models: dict[str, Any]) -> Any:
        return parse_project(
            {
                **CHAT,
                "providers": {
                    **CHAT["providers"],
                    "up": {"type": "openai", "base_url": first + "/v1", "api_key": key},
                },
                "embeddings": {"default": "remote", "models": models},
            }
        )

    project = relay(
        {
            "remote": {"provider": "up", "model": "local", "dimensions": 384, "batch_size": 2},
            "wrong": {"provider": "up", "model": "local", "dimensions": 512,
                      "send_dimensions": False},
            "shrunk": {"provider": "up", "model": "local", "dimensions": 128},
        }
    )  # fmt: skip
    url = f"sqlite:///{tmp_path}/second.db"
    await _migrated_with_key(url)
    settings = Settings(database_url=url, data_dir=tmp_path / "second", dev=True)
    expected, tokens = await local.embed_with_usage(TEXTS)
    with running_gateway(settings, project) as (second, _):
        async with _client(second, "dev") as client:
            answer = await client.embeddings.create(model="remote", input=TEXTS)
            got = np.array([d.embedding for d in answer.data])
            assert np.allclose(got, expected, atol=1e-6)  # three inputs in two requests
            assert answer.usage.prompt_tokens == tokens
            with pytest.raises(openai.APIStatusError) as wrong:
                await client.embeddings.create(model="wrong", input="x")
            assert (wrong.value.status_code, wrong.value.code) == (
                502,
                "upstream_malformed_response",
            )
            assert "384 dimensions where 512 were expected" in str(wrong.value)
            # The first gateway refuses 128 dimensions; its 400 comes back as the upstream's.
            with pytest.raises(openai.BadRequestError) as shrunk:
                await client.embeddings.create(model="shrunk", input="x")
            assert shrunk.value.code == "upstream_bad_request"


# -- the upstream embedder against a loopback server that misbehaves on purpose ----------------

Handler = Callable[[dict[str, Any]], Any]


@pytest.fixture
async def scripted() -> AsyncIterator[tuple[str, list[dict[str, Any]], dict[str, Handler]]]:
    """A loopback ``/v1/embeddings`` server; tests set ``script["reply"]``, which maps a request
    body to a web.Response (or a JSON-able answer). Yields its base URL and the requests."""
    seen: list[dict[str, Any]] = []
    script: dict[str, Handler] = {}
    hold = asyncio.Event()

    async def handle(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        seen.append({**body, "authorization": request.headers.get("Authorization")})
        answer = script["reply"](body)
        if answer == "hang":
            await hold.wait()
        if isinstance(answer, web.StreamResponse):
            return answer
        return web.json_response(answer)

    app = web.Application()
    app.router.add_post("/v1/embeddings", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}/v1", seen, script
    finally:
        hold.set()
        await runner.cleanup()


def _vectors(body: dict[str, Any], dim: int = 4) -> dict[str, Any]:
    rows = [[float(len(t)), 1.0, 0.0, 2.0][:dim] for t in body["input"]]
    data = [{"object": "embedding", "index": i, "embedding": r} for i, r in enumerate(rows)]
    return {"object": "list", "data": data[::-1], "usage": {"prompt_tokens": 5}}  # any order


def _embedder(base_url: str, **config: Any) -> OpenAIEmbedder:
    return OpenAIEmbedder(
        "embeddings.test",
        EmbeddingModelConfig(provider="up", model="m", dimensions=4, **config),
        ProviderConfig(type="openai", base_url=base_url, api_key="sk-loopback"),  # type: ignore[arg-type]
    )


async def test_upstream_batches_orders_and_normalises(
    scripted: tuple[str, list[dict[str, Any]], dict[str, Handler]],
) -> None:
    base, seen, script = scripted
    script["reply"] = _vectors
    embedder = _embedder(base, batch_size=3)
    texts = ["a", "bb", "ccc", "dddd", "eeeee", "ffffff", "g"]
    vectors, tokens = await embedder.embed_with_usage(texts)
    await embedder.aclose()
    assert [len(r["input"]) for r in seen] == [3, 3, 1]
    assert all(r["authorization"] == "Bearer sk-loopback" for r in seen)
    assert seen[0]["model"] == "m" and seen[0]["dimensions"] == 4
    assert tokens == 15
    raw = np.array([[len(t), 1, 0, 2] for t in texts], np.float32)
    assert np.allclose(vectors, raw / np.linalg.norm(raw, axis=1, keepdims=True))


async def test_upstream_base64_answers_are_read(
    scripted: tuple[str, list[dict[str, Any]], dict[str, Handler]],
) -> None:
    base, _, script = scripted

    def b64(body: dict[str, Any]) -> dict[str, Any]:
        answer = _vectors(body)
        for item in answer["data"]:
            vec = np.array(item["embedding"], "<f4")
            item["embedding"] = base64.b64encode(vec.tobytes()).decode()
        return answer

    script["reply"] = b64
    embedder = _embedder(base, send_dimensions=False)
    got = await embedder.embed(["abc"])
    await embedder.aclose()
    assert np.allclose(got[0], np.array([3, 1, 0, 2]) / np.sqrt(14))


@pytest.mark.parametrize(
    ("reply", "error", "says"),
    [
        (lambda b: web.Response(status=500, text="boom"), UpstreamServerError, "HTTP 500"),
        (lambda b: web.Response(status=401, text="bad key"), UpstreamAuthError, "HTTP 401"),
        (
            lambda b: web.Response(status=429, text="slow", headers={"Retry-After": "7"}),
            RateLimited,
            "HTTP 429",
        ),
        (lambda b: _vectors(b, dim=3), MalformedResponse, "3 dimensions where 4"),
        (lambda b: {"data": _vectors(b)["data"] * 2}, MalformedResponse, "2 embeddings for 1"),
        (lambda b: {"data": [{"index": 0, "embedding": [0, 0, 0, 0]}]}, MalformedResponse, "zero"),
        (lambda b: {"data": [{"index": 5, "embedding": [1, 0, 0, 0]}]}, MalformedResponse, "5"),
        (lambda b: {"data": [{"index": 0, "embedding": ["x"] * 4}]}, MalformedResponse, "no vec"),
        (lambda b: web.Response(text="not json"), MalformedResponse, "not JSON"),
        (lambda b: "hang", ModelTimeout, "within 0.3s"),
    ],
)
async def test_upstream_failures_are_model_errors(
    scripted: tuple[str, list[dict[str, Any]], dict[str, Handler]],
    reply: Handler,
    error: type[Exception],
    says: str,
) -> None:
    base, _, script = scripted
    script["reply"] = reply
    embedder = _embedder(base, timeout=0.3)
    with pytest.raises(error, match=says) as caught:
        await embedder.embed(["x"])
    await embedder.aclose()
    if isinstance(caught.value, RateLimited):
        assert caught.value.retry_after == 7


async def test_an_unreachable_upstream_is_a_connection_error() -> None:
    embedder = _embedder(f"http://127.0.0.1:{free_port()}/v1")
    with pytest.raises(UpstreamConnectionError, match="connection failed"):
        await embedder.embed(["x"])
    await embedder.aclose()


# -- fuzzing: nothing a client sends gives a 500 ------------------------------------------------

_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=3)
    ),
    max_leaves=10,
)
_inputs = st.one_of(
    st.text(max_size=50),
    st.lists(st.text(max_size=30), max_size=5),
    st.lists(st.integers(-5, 2**40), max_size=5),
    st.sampled_from(["\x00", "a\x00b", "\U0001f600" * 30, "\u202e", " "]),
    _json,
)
_bodies = st.fixed_dictionaries(
    {},
    optional={
        "model": st.sampled_from(["local", "", "x" * 300]) | _json,
        "input": _inputs,
        "encoding_format": st.sampled_from(["float", "base64", "FLOAT"]) | _json,
        "dimensions": st.sampled_from([384, 0, -1, 2**63]) | _json,
        "user": st.text(max_size=10) | _json,
        "extra": _json,
    },
)


@pytest.fixture(scope="module")
def dev_base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    home = tmp_path_factory.mktemp("fuzz")
    url = f"sqlite:///{home}/fuzz.db"
    asyncio.run(_migrated_with_key(url))
    settings = Settings(database_url=url, data_dir=home, dev=True, max_body_bytes=50_000)
    with running_gateway(settings, PROJECT) as (base, _):
        yield base


@settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=_bodies | _json, raw=st.booleans())
def test_no_body_gives_a_server_error(dev_base: str, body: Any, raw: bool) -> None:
    content = json.dumps(body).encode() if not raw else json.dumps(body)[:-1].encode()
    answer = httpx.post(
        dev_base + "/v1/embeddings",
        content=content,
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert answer.status_code < 500, answer.text
    if answer.status_code >= 400:
        error = answer.json()["error"]
        assert error["code"] and error["message"]
    else:
        data = answer.json()["data"]
        assert all(d["object"] == "embedding" for d in data)


# -- metering: records, prices, budgets, rate limits, kill switches, the cost report -----------

METERED = parse_project(
    {
        **CHAT,
        "embeddings": {
            "models": {
                "local": {
                    "provider": "local",
                    "price": {"input_per_mtok": 1000, "per_request": 0.001},
                }
            }
        },
        "limits": {"keys": {"limited": {"rpm": 1}, "tokens": {"tpm": 40}}},
    }
)
KEYS = {"ann": "key-ann", "rita": "limited", "tom": "tokens", "bob": "key-bob", "kim": "key-kim"}
FAST = {"x-elevenfactor-timeout": "0.2"}  # no waiting for rate-limit capacity


async def _metered_people(url: str) -> dict[str, str]:
    db = await open_store(url)
    try:
        await migrate(db)
        admin = local_admin("cli")
        secrets = {}
        for who, key in [*KEYS.items(), ("boss", "key-boss")]:
            await create_user(db, admin, who, roles=("admin",) if who == "boss" else ("member",))
            _, secrets[who] = await create_key(db, admin, key, user=who)
        # bob may spend a cent and a half: one call's worst case, not two
        await set_budget(db, admin, "user:bob", 0.015)
        await kill(db, admin, "user:kim", "testing the kill switch")
        return secrets
    finally:
        await db.close()


@pytest.fixture
async def metered(store_url: str, tmp_path: Path) -> AsyncIterator[tuple[str, Any, dict[str, str]]]:
    secrets = await _metered_people(store_url)
    settings = Settings(database_url=store_url, data_dir=tmp_path, dev=False)
    with running_gateway(settings, METERED) as (base, gw):
        yield base, gw, secrets


async def _calls(gw: Any, want: int) -> list[tuple[Any, ...]]:
    """The embedding call records, oldest first, once ``want`` are written."""
    recorder, store = gw.recorder, gw.store
    deadline = time.monotonic() + 15
    while True:
        await on_gateway(gw, recorder.flush)
        rows = await on_gateway(
            gw,
            lambda: store.fetchall(
                "SELECT u.name, c.kind, c.route, c.deployment, c.provider, c.model, c.status,"
                " c.error_class, c.tokens_in, c.tokens_out, c.cost, c.price_version,"
                " c.request_hash FROM model_calls c JOIN users u ON u.id = c.user_id"
                " WHERE c.kind = 'embedding' ORDER BY c.created_at"
            ),
        )
        if len(rows) >= want:
            return list(rows)
        assert time.monotonic() < deadline, f"{len(rows)} embedding calls recorded, not {want}"
        await asyncio.sleep(0.05)


def _client_of(base: str, secrets: dict[str, str], who: str) -> openai.AsyncOpenAI:
    return _client(base, secrets[who])


async def test_an_embeddings_call_is_recorded_priced_and_reported(
    metered: tuple[str, Any, dict[str, str]], local: LocalEmbedder
) -> None:
    base, gw, secrets = metered
    _, tokens = await local.embed_with_usage(TEXTS)
    async with _client_of(base, secrets, "ann") as ann:
        answer = await ann.embeddings.create(model="local", input=TEXTS)
        assert answer.usage.prompt_tokens == tokens
        await ann.chat.completions.create(
            model="default", messages=[{"role": "user", "content": "and a chat call"}]
        )
    price = EmbeddingPrices(METERED.embeddings).price("local")
    assert price is not None
    cost = tokens * 1000 / 1e6 + 0.001
    [row] = await _calls(gw, 1)
    assert row[:10] == (
        "ann",
        "embedding",
        "local",
        "local",
        "local",
        "all-MiniLM-L6-v2",
        "ok",
        None,
        tokens,
        0,
    )
    assert row[10] == pytest.approx(cost) and row[11] == price.version
    assert str(row[12]).startswith("sha256:")  # the request is kept, the vectors are not
    store = gw.store
    versions = await on_gateway(
        gw,
        lambda: store.fetchall("SELECT deployment FROM prices WHERE version = ?", (price.version,)),
    )
    assert versions == [("local",)]  # the price version charged is on record

    # The cost report counts embedding spend, apart from chat by `kind`.
    headers = {"Authorization": f"Bearer {secrets['boss']}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as boss:
        deadline = time.monotonic() + 15
        while (report := (await boss.get("/v1/cost", params={"by": "kind"})).json())["totals"][
            "calls"
        ] < 2:
            assert time.monotonic() < deadline, report
            await asyncio.sleep(0.05)
        rows = {r["group"]["kind"]: r for r in report["data"]}
        assert set(rows) == {"chat", "embedding"}
        assert rows["embedding"]["calls"] == 1 and rows["embedding"]["tokens_in"] == tokens
        assert rows["embedding"]["cost"] == pytest.approx(cost, abs=1e-6)
        assert report["totals"]["cost"] >= rows["embedding"]["cost"]
        only = (await boss.get("/v1/cost", params={"where": "kind:embedding", "by": "user"})).json()
        assert [(r["names"]["user"], r["calls"]) for r in only["data"]] == [("ann", 1)]


async def test_refused_embeddings_get_the_chat_errors_and_are_recorded(
    metered: tuple[str, Any, dict[str, str]],
) -> None:
    base, gw, secrets = metered
    # A key's requests per minute: the second request is refused at once, with Retry-After.
    async with _client_of(base, secrets, "rita") as rita:
        await rita.embeddings.create(model="local", input="one", extra_headers=FAST)
        with pytest.raises(openai.RateLimitError) as limited:
            await rita.embeddings.create(model="local", input="two", extra_headers=FAST)
    assert limited.value.code == "rate_limit_exceeded"
    assert int(limited.value.response.headers["retry-after"]) >= 1
    assert isinstance(limited.value.body, dict)
    assert limited.value.body["details"] == {"limit": "key:limited", "kind": "rpm", "value": 1}

    # A key's tokens per minute count the input tokens (40 a minute; ~30 estimated a call).
    text = "invoice " * 15
    async with _client_of(base, secrets, "tom") as tom:
        await tom.embeddings.create(model="local", input=text, extra_headers=FAST)
        with pytest.raises(openai.RateLimitError) as tokens:
            await tom.embeddings.create(model="local", input=text, extra_headers=FAST)
    assert isinstance(tokens.value.body, dict) and tokens.value.body["details"]["kind"] == "tpm"

    # A budget: bob's first call fits ($0.014 worst case, ~$0.005 spent), the second does not.
    async with _client_of(base, secrets, "bob") as bob:
        await bob.embeddings.create(model="local", input="Hello world")
        with pytest.raises(openai.RateLimitError) as refused:
            await bob.embeddings.create(model="local", input="Hello world")
    assert refused.value.code == "budget_exceeded"
    assert refused.value.response.headers["x-should-retry"] == "false"
    assert isinstance(refused.value.body, dict)
    assert refused.value.body["details"]["budget"] == "user:bob"

    # A kill switch on the user.
    async with _client_of(base, secrets, "kim") as kim:
        with pytest.raises(openai.PermissionDeniedError) as killed:
            await kim.embeddings.create(model="local", input="anything")
    assert killed.value.code == "killed"

    rows = await _calls(gw, 7)
    outcome = [(r[0], r[6], r[7] is not None, r[8] > 0) for r in rows]
    assert sorted(outcome) == sorted(
        [
            ("rita", "ok", False, True), ("rita", "error", True, False),
            ("tom", "ok", False, True), ("tom", "error", True, False),
            ("bob", "ok", False, True), ("bob", "error", True, False),
            ("kim", "error", True, False),
        ]
    )  # fmt: skip
    assert all(r[10] is None for r in rows if r[6] == "error")  # refused: nothing charged
