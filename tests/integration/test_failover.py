"""Every retry / failover / breaker rule, proven end to end through the real OpenAI provider.

Each deployment points at its own fault-injecting upstream (``tests.support.fault_upstream``),
and the models are built the production way: ``parse_project`` then
``ModelRegistry.from_project``. ``call.path`` records where each call went.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import openai
import pytest

from elevenfactor.config import parse_project
from elevenfactor.errors import (
    ContextWindowExceeded,
    ModelError,
    UpstreamBadRequest,
    UpstreamConnectionError,
)
from elevenfactor.models import (
    Call,
    CircuitBreaker,
    Model,
    ModelRegistry,
    ModelSettings,
    StreamChunk,
    UserMessage,
)
from tests.support.fault_upstream import Fault, FaultUpstream, FaultUpstreamProcess

pytestmark = pytest.mark.integration

MESSAGES = [UserMessage(content="hello there")]
NO_RETRY: dict[str, Any] = {"attempts": 1}


class Env:
    """Named upstreams (one per deployment) and registries built over them."""

    def __init__(self) -> None:
        self.ups: dict[str, FaultUpstream] = {}
        self.registries: list[ModelRegistry] = []

    async def upstreams(self, *names: str) -> list[FaultUpstream]:
        for name in names:
            if name not in self.ups:
                self.ups[name] = await FaultUpstream(name=name).start()
        return [self.ups[n] for n in names]

    async def registry(
        self,
        models: dict[str, dict[str, Any]],
        routes: dict[str, dict[str, Any]] | None = None,
        **top: Any,
    ) -> ModelRegistry:
        """Deployment ``x`` talks to upstream ``x``, with no retry and no breaker by default."""
        await self.upstreams(*models)
        if routes and "default" not in routes:
            top.setdefault("default_route", next(iter(routes)))
        doc = {
            "providers": {
                f"p_{name}": {
                    "type": "openai",
                    "base_url": self.ups[name].base_url,
                    "api_key": "sk-test",
                }
                for name in models
            },
            "models": {
                name: {
                    "provider": f"p_{name}",
                    "model": f"model-{name}",
                    "timeout": 5.0,
                    "retry": NO_RETRY,
                    "breaker": None,
                    **conf,
                }
                for name, conf in models.items()
            },
            "routes": routes or {},
            **top,
        }
        reg = ModelRegistry.from_project(parse_project(doc))
        self.registries.append(reg)
        return reg

    async def aclose(self) -> None:
        for reg in self.registries:
            await reg.aclose()
        for up in self.ups.values():
            await up.stop()


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    e = Env()
    try:
        yield e
    finally:
        await e.aclose()


async def ask(model: Model, call: Call | None = None) -> tuple[str, Call]:
    call = call or Call()
    response = await model.request(MESSAGES, ModelSettings(), call)
    return response.message.content or "", call


async def ask_stream(
    model: Model, call: Call | None = None, into: list[StreamChunk] | None = None
) -> tuple[str, Call]:
    call = call or Call()
    chunks = [] if into is None else into
    async for chunk in model.request_stream(MESSAGES, ModelSettings(), call):
        chunks.append(chunk)
    return "".join(c.text for c in chunks), call


async def fails(coro: Any) -> ModelError:
    with pytest.raises(ModelError) as info:
        await coro
    return info.value


async def eventually(predicate: Callable[[], bool], within: float = 5.0) -> None:
    """Wait for ``predicate`` to hold, polling, failing after ``within`` seconds."""
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110 - the breaker's clock has no event to await
            await asyncio.sleep(0.01)


def breaker_of(model: Model) -> CircuitBreaker:
    node: Any = model
    while not isinstance(node, CircuitBreaker):
        node = node.inner
    return node


CHAIN_AB = {"ab": {"chain": ["a", "b"]}}


# -- the happy path ---------------------------------------------------------------------------


async def test_ok_answers_and_streams_through_the_whole_stack(env: Env) -> None:
    reg = await env.registry({"a": {}}, {"default": {"chain": ["a"]}})
    route = reg.resolve(None).model
    text, call = await ask(route)
    assert (text, call.path) == ("Hello from a.", ["a:ok"])
    chunks: list[StreamChunk] = []
    text, call = await ask_stream(route, into=chunks)
    assert (text, call.path) == ("Hello from a.", ["a:ok"])
    # the role-only opening chunk is not passed on; the last ones carry finish and usage
    assert chunks[0].text and chunks[0].model == "model-a"
    assert [c.finish_reason for c in chunks if c.finish_reason] == ["stop"]
    assert chunks[-1].usage is not None and chunks[-1].usage.output_tokens > 0
    assert env.ups["a"].log[-1].payload["stream_options"] == {"include_usage": True}


# -- Retry ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "wait"),
    [
        (Fault("429", retry_after=1), 1.0),
        (Fault("429", retry_after_ms=300), 0.3),
    ],
)
async def test_rate_limit_retry_after_is_honoured(env: Env, fault: Fault, wait: float) -> None:
    reg = await env.registry(
        {"a": {"retry": {"attempts": 2, "backoff_base": 0, "max_retry_after": 30}}, "b": {}},
        CHAIN_AB,
    )
    a, b = env.ups["a"], env.ups["b"]
    a.script(fault)
    text, call = await ask(reg.routes["ab"])
    assert call.path == ["a:rate_limit", "a:ok"]
    assert text == "Hello from a."
    first, second = a.log
    assert second.at - first.at >= wait - 1e-3, "retried before Retry-After elapsed"
    assert b.requests == 0


async def test_retry_after_above_the_cap_fails_over_at_once(env: Env) -> None:
    reg = await env.registry(
        {"a": {"retry": {"attempts": 3, "max_retry_after": 5}}, "b": {}}, CHAIN_AB
    )
    env.ups["a"].script("429:120")
    started = time.monotonic()
    text, call = await ask(reg.routes["ab"])
    assert time.monotonic() - started < 1.0
    assert call.path == ["a:rate_limit", "b:ok"]
    assert text == "Hello from b."
    assert env.ups["a"].requests == 1


@pytest.mark.parametrize("status", ["500", "503"])
async def test_server_error_is_retried_then_fails_over(env: Env, status: str) -> None:
    reg = await env.registry(
        {"a": {"retry": {"attempts": 3, "backoff_base": 0.01, "backoff_max": 0.05}}, "b": {}},
        CHAIN_AB,
    )
    env.ups["a"].default = status
    text, call = await ask(reg.routes["ab"])
    assert call.path == ["a:server_error"] * 3 + ["b:ok"]
    assert text == "Hello from b."
    assert env.ups["a"].requests == 3


async def test_server_error_then_success_is_retried_in_place(env: Env) -> None:
    reg = await env.registry(
        {"a": {"retry": {"attempts": 3, "backoff_base": 0.01}}, "b": {}}, CHAIN_AB
    )
    env.ups["a"].script("500", "500")
    _, call = await ask(reg.routes["ab"])
    assert call.path == ["a:server_error", "a:server_error", "a:ok"]
    assert env.ups["b"].requests == 0


# -- timeouts, resets, garbage ----------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
async def test_hang_past_the_timeout_fails_over(env: Env, stream: bool) -> None:
    reg = await env.registry({"a": {"timeout": 0.3}, "b": {}}, CHAIN_AB)
    env.ups["a"].default = "hang"
    started = time.monotonic()
    text, call = await (ask_stream if stream else ask)(reg.routes["ab"])
    elapsed = time.monotonic() - started
    assert call.path == ["a:timeout", "b:ok"]
    assert text == "Hello from b."
    assert 0.3 <= elapsed < 2.0


async def test_slow_first_token_is_bounded_by_first_token_timeout(env: Env) -> None:
    # headers and the role chunk arrive at once; real content only after the delay
    reg = await env.registry({"a": {"timeout": 5.0, "first_token_timeout": 0.3}, "b": {}}, CHAIN_AB)
    env.ups["a"].script("slow_first_token:10")
    text, call = await ask_stream(reg.routes["ab"])
    assert call.path == ["a:timeout", "b:ok"]
    assert text == "Hello from b."


async def test_slow_first_token_within_its_own_deadline_is_fine(env: Env) -> None:
    # the gap timeout (0.2 s) is shorter than the wait for the first token (0.4 s)
    reg = await env.registry({"a": {"timeout": 0.2, "first_token_timeout": 2.0}})
    env.ups["a"].script("slow_first_token:0.4")
    text, call = await ask_stream(reg.deployments["a"])
    assert (text, call.path) == ("Hello from a.", ["a:ok"])


@pytest.mark.parametrize("stream", [False, True])
async def test_connection_reset_fails_over(env: Env, stream: bool) -> None:
    reg = await env.registry({"a": {}, "b": {}}, CHAIN_AB)
    env.ups["a"].script("reset")
    text, call = await (ask_stream if stream else ask)(reg.routes["ab"])
    assert call.path == ["a:connection", "b:ok"]
    assert text == "Hello from b."


async def test_connection_reset_mid_body_fails_over(env: Env) -> None:
    reg = await env.registry({"a": {}, "b": {}}, CHAIN_AB)
    env.ups["a"].script(Fault("reset", after_chunks=1))
    _, call = await ask(reg.routes["ab"])
    assert call.path == ["a:connection", "b:ok"]


async def test_reset_mid_stream_after_the_first_token_reaches_the_consumer(env: Env) -> None:
    reg = await env.registry(
        {"a": {"retry": {"attempts": 3, "backoff_base": 0}}, "b": {}}, CHAIN_AB
    )
    env.ups["a"].script("reset:2")
    chunks: list[StreamChunk] = []
    call = Call()
    with pytest.raises(UpstreamConnectionError):
        await ask_stream(reg.routes["ab"], call, chunks)
    assert "".join(c.text for c in chunks) == "Hello fr"  # two of four pieces arrived
    assert call.path == ["a:connection"]
    assert env.ups["a"].requests == 1, "a stream must not be retried once output was sent"
    assert env.ups["b"].requests == 0


@pytest.mark.parametrize(
    ("fault", "outcome"),
    [
        ("reset:0", "connection"),  # the role chunk arrived, then the connection died
        ("reset", "connection"),
        ("429:60", "rate_limit"),
        ("500", "server_error"),
        ("malformed", "malformed_response"),
        (Fault("malformed", malformed="wrong_shape"), "malformed_response"),
        ("content_filter", "content_filter"),
    ],
)
async def test_stream_failure_before_the_first_token_fails_over(
    env: Env, fault: str | Fault, outcome: str
) -> None:
    reg = await env.registry({"a": {"retry": {"attempts": 1}}, "b": {}}, CHAIN_AB)
    env.ups["a"].script(fault)
    text, call = await ask_stream(reg.routes["ab"])
    assert call.path == [f"a:{outcome}", "b:ok"]
    assert text == "Hello from b."


@pytest.mark.parametrize("shape", ["not_json", "wrong_shape"])
async def test_malformed_body_fails_over(env: Env, shape: str) -> None:
    reg = await env.registry({"a": {}, "b": {}}, CHAIN_AB)
    env.ups["a"].script(Fault("malformed", malformed=shape))
    text, call = await ask(reg.routes["ab"])
    assert call.path == ["a:malformed_response", "b:ok"]
    assert text == "Hello from b."


# -- errors that are about the request --------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
async def test_context_window_skips_to_a_larger_window(env: Env, stream: bool) -> None:
    reg = await env.registry(
        {
            "small": {"context_window": 4096},
            "same": {"context_window": 4096},
            "big": {"context_window": 128000},
        },
        {"long": {"chain": ["small", "same", "big"]}},
    )
    env.ups["small"].default = "context_window"
    text, call = await (ask_stream if stream else ask)(reg.routes["long"])
    assert call.path == ["small:context_window", "big:ok"]
    assert text == "Hello from big."
    assert env.ups["same"].requests == 0


async def test_context_window_policies_next_and_fail(env: Env) -> None:
    reg = await env.registry(
        {"small": {"context_window": 4096}, "same": {"context_window": 4096}},
        {
            "next": {"chain": ["small", "same"], "failover": {"context_window": "next"}},
            "fail": {"chain": ["small", "same"], "failover": {"context_window": "fail"}},
            "larger": {"chain": ["small", "same"]},
        },
    )
    env.ups["small"].default = "context_window"
    _, call = await ask(reg.routes["next"])
    assert call.path == ["small:context_window", "same:ok"]
    for route in ("fail", "larger"):
        call = Call()
        with pytest.raises(ContextWindowExceeded):
            await reg.routes[route].request(MESSAGES, ModelSettings(), call)
        assert call.path == ["small:context_window"]
    assert env.ups["same"].requests == 1


async def test_content_filter_fails_over(env: Env) -> None:
    reg = await env.registry({"a": {}, "b": {}}, CHAIN_AB)
    env.ups["a"].script("content_filter")
    text, call = await ask(reg.routes["ab"])
    assert call.path == ["a:content_filter", "b:ok"]
    assert text == "Hello from b."


@pytest.mark.parametrize("stream", [False, True])
async def test_bad_request_does_not_fail_over_or_retry(env: Env, stream: bool) -> None:
    reg = await env.registry({"a": {"retry": {"attempts": 3}}, "b": {}}, CHAIN_AB)
    env.ups["a"].default = "400"
    call = Call()
    with pytest.raises(UpstreamBadRequest) as info:
        await (ask_stream if stream else ask)(reg.routes["ab"], call)
    assert info.value.status == 400
    assert call.path == ["a:bad_request"]
    assert env.ups["a"].requests == 1
    assert env.ups["b"].requests == 0


# -- circuit breaker --------------------------------------------------------------------------


async def test_breaker_opens_skips_the_upstream_and_half_opens(env: Env) -> None:
    reg = await env.registry(
        {"a": {"breaker": {"failures": 2, "cooldown": 0.3}}, "b": {}}, CHAIN_AB
    )
    route, a = reg.routes["ab"], env.ups["a"]
    breaker = breaker_of(reg.deployments["a"])
    a.default = "500"

    for _ in range(2):
        _, call = await ask(route)
        assert call.path == ["a:server_error", "b:ok"]
    assert breaker.state == "open"
    assert a.requests == 2

    for _ in range(3):  # open: a is skipped without a request
        _, call = await ask(route)
        assert call.path == ["a:circuit_open", "b:ok"]
    _, call = await ask_stream(route)
    assert call.path == ["a:circuit_open", "b:ok"]
    assert a.requests == 2

    # half-open: one trial; it fails, so the circuit opens again after a single failure
    await eventually(lambda: breaker.state == "half_open")
    _, call = await ask(route)
    assert call.path == ["a:server_error", "b:ok"]
    assert a.requests == 3
    assert breaker.state == "open"
    _, call = await ask(route)
    assert call.path == ["a:circuit_open", "b:ok"]

    # half-open again: the trial succeeds and the circuit closes
    a.default = "ok"
    await eventually(lambda: breaker.state == "half_open")
    text, call = await ask(route)
    assert (text, call.path) == ("Hello from a.", ["a:ok"])
    assert breaker.state == "closed"
    assert a.requests == 4


async def test_breaker_counts_retries_and_ignores_bad_requests(env: Env) -> None:
    reg = await env.registry(
        {
            "a": {
                "breaker": {"failures": 3, "cooldown": 30},
                "retry": {"attempts": 2, "backoff_base": 0},
            },
            "b": {},
        },
        CHAIN_AB,
    )
    route, a = reg.routes["ab"], env.ups["a"]
    breaker = breaker_of(reg.deployments["a"])
    a.script("500", "500", "400")
    _, call = await ask(route)
    assert call.path == ["a:server_error", "a:server_error", "b:ok"]
    assert breaker.consecutive_failures == 2
    with pytest.raises(UpstreamBadRequest):
        await ask(route)  # the deployment answered: the streak of failures ends
    assert breaker.consecutive_failures == 0 and breaker.state == "closed"
    a.default = "503"
    _, call = await ask(route)
    assert call.path == ["a:server_error", "a:server_error", "b:ok"]
    _, call = await ask(route)  # the third failure opens it; the retry is refused
    assert call.path == ["a:server_error", "a:circuit_open", "b:ok"]
    assert a.requests == 6


# -- routing ----------------------------------------------------------------------------------


async def test_weighted_route_distributes_by_weight(env: Env) -> None:
    reg = await env.registry(
        {"a": {}, "b": {}},
        {"mix": {"weights": [{"model": "a", "weight": 3}, {"model": "b", "weight": 1}]}},
    )
    n = 400
    first: list[str] = []
    for _ in range(n):
        _, call = await ask(reg.routes["mix"])
        assert len(call.path) == 1
        first.append(call.path[0])
    share = env.ups["a"].requests / n
    assert env.ups["a"].requests + env.ups["b"].requests == n
    assert first.count("a:ok") == env.ups["a"].requests
    assert 0.65 < share < 0.85, share  # 0.75 expected; > 4 standard deviations of slack


async def test_weighted_route_fails_over_to_the_other_target(env: Env) -> None:
    reg = await env.registry(
        {"a": {}, "b": {}},
        {"mix": {"weights": [{"model": "a", "weight": 1}, {"model": "b", "weight": 1}]}},
    )
    env.ups["a"].default = "503"
    paths = set()
    for _ in range(30):
        text, call = await ask(reg.routes["mix"])
        assert text == "Hello from b."
        paths.add(tuple(call.path))
    assert paths == {("b:ok",), ("a:server_error", "b:ok")}


async def test_tag_rules_route_by_tags(env: Env) -> None:
    reg = await env.registry(
        {"big": {}, "small": {}, "eu": {}},
        {
            "default": {
                "chain": ["big"],
                "rules": [
                    {"tags": ["cheap"], "use": "small"},
                    {"tags": ["batch", "eu"], "use": "eu-route"},
                ],
            },
            "eu-route": {"chain": ["eu", "big"]},
        },
    )
    cases = [
        ((), "default", "big"),
        (("cheap",), "small", "small"),
        (("batch",), "default", "big"),  # a rule needs all of its tags
        (("eu", "batch", "extra"), "eu-route", "eu"),
        (("cheap", "batch", "eu"), "small", "small"),  # rules are checked in order
    ]
    for tags, route, served_by in cases:
        resolved = reg.resolve(None, tags)
        assert resolved.route == route, tags
        text, call = await ask(resolved.model)
        assert call.path == [f"{served_by}:ok"], tags
        assert text == f"Hello from {served_by}."
    assert reg.resolve("default", ["cheap"]).kind == "model"
    assert [env.ups[n].requests for n in ("big", "small", "eu")] == [2, 2, 1]


# -- the upstream itself: subprocess mode and the official client -----------------------------


async def test_fault_upstream_runs_as_a_subprocess() -> None:
    proc = FaultUpstreamProcess(name="sub")
    await asyncio.to_thread(proc.start)
    reg: ModelRegistry | None = None
    try:
        await proc.script("500", Fault("429", retry_after_ms=10))
        reg = ModelRegistry.from_project(
            parse_project(
                {
                    "providers": {"p": {"type": "openai", "base_url": proc.base_url}},
                    "models": {
                        "sub": {
                            "provider": "p",
                            "model": "m",
                            "breaker": None,
                            "retry": {"attempts": 3, "backoff_base": 0.01},
                        }
                    },
                }
            )
        )
        text, call = await ask(reg.deployments["sub"])
        assert (text, call.path) == (
            "Hello from sub.",
            ["sub:server_error", "sub:rate_limit", "sub:ok"],
        )
        stats = await proc.stats()
        assert stats["requests"] == 3
        assert stats["by_fault"] == {"500": 1, "429": 1, "ok": 1}
        await proc.reset()
        assert (await proc.stats())["requests"] == 0
        with pytest.raises(ValueError, match="unknown fault"):
            await proc.script("teapot")
    finally:
        if reg is not None:
            await reg.aclose()
        await asyncio.to_thread(proc.stop)


async def test_fault_upstream_speaks_openai_to_the_official_client() -> None:
    async with FaultUpstream(name="oai") as up:
        client = openai.AsyncOpenAI(
            base_url=up.base_url, api_key="sk-test", max_retries=0, timeout=5
        )
        messages: Any = [{"role": "user", "content": "hi"}]
        try:
            done = await client.chat.completions.create(model="gpt-test", messages=messages)
            assert done.choices[0].message.content == "Hello from oai."
            assert done.choices[0].finish_reason == "stop"
            assert done.usage is not None and done.usage.completion_tokens == 4

            stream = await client.chat.completions.create(
                model="gpt-test",
                messages=messages,
                stream=True,
                stream_options={"include_usage": True},
            )
            chunks = [c async for c in stream]
            assert chunks[0].choices[0].delta.role == "assistant"
            assert (
                "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
                == "Hello from oai."
            )
            assert chunks[-1].choices == [] and chunks[-1].usage is not None

            up.script("429:7")
            with pytest.raises(openai.RateLimitError) as rate:
                await client.chat.completions.create(model="gpt-test", messages=messages)
            assert rate.value.response.headers["retry-after"] == "7"
            assert rate.value.code == "rate_limit_exceeded"

            up.script("context_window")
            with pytest.raises(openai.BadRequestError) as ctx:
                await client.chat.completions.create(model="gpt-test", messages=messages)
            assert ctx.value.code == "context_length_exceeded"

            up.script("503")
            with pytest.raises(openai.InternalServerError):
                await client.chat.completions.create(model="gpt-test", messages=messages)

            up.script("content_filter")
            filtered = await client.chat.completions.create(model="gpt-test", messages=messages)
            assert filtered.choices[0].finish_reason == "content_filter"

            up.script("reset")
            with pytest.raises(openai.APIConnectionError):
                await client.chat.completions.create(model="gpt-test", messages=messages)

            up.script("reset:2")
            got: list[str] = []
            stream = await client.chat.completions.create(
                model="gpt-test", messages=messages, stream=True
            )
            with pytest.raises(openai.APIConnectionError):
                async for c in stream:
                    got.append(c.choices[0].delta.content or "")
            assert "".join(got) == "Hello fr"
            assert up.requests == 8
        finally:
            await client.close()
