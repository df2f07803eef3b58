"""Rate limits in-process: the ``limits:`` config, exact admission under contention, reconcile,
the priority queue, deadlines refused at once, and the deployment wrapper (no network)."""

from __future__ import annotations

import asyncio
import datetime
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from elevenfactor.config import LimitsConfig, parse_project
from elevenfactor.config._reference import reference_markdown
from elevenfactor.errors import ConfigError, LimitExceeded, RateLimited, RequestError
from elevenfactor.models import (
    AssistantMessage,
    Call,
    DeploymentLimiter,
    Failover,
    FunctionModel,
    Limiter,
    LimitKey,
    LimitWait,
    LocalLimits,
    Message,
    ModelSettings,
    Response,
    StreamChunk,
    Usage,
    UserMessage,
    estimate_tokens,
    limit_wait,
    limits_for,
    priority_of,
)
from elevenfactor.models._limits import Verdict
from elevenfactor.models._ratelimit import parse_duration

PROVIDERS = {"p": {"type": "test"}}
MODELS = {"gpt-4o": {"provider": "p", "model": "m"}, "backup": {"provider": "p", "model": "b"}}
ROUTES = {"default": {"chain": ["gpt-4o", "backup"]}}


def _project(limits: Any) -> Any:
    return parse_project(
        {"providers": PROVIDERS, "models": MODELS, "routes": ROUTES, "limits": limits},
        source="elevenfactor.yaml",
    )


# -- config ---------------------------------------------------------------------------------------


def test_the_documented_example_parses_and_overrides_merge_with_defaults() -> None:
    project = _project(
        {
            "key": {"rpm": 600, "tpm": 200000},
            "user": {"rpm": 120, "tpm": 50000},
            "users": {"alice": {"rpm": 1200}},
            "teams": {"research": {"tpm": 1000000}},
            "models": {"gpt-4o": {"rpm": 500, "tpm": 300000}, "default": {"rpm": 50}},
            "deployments": {"backup": {"rpm": 3000}},
            "max_wait": 10,
        }
    )
    keys = limits_for(
        project.limits, key_name="ci", user_name="alice", team_name="research", route="gpt-4o"
    )
    assert [(k.name, k.kind, k.value) for k in keys] == [
        ("key:ci", "rpm", 600),
        ("key:ci", "tpm", 200000),
        ("user:alice", "rpm", 1200),  # the override
        ("user:alice", "tpm", 50000),  # the default's other kind
        ("team:research", "tpm", 1000000),
        ("model:gpt-4o", "rpm", 500),
        ("model:gpt-4o", "tpm", 300000),
    ]
    bob = limits_for(project.limits, user_name="bob", route="default", deployments=["backup"])
    assert [(k.name, k.kind, k.value) for k in bob] == [
        ("user:bob", "rpm", 120),
        ("user:bob", "tpm", 50000),
        ("model:default", "rpm", 50),
        ("deployment:backup", "rpm", 3000),
    ]
    assert limits_for(project.limits, team_name="other") == []  # no team default
    assert limits_for(project, user_name="bob") == bob[:2]  # the whole project will do too


def test_nothing_configured_means_no_limits() -> None:
    assert limits_for(LimitsConfig(), key_name="k", user_name="u", team_name="t", route="x") == []
    assert _project({}).limits == LimitsConfig()


@pytest.mark.parametrize(
    ("limits", "key", "expected"),
    [
        ({"models": {"gpt-5": {"rpm": 1}}}, "limits.models.gpt-5", "backup, default, gpt-4o"),
        ({"deployments": {"default": {"rpm": 1}}}, "limits.deployments.default", "backup, gpt-4o"),
        ({"user": {"rpm": 0}}, "limits.user.rpm", "greater than 0"),
        ({"users": {"a": {"tpm": -5}}}, "limits.users.a.tpm", "greater than 0"),
        ({"key": {"rpm": 1.5}}, "limits.key.rpm", "integer"),
        ({"key": {"rps": 1}}, "limits.key.rps", "unknown key"),
        ({"max_wait": -1}, "limits.max_wait", "greater than or equal to 0"),
    ],
)
def test_bad_limits_name_the_file_and_key(limits: Any, key: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        _project(limits)
    assert info.value.key == key
    assert info.value.source == "elevenfactor.yaml"
    assert expected in str(info.value)


def test_the_reference_documents_every_limits_key() -> None:
    doc = reference_markdown()
    for field in LimitsConfig.model_fields:
        assert f"| `limits.{field}` |" in doc
    assert "| `limits.key.rpm` |" in doc and "| `limits.key.tpm` |" in doc
    assert "deployments: {openai-primary: {rpm: 3000}}" in doc


def test_priorities() -> None:
    assert [priority_of(p) for p in ("high", "normal", "LOW", "7", -3, None)] == [
        10,
        0,
        -10,
        7,
        -3,
        0,
    ]
    with pytest.raises(RequestError) as info:
        priority_of("urgent", param="x-elevenfactor-priority")
    assert info.value.param == "x-elevenfactor-priority"


# -- admission ------------------------------------------------------------------------------------


async def _race(limiter: Limiter, keys: list[LimitKey], tokens: int, n: int) -> tuple[int, int]:
    """``n`` tasks at once, none willing to wait: how many got in, how many were refused."""
    deadline = time.monotonic()

    async def one() -> bool:
        try:
            await limiter.acquire(keys, tokens, deadline=deadline)
        except LimitExceeded:
            return False
        return True

    results = await asyncio.gather(*(one() for _ in range(n)))
    return sum(results), n - sum(results)


async def test_exact_admission_under_contention() -> None:
    limiter = Limiter()
    rpm = LimitKey("user:u", "rpm", 50)
    assert await _race(limiter, [rpm], 0, 200) == (50, 150)
    tpm = [LimitKey("key:k", "tpm", 10_000), LimitKey("model:m", "rpm", 1000)]
    assert await _race(limiter, tpm, 300, 100) == (33, 67)  # 33 * 300 <= 10000 < 34 * 300


async def test_waiting_requests_under_contention_keep_to_the_limit() -> None:
    limiter = Limiter()
    key = LimitKey("user:u", "rpm", 20, window=0.5)  # a burst of 20, then one per 25 ms
    start = time.monotonic()
    refused: list[LimitExceeded] = []

    async def one(i: int) -> float | None:
        try:
            permit = await limiter.acquire([key], 0, deadline=start + 0.4, priority=i % 3)
        except LimitExceeded as exc:
            refused.append(exc)
            return None
        assert time.monotonic() <= start + 0.4 + 0.05  # admitted within its deadline
        return permit.at

    results = await asyncio.gather(*(one(i) for i in range(100)))
    times = sorted(t for t in results if t is not None)
    for i in range(len(times)):  # over any span t: at most 20 + 20 * t / 0.5
        for j in range(i, len(times)):
            assert j - i + 1 <= 20 + 40 * (times[j] - times[i]) + 1e-9
    assert 20 + 12 <= len(times) <= 20 + 17  # ~16 refill in 0.4 s, all of them used
    assert len(refused) == 100 - len(times)
    assert all((exc.retry_after or 0) > 0 for exc in refused)
    assert limiter.waiting(key) == 0


async def test_all_or_nothing_across_limits() -> None:
    limiter = Limiter()
    small, big = LimitKey("user:u", "rpm", 1), LimitKey("team:t", "rpm", 100)
    await limiter.acquire([small, big], 0, deadline=time.monotonic())
    with pytest.raises(LimitExceeded):
        await limiter.acquire([small, big], 0, deadline=time.monotonic())
    # the refused request took nothing of the team limit: 99 are left
    assert await _race(limiter, [big], 0, 120) == (99, 21)


async def test_reconcile_refunds_and_adds() -> None:
    limiter = Limiter()
    tpm = [LimitKey("k", "tpm", 1000), LimitKey("k", "rpm", 100)]
    permit = await limiter.acquire(tpm, 800, deadline=time.monotonic())
    await limiter.reconcile(permit, 100)  # 700 back
    permit = await limiter.acquire(tpm, 900, deadline=time.monotonic())
    with pytest.raises(LimitExceeded):
        await limiter.acquire(tpm, 1, deadline=time.monotonic())
    await limiter.reconcile(permit, 1300)  # 400 more than reserved: owed
    with pytest.raises(LimitExceeded) as info:
        await limiter.acquire(tpm, 200, deadline=time.monotonic())
    # 1000 + 400 + 200 tokens against 1000 per 60 s: 600 must refill first, 36 s
    assert info.value.retry_after == pytest.approx(36.0, abs=0.5)
    assert info.value.details == {"limit": "k", "kind": "tpm", "value": 1000}


async def test_too_large_for_the_limit_is_refused_at_once() -> None:
    limiter = Limiter()
    start = time.monotonic()
    with pytest.raises(LimitExceeded) as info:
        await limiter.acquire(
            [LimitKey("user:a", "tpm", 1000)], 5000, deadline=time.monotonic() + 30
        )
    assert time.monotonic() - start < 0.5
    assert "can never be admitted" in info.value.message
    assert info.value.details == {"limit": "user:a", "kind": "tpm", "value": 1000}
    assert info.value.http_status == 429 and info.value.code == "rate_limit_exceeded"


async def test_unreachable_deadline_is_refused_at_once_with_retry_after() -> None:
    limiter = Limiter()
    key = LimitKey("user:alice", "rpm", 2, window=10.0)  # one unit per 5 s
    for _ in range(2):
        await limiter.acquire([key], 0, deadline=time.monotonic())
    start = time.monotonic()
    with pytest.raises(LimitExceeded) as info:
        await limiter.acquire([key], 0, deadline=time.monotonic() + 1.0)
    assert time.monotonic() - start < 0.5
    assert info.value.retry_after == pytest.approx(5.0, abs=0.3)
    assert info.value.details == {"limit": "user:alice", "kind": "rpm", "value": 2}

    # A waiter ahead (deadline 20 s) takes the unit at 5 s; one behind it would need 10 s.
    first = asyncio.create_task(limiter.acquire([key], 0, deadline=time.monotonic() + 20))
    await _until(lambda: limiter.waiting(key) == 1)
    start = time.monotonic()
    with pytest.raises(LimitExceeded) as info:
        await limiter.acquire([key], 0, deadline=time.monotonic() + 7.0)
    assert time.monotonic() - start < 0.5
    assert info.value.retry_after == pytest.approx(10.0, abs=0.3)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert limiter.waiting(key) == 0


class _Counting(LocalLimits):
    def __init__(self) -> None:
        super().__init__()
        self.tries = 0

    async def try_acquire(
        self, keys: Sequence[LimitKey], costs: Sequence[int], *, commit: bool = True
    ) -> Verdict:
        self.tries += 1
        return await super().try_acquire(keys, costs, commit=commit)


async def test_waiters_are_admitted_when_capacity_frees_without_polling() -> None:
    backend = _Counting()
    limiter = Limiter(backend)
    key = LimitKey("model:m", "rpm", 5, window=0.5)  # a burst of 5, then one per 0.1 s
    start = time.monotonic()
    permits = await asyncio.gather(
        *(limiter.acquire([key], 0, deadline=start + 5) for _ in range(10))
    )
    times = sorted(p.at - start for p in permits)
    assert all(t < 0.05 for t in times[:5])
    for i in range(5, 10):  # the n-th beyond the burst at n * 0.1 s, never earlier
        assert times[i] >= (i - 4) * 0.1 - 0.002
    assert times[-1] < 0.5 + 0.4
    assert backend.tries <= 10 + 5 * 3  # woken at the predicted times, not polling
    assert limiter.waiting(key) == 0


async def test_higher_priority_is_served_first_and_fifo_within_a_priority() -> None:
    limiter = Limiter()
    key = LimitKey("user:u", "rpm", 1, window=0.3)
    await limiter.acquire([key], 0, deadline=time.monotonic())
    order: list[str] = []

    async def one(label: str, priority: int) -> None:
        await limiter.acquire([key], 0, deadline=time.monotonic() + 10, priority=priority)
        order.append(label)

    tasks = [asyncio.create_task(one("low-1", priority_of("low")))]
    await _until(lambda: limiter.waiting(key) == 1)
    tasks.append(asyncio.create_task(one("low-2", priority_of("low"))))
    await _until(lambda: limiter.waiting(key) == 2)
    tasks.append(asyncio.create_task(one("normal", 0)))
    await _until(lambda: limiter.waiting(key) == 3)
    tasks.append(asyncio.create_task(one("high", priority_of("high"))))
    await asyncio.gather(*tasks)
    assert order == ["high", "normal", "low-1", "low-2"]


async def test_a_cancelled_waiter_leaves_the_queue_and_the_next_is_served() -> None:
    limiter = Limiter()
    key = LimitKey("user:u", "rpm", 1, window=0.2)
    await limiter.acquire([key], 0, deadline=time.monotonic())
    head = asyncio.create_task(limiter.acquire([key], 0, deadline=time.monotonic() + 10))
    await _until(lambda: limiter.waiting(key) == 1)
    second = asyncio.create_task(limiter.acquire([key], 0, deadline=time.monotonic() + 10))
    await _until(lambda: limiter.waiting(key) == 2)
    head.cancel()
    permit = await asyncio.wait_for(second, 2)
    assert permit.waited < 1.0
    assert limiter.waiting(key) == 0


async def _until(condition: Any, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


# -- the deployment wrapper -----------------------------------------------------------------------


def _answer(messages: Sequence[Message], settings: ModelSettings) -> Response:
    return Response(
        message=AssistantMessage(content="ok"), usage=Usage(input_tokens=10, output_tokens=5)
    )


def test_parse_duration() -> None:
    assert parse_duration("1s") == 1.0
    assert parse_duration("6m0s") == 360.0
    assert parse_duration("20ms") == pytest.approx(0.02)
    assert parse_duration("1h2m3.5s") == pytest.approx(3723.5)
    assert parse_duration("2.5") == 2.5
    assert parse_duration("soon") is None and parse_duration(None) is None


def test_estimate_tokens() -> None:
    messages: list[Message] = [UserMessage(content="x" * 400)]
    assert estimate_tokens(messages, ModelSettings()) == 100
    assert estimate_tokens(messages, ModelSettings(max_tokens=50)) == 150


async def test_unlimited_deployment_goes_straight_through() -> None:
    inner = FunctionModel(_answer, name="d")
    wrapper = DeploymentLimiter(inner)
    marker = object()
    inner.request_stream = lambda *a: marker  # type: ignore[method-assign,assignment]
    assert wrapper.request_stream([], ModelSettings(), Call()) is marker
    coro = wrapper.request([], ModelSettings(), Call())
    assert coro.cr_code is FunctionModel.request.__code__  # type: ignore[attr-defined]
    await coro
    wrapper.observe(200, {"content-type": "application/json"})  # no rate-limit headers: free
    assert wrapper.request_stream([], ModelSettings(), Call()) is marker


async def test_failover_moves_on_when_a_deployment_is_limited_past_the_deadline() -> None:
    primary = DeploymentLimiter(
        FunctionModel(_answer, name="primary"),
        keys=[LimitKey("deployment:primary", "rpm", 1)],
        max_wait=1.0,
    )
    backup = FunctionModel(_answer, name="backup")
    route = Failover("r", [primary, backup])
    await route.request([UserMessage(content="hi")], ModelSettings(), Call())
    assert len(primary.inner.calls) == 1  # type: ignore[attr-defined]
    call = Call()
    start = time.monotonic()
    await route.request([UserMessage(content="hi")], ModelSettings(), call)
    assert time.monotonic() - start < 0.5  # not waited out: the next unit is 60 s away
    assert call.path == ["primary:rate_limit"]
    assert len(backup.calls) == 1


async def test_deployment_tokens_are_reconciled_with_the_usage() -> None:
    limiter = Limiter()
    key = LimitKey("deployment:d", "tpm", 1000)
    wrapper = DeploymentLimiter(FunctionModel(_answer, name="d"), keys=[key], limiter=limiter)
    settings = ModelSettings(max_tokens=900)
    await wrapper.request([UserMessage(content="hi")], settings, Call())  # 900 reserved, 15 used
    # 985 are free again: a second 900 fits at once
    token = limit_wait.set(LimitWait(time.monotonic()))
    try:
        await wrapper.request([UserMessage(content="hi")], settings, Call())
        chunks = [
            c
            async for c in wrapper.request_stream(
                [UserMessage(content="hi")], ModelSettings(), Call()
            )
        ]
    finally:
        limit_wait.reset(token)
    assert chunks[-1].usage is not None


async def test_provider_headers_and_429_pause_the_deployment() -> None:
    now = [100.0]
    inner = FunctionModel(_answer, name="d")
    wrapper = DeploymentLimiter(inner, max_wait=1.0, clock=lambda: now[0])
    wrapper.observe(
        200, {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "6m0s"}
    )
    call = Call()
    with pytest.raises(LimitExceeded) as info:
        await wrapper.request([], ModelSettings(), call)
    assert info.value.retry_after == pytest.approx(360.0)
    assert info.value.details["limit"] == "deployment:d"
    assert call.path == ["d:rate_limit"] and inner.calls == []
    now[0] += 361
    await wrapper.request([], ModelSettings(), call)  # the reset passed
    assert len(inner.calls) == 1

    # tokens: 100 left of 1000, full in 9 s: a 400-token request waits (400 - 100) / 100 = 3 s
    wrapper.observe(
        200,
        {
            "x-ratelimit-remaining-tokens": "100",
            "x-ratelimit-limit-tokens": "1000",
            "x-ratelimit-reset-tokens": "9s",
        },
    )
    assert wrapper.feedback_wait(now[0], 400) == pytest.approx(3.0)
    assert wrapper.feedback_wait(now[0], 50) == 0.0

    async def limited(messages: Sequence[Message], settings: ModelSettings) -> Response:
        raise RateLimited("429", status=429, retry_after=30.0)

    # a 429 seen by a limited deployment pauses it for its Retry-After (the header hook sees
    # every 429, including those of unlimited deployments: see the loopback test)
    failing = DeploymentLimiter(
        FunctionModel(limited, name="f"), keys=[LimitKey("f", "rpm", 100)], clock=lambda: now[0]
    )
    with pytest.raises(RateLimited):
        await failing.request([], ModelSettings(), Call())
    assert failing.feedback_wait(now[0], 0) == pytest.approx(30.0)
    fresh = DeploymentLimiter(FunctionModel(_answer, name="g"), clock=lambda: now[0])
    fresh.observe(429, {"retry-after": "7"})
    assert fresh.feedback_wait(now[0], 0) == pytest.approx(7.0)
    fresh.observe(429, {})  # says nothing: a short default pause, not less than known
    assert fresh.feedback_wait(now[0], 0) == pytest.approx(7.0)


async def test_a_stream_waits_for_capacity_within_its_deadline() -> None:
    key = LimitKey("deployment:s", "rpm", 1, window=0.2)
    wrapper = DeploymentLimiter(FunctionModel(_answer, name="s"), keys=[key])
    got: list[StreamChunk] = []

    async def drain() -> None:
        stream: AsyncIterator[StreamChunk] = wrapper.request_stream([], ModelSettings(), Call())
        got.extend([c async for c in stream])

    start = time.monotonic()
    await drain()
    await drain()  # waits ~0.2 s for the next unit, well within max_wait
    assert 0.15 <= time.monotonic() - start < 2.0
    assert sum(1 for c in got if c.finish_reason) == 2


async def test_anthropic_rate_limit_headers_pause_the_deployment() -> None:
    """Anthropic's ``anthropic-ratelimit-*`` headers (reset as an RFC 3339 time) are read as
    OpenAI's: no requests left pauses the deployment until the reset."""
    now = [100.0]
    inner = FunctionModel(_answer, name="claude")
    wrapper = DeploymentLimiter(inner, max_wait=1.0, clock=lambda: now[0])
    reset = time.time() + 30
    stamp = datetime.datetime.fromtimestamp(reset, datetime.UTC).isoformat().replace("+00:00", "Z")
    wrapper.observe(
        200,
        {
            "anthropic-ratelimit-requests-remaining": "0",
            "anthropic-ratelimit-requests-reset": stamp,
            "anthropic-ratelimit-tokens-remaining": "500",
            "anthropic-ratelimit-tokens-limit": "1000",
            "anthropic-ratelimit-tokens-reset": stamp,
        },
    )
    with pytest.raises(LimitExceeded) as info:
        await wrapper.request([], ModelSettings(), Call())
    assert info.value.retry_after == pytest.approx(30.0, abs=1.0)
    assert wrapper.tokens_left == 500
