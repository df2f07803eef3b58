"""A provider's own rate limits feed its deployment's limiter, through the real OpenAI provider
and a loopback fault-injecting upstream: ``x-ratelimit-*`` headers and 429s pause the deployment,
and a failover chain moves on at once while it cannot take a call before the deadline."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from elevenfactor.config import parse_project
from elevenfactor.errors import LimitExceeded
from elevenfactor.models import Call, ModelRegistry, ModelSettings, UserMessage
from tests.support.fault_upstream import Fault, FaultUpstream

pytestmark = pytest.mark.integration

MESSAGES = [UserMessage(content="hello there")]
EXHAUSTED = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "30s"}


@pytest.fixture
async def upstream() -> AsyncIterator[FaultUpstream]:
    async with FaultUpstream(name="up") as up:
        yield up


async def _registry(up: FaultUpstream, limits: dict[str, Any] | None = None) -> ModelRegistry:
    doc = {
        "providers": {"p": {"type": "openai", "base_url": up.base_url, "api_key": "sk-test"}},
        "models": {
            name: {"provider": "p", "model": f"model-{name}", "retry": {"attempts": 1}}
            for name in ("primary", "backup")
        },
        "routes": {"default": {"chain": ["primary", "backup"]}},
        "limits": {"max_wait": 2, **(limits or {})},
    }
    return ModelRegistry.from_project(parse_project(doc))


async def _ask(reg: ModelRegistry, *, stream: bool = False) -> Call:
    call = Call()
    route = reg.resolve("default").model
    if stream:
        chunks = [c async for c in route.request_stream(MESSAGES, ModelSettings(), call)]
        assert chunks[-1].finish_reason or chunks[-1].usage is not None
    else:
        response = await route.request(MESSAGES, ModelSettings(), call)
        assert response.message.content
    return call


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
async def test_remaining_requests_zero_pauses_until_the_reset(
    upstream: FaultUpstream, stream: bool
) -> None:
    reg = await _registry(upstream)
    try:
        upstream.script(Fault("ok", headers=EXHAUSTED), model="model-primary")
        assert (await _ask(reg, stream=stream)).path == ["primary:ok"]
        start = time.monotonic()
        call = await _ask(reg, stream=stream)
        assert time.monotonic() - start < 1.0  # the 30 s pause is not waited out
        assert call.path == ["primary:rate_limit", "backup:ok"]
        assert upstream.count(model="model-primary") == 1  # not even asked
    finally:
        await reg.aclose()


async def test_a_short_reset_is_waited_for_within_the_deadline(upstream: FaultUpstream) -> None:
    reg = await _registry(upstream)
    try:
        headers = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "300ms"}
        upstream.script(Fault("ok", headers=headers), model="model-primary")
        await _ask(reg)
        start = time.monotonic()
        call = await _ask(reg)
        assert time.monotonic() - start >= 0.28
        assert call.path == ["primary:ok"]
        assert upstream.count(model="model-primary") == 2
    finally:
        await reg.aclose()


async def test_a_provider_429_pauses_the_deployment_for_its_retry_after(
    upstream: FaultUpstream,
) -> None:
    reg = await _registry(upstream)
    try:
        upstream.script(Fault("429", retry_after=20), model="model-primary")
        assert (await _ask(reg)).path == ["primary:rate_limit", "backup:ok"]
        call = await _ask(reg)
        assert call.path == ["primary:rate_limit", "backup:ok"]
        assert upstream.count(model="model-primary") == 1  # paused: not asked again
        primary = reg.deployments["primary"]
        with pytest.raises(LimitExceeded) as info:  # alone, it says when to come back
            await primary.request(MESSAGES, ModelSettings(), Call())
        assert 18 < (info.value.retry_after or 0) <= 20
        assert info.value.details == {"limit": "deployment:primary", "kind": "provider"}
    finally:
        await reg.aclose()


async def test_remaining_tokens_below_the_request_holds_it(upstream: FaultUpstream) -> None:
    reg = await _registry(upstream)
    try:
        headers = {
            "x-ratelimit-remaining-tokens": "10",
            "x-ratelimit-limit-tokens": "1000",
            "x-ratelimit-reset-tokens": "1m",
        }
        upstream.script(Fault("ok", headers=headers), model="model-primary")
        await _ask(reg)
        route = reg.resolve("default").model
        small, big = Call(), Call()
        await route.request(MESSAGES, ModelSettings(max_tokens=5), small)
        assert small.path == ["primary:ok"]  # 3 + 5 tokens fit in the 10 left
        await route.request(MESSAGES, ModelSettings(max_tokens=500), big)
        assert big.path == ["primary:rate_limit", "backup:ok"]  # ~30 s to refill: fail over
    finally:
        await reg.aclose()


async def test_a_configured_deployment_limit_fails_over(upstream: FaultUpstream) -> None:
    reg = await _registry(upstream, {"deployments": {"primary": {"rpm": 1}}})
    try:
        assert (await _ask(reg)).path == ["primary:ok"]
        start = time.monotonic()
        assert (await _ask(reg)).path == ["primary:rate_limit", "backup:ok"]
        assert time.monotonic() - start < 1.0  # the next unit is 60 s away: refused at once
        assert upstream.count(model="model-primary") == 1
    finally:
        await reg.aclose()


async def test_no_limit_and_no_feedback_adds_no_wrapper_work(upstream: FaultUpstream) -> None:
    reg = await _registry(upstream)
    try:
        for _ in range(3):
            assert (await _ask(reg)).path == ["primary:ok"]
        wrapper = reg.deployments["primary"]
        assert type(wrapper).__name__ == "DeploymentLimiter"
        assert not wrapper._gated  # type: ignore[attr-defined]  # straight to the inner stack
    finally:
        await reg.aclose()
