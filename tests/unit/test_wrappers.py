"""The pure logic of the model wrappers: Retry, CircuitBreaker, Failover, Weighted, Deployment.

No network: the inner models are the in-library ``ScriptedModel`` / ``FunctionModel`` and a small
stream-scripting model for failures in the middle of a stream.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter, deque
from collections.abc import AsyncIterator, Sequence
from typing import Any, Literal

import pytest

from elevenfactor.config import (
    BreakerConfig,
    FailoverConfig,
    RetryConfig,
    parse_project,
)
from elevenfactor.errors import (
    CircuitOpen,
    ConfigError,
    ContentFiltered,
    ContextWindowExceeded,
    MalformedResponse,
    ModelError,
    ModelTimeout,
    RateLimited,
    UpstreamBadRequest,
    UpstreamConnectionError,
    UpstreamServerError,
)
from elevenfactor.models import (
    AssistantMessage,
    Call,
    CircuitBreaker,
    Deployment,
    Failover,
    FunctionModel,
    Message,
    Model,
    ModelRegistry,
    ModelSettings,
    Response,
    Retry,
    ScriptedModel,
    StreamChunk,
    UserMessage,
    Weighted,
)

MESSAGES = [UserMessage(content="hi")]
SETTINGS = ModelSettings()


def dep(
    model: Model, *, timeout: float = 5.0, first_token_timeout: float | None = None
) -> Deployment:
    """A Deployment around ``model`` so attempts get recorded on the Call."""
    return Deployment(
        model,
        provider="test",
        model_id=f"id-{model.name}",
        timeout=timeout,
        first_token_timeout=first_token_timeout,
    )


async def ask(model: Model, call: Call | None = None) -> str:
    response = await model.request(MESSAGES, SETTINGS, call or Call())
    return response.message.content or ""


async def drain(model: Model, call: Call, into: list[StreamChunk] | None = None) -> str:
    chunks = [] if into is None else into
    async for chunk in model.request_stream(MESSAGES, SETTINGS, call):
        chunks.append(chunk)
    return "".join(c.text for c in chunks)


class StreamScript:
    """A model whose streams follow a script. Each stream is a list of chunks, exceptions to
    raise at that point, and numbers (seconds to sleep)."""

    def __init__(
        self, *streams: list[Any], name: str = "streamer", context_window: int | None = None
    ) -> None:
        self.streams = deque(streams)
        self._name = name
        self._context_window = context_window
        self.opened = 0
        self.closed = 0

    @property
    def name(self) -> str:
        return self._name

    @property
    def context_window(self) -> int | None:
        return self._context_window

    async def request(
        self, messages: Sequence[Message], settings: ModelSettings, call: Call
    ) -> Response:
        raise AssertionError("only streams are scripted")

    async def request_stream(
        self, messages: Sequence[Message], settings: ModelSettings, call: Call
    ) -> AsyncIterator[StreamChunk]:
        items = self.streams.popleft()
        self.opened += 1
        try:
            for item in items:
                if isinstance(item, BaseException):
                    raise item
                if isinstance(item, int | float):
                    await asyncio.sleep(item)
                    continue
                yield item
        finally:
            self.closed += 1


def text(t: str) -> StreamChunk:
    return StreamChunk(text=t)


FINISH = StreamChunk(finish_reason="stop")


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- Retry ------------------------------------------------------------------------------------


class _Top(random.Random):
    """An rng whose uniform() returns the top of the range: exposes the exact cap."""

    def uniform(self, a: float, b: float) -> float:
        return b


def test_retry_delay_caps_double_up_to_backoff_max() -> None:
    retry = Retry(
        ScriptedModel([]), RetryConfig(attempts=7, backoff_base=0.5, backoff_max=3.0), rng=_Top()
    )
    err = UpstreamServerError("boom")
    assert [retry.delay(n, err) for n in range(1, 7)] == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]
    assert retry.delay(7, err) is None  # the seventh attempt was the last


def test_retry_delay_is_full_jitter_within_bounds() -> None:
    config = RetryConfig(attempts=6, backoff_base=0.5, backoff_max=3.0)
    retry = Retry(ScriptedModel([]), config, rng=random.Random(1234))
    err = UpstreamConnectionError("reset")
    for attempt, cap in zip(range(1, 6), [0.5, 1.0, 2.0, 3.0, 3.0], strict=True):
        samples = [retry.delay(attempt, err) for _ in range(2000)]
        assert all(s is not None and 0 <= s <= cap for s in samples)
        values = [s for s in samples if s is not None]
        assert min(values) < 0.05 * cap and max(values) > 0.95 * cap  # spread over [0, cap]
        assert abs(sum(values) / len(values) - cap / 2) < 0.05 * cap


def test_retry_delay_honours_retry_after_up_to_the_cap() -> None:
    retry = Retry(ScriptedModel([]), RetryConfig(attempts=3, max_retry_after=10), rng=_Top())
    assert retry.delay(1, RateLimited("429", retry_after=2.5)) == 2.5  # exact, no jitter
    assert retry.delay(1, RateLimited("429", retry_after=10)) == 10
    assert retry.delay(1, RateLimited("429", retry_after=10.01)) is None  # fail over instead
    assert retry.delay(1, UpstreamServerError("503", retry_after=1)) == 1
    assert retry.delay(3, RateLimited("429", retry_after=1)) is None  # out of attempts


@pytest.mark.parametrize(
    "error",
    [
        UpstreamBadRequest("400"),
        ContextWindowExceeded("ctx"),
        ContentFiltered("filtered"),
        CircuitOpen("open", retry_after=1),
    ],
)
def test_retry_delay_gives_up_on_classes_not_configured(error: ModelError) -> None:
    retry = Retry(ScriptedModel([]), RetryConfig(attempts=5))
    assert retry.delay(1, error) is None


def test_retry_on_is_configurable() -> None:
    retry = Retry(ScriptedModel([]), RetryConfig(attempts=5, on=["timeout"]))
    assert retry.delay(1, UpstreamServerError("500")) is None
    assert retry.delay(1, ModelTimeout("slow")) is not None


async def test_retry_request_retries_then_answers() -> None:
    inner = ScriptedModel(
        [UpstreamServerError("500"), RateLimited("429", retry_after=0), "done"], name="m"
    )
    call = Call()
    retry = Retry(dep(inner), RetryConfig(attempts=3, backoff_base=0))
    assert await ask(retry, call) == "done"
    assert call.path == ["m:server_error", "m:rate_limit", "m:ok"]


async def test_retry_request_gives_up_after_attempts() -> None:
    inner = ScriptedModel([UpstreamServerError("1"), UpstreamServerError("2"), "never"])
    retry = Retry(inner, RetryConfig(attempts=2, backoff_base=0))
    with pytest.raises(UpstreamServerError, match="2"):
        await ask(retry)
    assert list(inner.script) == ["never"]


async def test_retry_request_raises_a_bad_request_at_once() -> None:
    inner = ScriptedModel([UpstreamBadRequest("400"), "never"])
    with pytest.raises(UpstreamBadRequest):
        await ask(Retry(inner, RetryConfig(attempts=5)))
    assert len(inner.calls) == 1


async def test_retry_waits_out_retry_after() -> None:
    inner = ScriptedModel([RateLimited("429", retry_after=0.05), "ok"])
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await ask(Retry(inner, RetryConfig(attempts=2, backoff_base=10))) == "ok"
    assert loop.time() - started >= 0.05 - 1e-3


async def test_retry_stream_retries_only_before_the_first_chunk() -> None:
    inner = StreamScript(
        [UpstreamConnectionError("before")],
        [text("a"), text("b"), UpstreamConnectionError("after")],
        [text("never")],
    )
    retry = Retry(dep(inner), RetryConfig(attempts=5, backoff_base=0))
    call, got = Call(), list[StreamChunk]()
    with pytest.raises(UpstreamConnectionError, match="after"):
        await drain(retry, call, got)
    assert [c.text for c in got] == ["a", "b"]
    assert call.path == ["streamer:connection", "streamer:connection"]
    assert (inner.opened, inner.closed, len(inner.streams)) == (2, 2, 1)


# -- CircuitBreaker ---------------------------------------------------------------------------


def fail(n: int) -> list[Any]:
    return [UpstreamServerError(f"fail {i}") for i in range(n)]


async def test_breaker_state_machine() -> None:
    clock = Clock()
    inner = ScriptedModel([*fail(2), "ok", *fail(3), *fail(1), "recovered"], name="m")
    breaker = CircuitBreaker(inner, BreakerConfig(failures=3, cooldown=10), clock=clock)
    assert breaker.state == "closed"

    for _ in range(2):
        with pytest.raises(UpstreamServerError):
            await ask(breaker)
    assert breaker.consecutive_failures == 2
    assert await ask(breaker) == "ok"  # a success ends the run
    assert (breaker.consecutive_failures, breaker.state) == (0, "closed")

    for _ in range(3):
        with pytest.raises(UpstreamServerError):
            await ask(breaker)
    assert breaker.state == "open"

    clock.now += 4
    calls_before, call = len(inner.calls), Call()
    with pytest.raises(CircuitOpen) as info:
        await ask(breaker, call)
    assert info.value.retry_after == pytest.approx(6)
    assert call.path == ["m:circuit_open"]
    assert len(inner.calls) == calls_before  # the inner model was not called

    clock.now += 5.99
    assert breaker.state == "open"
    clock.now += 0.01
    assert breaker.state == "half_open"

    with pytest.raises(UpstreamServerError):  # a failed trial re-opens at once
        await ask(breaker)
    assert breaker.state == "open" and breaker.opened_at == clock.now

    clock.now += 10
    assert breaker.state == "half_open"
    assert await ask(breaker) == "recovered"
    assert (breaker.state, breaker.consecutive_failures) == ("closed", 0)


async def test_breaker_half_open_admits_a_single_trial() -> None:
    clock, release = Clock(), asyncio.Event()

    async def slow(messages: Sequence[Message], settings: ModelSettings) -> Response:
        await release.wait()
        return Response(message=AssistantMessage(content="trial ok"))

    breaker = CircuitBreaker(
        FunctionModel(slow, name="m"), BreakerConfig(failures=1, cooldown=1), clock=clock
    )
    breaker.opened_at, breaker.consecutive_failures = clock.now, 1
    clock.now += 1
    trial = asyncio.create_task(ask(breaker))
    await asyncio.sleep(0)
    with pytest.raises(CircuitOpen):  # a second caller during the trial is refused
        await ask(breaker)
    release.set()
    assert await trial == "trial ok"
    assert breaker.state == "closed"


async def test_breaker_cancelled_trial_frees_the_slot() -> None:
    clock = Clock()

    async def never(messages: Sequence[Message], settings: ModelSettings) -> Response:
        await asyncio.Event().wait()
        raise AssertionError

    breaker = CircuitBreaker(
        FunctionModel(never), BreakerConfig(failures=1, cooldown=1), clock=clock
    )
    breaker.opened_at = clock.now - 1
    trial = asyncio.create_task(ask(breaker))
    await asyncio.sleep(0)
    trial.cancel()
    with pytest.raises(asyncio.CancelledError):
        await trial
    assert breaker.state == "half_open"
    breaker.inner = ScriptedModel(["next trial"])
    assert await ask(breaker) == "next trial"


@pytest.mark.parametrize(
    "error",
    [
        UpstreamBadRequest("400"),
        ContextWindowExceeded("ctx"),
        ContentFiltered("filtered"),
    ],
)
async def test_breaker_ignores_errors_about_the_request(error: ModelError) -> None:
    clock = Clock()
    inner = ScriptedModel([*fail(2), error, *fail(2), error])
    breaker = CircuitBreaker(inner, BreakerConfig(failures=3, cooldown=5), clock=clock)
    for _ in range(3):
        with pytest.raises(ModelError):
            await ask(breaker)
    assert (breaker.state, breaker.consecutive_failures) == ("closed", 0)  # the run ended
    for _ in range(2):
        with pytest.raises(UpstreamServerError):
            await ask(breaker)
    assert breaker.state == "closed"
    # a half-open trial that gets an answer (even a refusal) closes the circuit
    breaker.opened_at, breaker.consecutive_failures = clock.now - 5, 3
    with pytest.raises(type(error)):
        await ask(breaker)
    assert (breaker.state, breaker.consecutive_failures) == ("closed", 0)


async def test_breaker_counts_a_stream_that_breaks_midway() -> None:
    inner = StreamScript([text("a"), UpstreamConnectionError("cut")], [text("b"), FINISH])
    breaker = CircuitBreaker(dep(inner), BreakerConfig(failures=1, cooldown=60), clock=Clock())
    with pytest.raises(UpstreamConnectionError):
        await drain(breaker, Call())
    assert breaker.state == "open"
    call = Call()
    with pytest.raises(CircuitOpen):
        await drain(breaker, call)
    assert call.path == ["streamer:circuit_open"]
    assert inner.opened == 1


async def test_breaker_closes_the_inner_stream_when_the_consumer_stops() -> None:
    inner = StreamScript([text("a"), text("b"), FINISH])
    breaker = CircuitBreaker(dep(inner), BreakerConfig(), clock=Clock())
    call = Call()
    stream = breaker.request_stream(MESSAGES, SETTINGS, call)
    assert (await anext(stream)).text == "a"
    await stream.aclose()  # type: ignore[attr-defined]
    assert inner.closed == 1
    assert call.path == ["streamer:cancelled"]  # recorded now, not when garbage is collected
    assert breaker.state == "closed"


# -- Failover ---------------------------------------------------------------------------------


async def test_failover_tries_candidates_in_order() -> None:
    a = ScriptedModel([RateLimited("429")], name="a")
    b = ScriptedModel([UpstreamServerError("500")], name="b")
    c = ScriptedModel(["from c"], name="c")
    d = ScriptedModel([], name="d")
    chain = Failover("route", [dep(a), dep(b), dep(c), dep(d)])
    call = Call()
    assert await ask(chain, call) == "from c"
    assert call.path == ["a:rate_limit", "b:server_error", "c:ok"]
    assert d.calls == []


async def test_failover_raises_errors_it_is_not_configured_for() -> None:
    b = ScriptedModel(["never"], name="b")
    call = Call()
    with pytest.raises(UpstreamBadRequest):
        await ask(
            Failover("r", [dep(ScriptedModel([UpstreamBadRequest("400")], name="a")), dep(b)]), call
        )
    assert call.path == ["a:bad_request"] and b.calls == []

    only_rate_limits = FailoverConfig(on=["rate_limit"])
    with pytest.raises(UpstreamServerError):
        await ask(Failover("r", [ScriptedModel([UpstreamServerError("500")]), b], only_rate_limits))
    assert b.calls == []


async def test_failover_raises_the_last_error_when_all_fail() -> None:
    chain = Failover(
        "r",
        [ScriptedModel([RateLimited("first")]), ScriptedModel([UpstreamConnectionError("last")])],
    )
    with pytest.raises(UpstreamConnectionError, match="last"):
        await ask(chain)


def _windows(*sizes: int | None) -> list[ScriptedModel]:
    first = ScriptedModel([ContextWindowExceeded("too long")], name="m0", context_window=sizes[0])
    rest = [
        ScriptedModel([f"from m{i}"], name=f"m{i}", context_window=size)
        for i, size in enumerate(sizes[1:], start=1)
    ]
    return [first, *rest]


@pytest.mark.parametrize(
    ("sizes", "policy", "answer"),
    [
        ((4096, 4096, 8192), "larger", "from m2"),  # same size skipped
        ((4096, 2048, 4096, 16384, 8192), "larger", "from m3"),
        ((4096, 4096, None), "larger", "from m2"),  # unknown window: worth a try
        ((4096, 4096, 8192), "next", "from m1"),
        ((4096, 8192), "fail", None),
        ((8192, 4096), "larger", None),  # nothing larger: the error stands
    ],
)
async def test_failover_on_context_window(
    sizes: tuple[int | None, ...], policy: Literal["larger", "next", "fail"], answer: str | None
) -> None:
    models = _windows(*sizes)
    chain = Failover("r", [dep(m) for m in models], FailoverConfig(context_window=policy))
    if answer is None:
        with pytest.raises(ContextWindowExceeded):
            await ask(chain)
    else:
        assert await ask(chain) == answer
    assert chain.context_window == max(s for s in sizes if s)


async def test_failover_stream_moves_on_only_before_the_first_chunk() -> None:
    a = StreamScript([UpstreamServerError("500")], name="a")
    b = StreamScript([text("b1"), UpstreamConnectionError("cut")], name="b")
    c = StreamScript([text("never"), FINISH], name="c")
    chain = Failover("r", [dep(a), dep(b), dep(c)])
    call, got = Call(), list[StreamChunk]()
    with pytest.raises(UpstreamConnectionError):
        await drain(chain, call, got)
    assert [g.text for g in got] == ["b1"]
    assert call.path == ["a:server_error", "b:connection"]
    assert c.opened == 0


def test_failover_needs_candidates() -> None:
    with pytest.raises(ValueError, match="at least one"):
        Failover("empty", [])


# -- Weighted ---------------------------------------------------------------------------------


def test_weighted_order_follows_the_weights() -> None:
    models = [ScriptedModel([], name=n) for n in ("light", "medium", "heavy")]
    weighted = Weighted(
        "w", list(zip(models, [1.0, 2.0, 7.0], strict=True)), rng=random.Random(42).random
    )
    n = 20000
    firsts: Counter[str] = Counter()
    seconds_after_heavy: Counter[str] = Counter()
    for _ in range(n):
        order = weighted.order()
        assert sorted(m.name for m in order) == ["heavy", "light", "medium"]
        firsts[order[0].name] += 1
        if order[0].name == "heavy":
            seconds_after_heavy[order[1].name] += 1
    for name, share in (("light", 0.1), ("medium", 0.2), ("heavy", 0.7)):
        assert abs(firsts[name] / n - share) < 0.015, (name, firsts)
    # without replacement: after heavy, medium comes second 2/3 of the time
    total = sum(seconds_after_heavy.values())
    assert abs(seconds_after_heavy["medium"] / total - 2 / 3) < 0.02


def test_weighted_order_uses_the_given_rng() -> None:
    a, b = ScriptedModel([], name="a"), ScriptedModel([], name="b")
    draws = iter([0.5, 0.9, 0.9, 0.5])
    weighted = Weighted("w", [(a, 1.0), (b, 1.0)], rng=lambda: next(draws))
    assert [m.name for m in weighted.order()] == ["b", "a"]
    assert [m.name for m in weighted.order()] == ["a", "b"]


async def test_weighted_fails_over_to_the_other_targets() -> None:
    bad = ScriptedModel([UpstreamServerError("down")], name="bad")
    good = ScriptedModel(["fine"], name="good")
    weighted = Weighted("w", [(dep(bad), 100.0), (dep(good), 0.001)], rng=random.Random(0).random)
    call = Call()
    assert await ask(weighted, call) == "fine"
    assert call.path == ["bad:server_error", "good:ok"]


# -- Deployment -------------------------------------------------------------------------------


async def test_deployment_times_out_a_slow_answer() -> None:
    async def slow(messages: Sequence[Message], settings: ModelSettings) -> Response:
        await asyncio.sleep(5)
        raise AssertionError

    call = Call()
    with pytest.raises(ModelTimeout, match=r"no answer within 0\.05s"):
        await ask(dep(FunctionModel(slow, name="slow"), timeout=0.05), call)
    assert call.path == ["slow:timeout"]
    final = call.final
    assert final is not None and (final.provider, final.model) == ("test", "id-slow")


async def test_deployment_role_only_chunks_are_not_the_first_token() -> None:
    inner = StreamScript([StreamChunk(model="served-model"), StreamChunk(), text("hi"), FINISH])
    got: list[StreamChunk] = []
    call = Call()
    assert await drain(dep(inner), call, got) == "hi"
    assert [c.text for c in got] == ["hi", ""]
    assert got[0].model == "served-model"  # the held chunk's model is kept
    assert call.path == ["streamer:ok"]


async def test_deployment_first_token_deadline_is_not_extended_by_empty_chunks() -> None:
    empty = StreamChunk()
    inner = StreamScript([empty, 0.06, empty, 0.06, empty, 0.06, text("late"), FINISH])
    call = Call()
    with pytest.raises(ModelTimeout, match="first token"):
        await drain(dep(inner, timeout=5, first_token_timeout=0.15), call)
    assert call.path == ["streamer:timeout"]


async def test_deployment_gap_timeout_applies_after_the_first_token() -> None:
    inner = StreamScript([0.1, text("a"), 0.3, text("b"), FINISH])
    call, got = Call(), list[StreamChunk]()
    with pytest.raises(ModelTimeout, match=r"no chunk within 0\.15s"):
        await drain(dep(inner, timeout=0.15, first_token_timeout=1.0), call, got)
    assert [c.text for c in got] == ["a"]


async def test_deployment_stream_without_a_finish_reason_is_malformed() -> None:
    call = Call()
    with pytest.raises(MalformedResponse, match="without a finish reason"):
        await drain(dep(StreamScript([text("cut"), text(" off")])), call)
    assert call.path == ["streamer:malformed_response"]


async def test_deployment_records_a_consumer_that_stops_early() -> None:
    inner = StreamScript([text("a"), text("b"), FINISH])
    call = Call()
    stream = dep(inner).request_stream(MESSAGES, SETTINGS, call)
    await anext(stream)
    await stream.aclose()  # type: ignore[attr-defined]
    assert call.path == ["streamer:cancelled"]
    assert inner.closed == 1


# -- the registry's stacks --------------------------------------------------------------------


def test_registry_wraps_deployments_per_config() -> None:
    reg = ModelRegistry.from_project(
        parse_project(
            {
                "providers": {"t": {"type": "test"}},
                "models": {
                    "full": {"provider": "t", "model": "x"},
                    "bare": {
                        "provider": "t",
                        "model": "x",
                        "retry": {"attempts": 1},
                        "breaker": None,
                    },
                },
                "routes": {"default": {"chain": ["full", "bare"]}},
            }
        )
    )
    full = reg.deployments["full"]
    assert isinstance(full, Retry) and isinstance(full.inner, CircuitBreaker)
    assert isinstance(full.inner.inner, Deployment)
    assert isinstance(reg.deployments["bare"], Deployment)
    assert reg.names() == ["default", "full", "bare"]


def test_registry_rejects_a_route_cycle() -> None:
    project = parse_project(
        {
            "providers": {"t": {"type": "test"}},
            "models": {"m": {"provider": "t", "model": "x"}},
            "routes": {
                "default": {"weights": [{"model": "other"}, {"model": "m"}]},
                "other": {"weights": [{"model": "default"}]},
            },
        }
    )
    with pytest.raises(ConfigError, match="route cycle"):
        ModelRegistry.from_project(project)
