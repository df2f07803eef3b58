"""The metric hooks: what one call, request, breaker change, verdict or queue change counts,
bounded labels, the off switch, and the reference table covering every exported family."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from elevenfactor.config import BreakerConfig
from elevenfactor.errors import RateLimited
from elevenfactor.governance._guard_pipeline import GuardPipeline
from elevenfactor.models import CircuitBreaker, Message, ModelSettings, Response
from elevenfactor.models._admission import Admission
from elevenfactor.models._protocol import Call
from elevenfactor.observe import CallRecord
from elevenfactor.observe import _metrics as metrics
from elevenfactor.observe._metrics_defs import PROCESS, STORE, metrics_table
from elevenfactor.observe._metrics_export import render
from tests.support.guards import make_policy


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture(autouse=True)
def _on() -> Iterator[None]:
    metrics.configure(enabled=True, names={"chat", "fast", "primary", "backup", "openai"})
    yield
    metrics.configure(enabled=True)


def _rec(**kw: Any) -> CallRecord:
    base: dict[str, Any] = {
        "trace_id": "t",
        "route": "chat",
        "stream": False,
        "status": "ok",
        "tokens_in": 10,
        "tokens_out": 5,
        "latency_ms": 120.0,
        "provider": "openai",
        "deployment": "primary",
        "cost": 0.002,
    }
    return CallRecord(**{**base, **kw})


def test_a_call_counts_requests_latency_tokens_and_cost() -> None:
    calls = dict(route="chat", provider="openai", deployment="primary", kind="chat")
    bucket = dict(route="chat", deployment="primary", stream="false")

    def snapshot() -> tuple[float, ...]:
        return (
            value("elevenfactor_model_calls_total", **calls, origin="gateway", status="ok"),
            value("elevenfactor_model_calls_total", **calls, origin="run", status="ok"),
            value(
                "elevenfactor_model_tokens_total", route="chat", deployment="primary", type="input"
            ),
            value(
                "elevenfactor_model_tokens_total", route="chat", deployment="primary", type="output"
            ),
            value("elevenfactor_model_cost_usd_total", route="chat", deployment="primary"),
            value("elevenfactor_model_call_duration_seconds_bucket", **bucket, le="0.25"),
            value("elevenfactor_model_call_duration_seconds_bucket", **bucket, le="0.1"),
        )

    before = snapshot()
    metrics.record_call(_rec())
    metrics.record_call(_rec(run_id="r1", tokens_in=7, tokens_out=0, cost=None))
    after = snapshot()
    deltas = [round(a - b, 9) for a, b in zip(after, before, strict=True)]
    # 120 ms falls in the 0.25 s bucket, not the 0.1 s one
    assert deltas == [1, 1, 17, 5, 0.002, 2, 0]


def test_errors_cache_hits_and_failovers() -> None:
    err = dict(route="chat", deployment="backup", error="rate_limit")
    hits = dict(route="chat", type="semantic")
    exact = dict(route="chat", type="exact")
    fo = dict(route="chat", from_deployment="primary", to_deployment="backup")
    att = dict(route="chat", deployment="primary", outcome="server_error")

    def snapshot() -> list[float]:
        return [
            value("elevenfactor_model_call_errors_total", **err),
            value("elevenfactor_cache_hits_total", **hits),
            value("elevenfactor_cache_hits_total", **exact),
            value("elevenfactor_model_cache_saved_usd_total", route="chat"),
            value("elevenfactor_failovers_total", **fo),
            value("elevenfactor_model_attempt_failures_total", **att),
        ]

    before = snapshot()
    metrics.record_call(
        _rec(status="error", error_class="rate_limit", deployment="backup", tokens_in=0)
    )
    metrics.record_call(
        _rec(cache_hit=True, cost=0.0, saved=0.01, failover_path=["primary:semantic_hit@0.9731"])
    )
    metrics.record_call(_rec(cache_hit=True, cost=0.0, failover_path=["primary:cache_hit"]))
    path = ["primary:server_error", "primary:server_error", "backup:ok"]
    metrics.record_call(_rec(deployment="backup", failover_path=path))
    after = snapshot()
    assert [round(a - b, 9) for a, b in zip(after, before, strict=True)] == [1, 1, 1, 0.01, 1, 2]


def test_unconfigured_names_are_other_never_what_a_client_sent() -> None:
    labels = dict(provider="openai", deployment="primary", kind="chat", origin="gateway")
    before = value("elevenfactor_model_calls_total", route="other", status="ok", **labels)
    metrics.record_call(_rec(route="user-typed-anything-123"))
    after = value("elevenfactor_model_calls_total", route="other", status="ok", **labels)
    assert after - before == 1
    assert value("elevenfactor_model_calls_total", route="user-typed-anything-123",
                 status="ok", **labels) == 0  # fmt: skip


def test_free_labels_are_bounded() -> None:
    bounded = metrics._Bounded()
    values = [bounded(f"code{i}") for i in range(metrics._MAX_FREE + 10)]
    assert values[: metrics._MAX_FREE] == [f"code{i}" for i in range(metrics._MAX_FREE)]
    assert set(values[metrics._MAX_FREE :]) == {"other"}
    assert bounded("code0") == "code0" and bounded(None) == "none"


def test_http_requests() -> None:
    labels = dict(route="/v1/runs/{run_id}", method="GET")
    before = value("elevenfactor_http_requests_total", status="404", **labels)
    count = value("elevenfactor_http_request_duration_seconds_count", **labels)
    metrics.http_request("/v1/runs/{run_id}", "GET", 404, 0.003)
    metrics.http_request("/v1/runs/{run_id}", "GET", 404, 0.004)
    assert value("elevenfactor_http_requests_total", status="404", **labels) - before == 2
    assert value("elevenfactor_http_request_duration_seconds_count", **labels) - count == 2
    metrics.http_request("/x", "BREW", 200, 0.001)  # an unknown method is "other"
    assert value("elevenfactor_http_requests_total", route="/x", method="other", status="200")


class _Flaky:
    """A model that fails with a rate limit while ``failing``."""

    name = "primary"
    context_window = None

    def __init__(self) -> None:
        self.failing = True

    async def request(self, messages: Any, settings: ModelSettings, call: Call) -> Response:
        if self.failing:
            raise RateLimited("slow down", deployment="primary")
        return Response.model_validate({"message": {"role": "assistant", "content": "hi"}})

    def request_stream(self, messages: Any, settings: ModelSettings, call: Call) -> Any:
        raise NotImplementedError


async def test_breaker_state_follows_the_circuit() -> None:
    now = [1000.0]
    inner = _Flaky()
    breaker = CircuitBreaker(inner, BreakerConfig(failures=2, cooldown=10), clock=lambda: now[0])
    msgs: list[Message] = []
    opened = value("elevenfactor_circuit_transitions_total", deployment="primary", state="open")
    for _ in range(2):
        with pytest.raises(RateLimited):
            await breaker.request(msgs, ModelSettings(), Call())
    assert value("elevenfactor_circuit_state", deployment="primary") == 2
    assert (
        value("elevenfactor_circuit_transitions_total", deployment="primary", state="open") - opened
        == 1
    )
    now[0] += 11
    inner.failing = False
    await breaker.request(msgs, ModelSettings(), Call())  # the half-open trial succeeds
    assert value("elevenfactor_circuit_state", deployment="primary") == 0
    assert value("elevenfactor_circuit_transitions_total", deployment="primary", state="half_open")


async def test_the_guard_pipeline_counts_each_verdict_it_decides() -> None:
    policy = make_policy("nosecrets", {"stages": {"input": [{"rule": "secrets", "action": "block"}],
                                                  "tool_call": [{"rule": "secrets"}]}})  # fmt: skip
    pipeline = GuardPipeline.build([policy])
    blocked = dict(stage="input", action="block", policy="nosecrets")
    allowed = dict(stage="input", action="allow", policy="none")
    tool = dict(stage="tool_call", action="allow", policy="none")
    before = [value("elevenfactor_guard_verdicts_total", **x) for x in (blocked, allowed, tool)]
    await pipeline.check("input", "key sk-proj-Zx9Qw3Er5Ty7Ui1Op3As5Df7Gh9JkLm2Nb4Vc6")
    await pipeline.check("input", "nothing to see")
    await pipeline.check("output", "no output rules: not a verdict")
    await pipeline.check_tool_call("search", {"q": "weather"})
    after = [value("elevenfactor_guard_verdicts_total", **x) for x in (blocked, allowed, tool)]
    assert [a - b for a, b in zip(after, before, strict=True)] == [1, 1, 1]


def test_guard_verdicts_drop_the_policy_version() -> None:
    labels = dict(stage="input", action="block", policy="pii")
    before = value("elevenfactor_guard_verdicts_total", **labels)
    metrics.guard_verdict("input", "block", "pii@3f2a9c")
    metrics.guard_verdict("input", "block", "pii@77aa00")
    metrics.guard_verdict("output", "allow", "")
    assert value("elevenfactor_guard_verdicts_total", **labels) - before == 2
    assert value("elevenfactor_guard_verdicts_total", stage="output", action="allow", policy="none")


async def test_local_model_queue_depth() -> None:
    adm = Admission(1, 0, max_queue=4)
    slot = await adm.acquire(short=False, within=5, who="fast")
    waiting = asyncio.ensure_future(adm.acquire(short=False, within=5, who="fast"))
    await asyncio.sleep(0)
    assert value("elevenfactor_local_model_queue_depth", deployment="fast") == 1
    adm.release(slot)
    second = await waiting
    assert value("elevenfactor_local_model_queue_depth", deployment="fast") == 0
    adm.release(second)


def test_the_off_switch_makes_every_hook_a_no_op() -> None:
    labels = dict(route="/off", method="GET", status="200")
    metrics.configure(enabled=False)
    try:
        metrics.http_request("/off", "GET", 200, 0.001)
        metrics.record_call(_rec(route="chat"))
        metrics.spans_dropped(3)
    finally:
        metrics.configure(enabled=True)
    assert value("elevenfactor_http_requests_total", **labels) == 0
    before = value("elevenfactor_trace_spans_dropped_total")
    metrics.spans_dropped(3)
    metrics.spans_dropped(0)
    assert value("elevenfactor_trace_spans_dropped_total") - before == 3


def test_the_table_covers_every_exported_family_and_nothing_else() -> None:
    metrics.record_call(_rec())
    body, ctype = render()
    assert ctype == "text/plain; version=0.0.4; charset=utf-8"
    ours = {f.name for f in text_string_to_metric_families(body.decode())}
    ours = {n for n in ours if n.startswith("elevenfactor_")}
    specs = {s.name for s in PROCESS}
    assert ours == specs  # every process metric exists (at zero) from the first scrape
    table = metrics_table()
    for s in (*PROCESS, *STORE):
        assert f"| `{s.exported}` |" in table
        assert s.name.startswith("elevenfactor_")
        if s.kind == "histogram":
            assert s.name.endswith("_seconds") and list(s.buckets) == sorted(s.buckets)


def test_the_readme_table_is_the_generated_one() -> None:
    """The README's metric reference is ``metrics_table()`` verbatim, between its markers."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    start, end = "<!-- metrics:start -->\n", "<!-- metrics:end -->"
    assert start in readme and end in readme, "paste the metrics section into README.md"
    assert readme.split(start, 1)[1].split(end, 1)[0] == metrics_table()


def test_openmetrics_when_the_scraper_asks() -> None:
    body, ctype = render(accept="application/openmetrics-text; version=1.0.0; charset=utf-8")
    assert ctype.startswith("application/openmetrics-text")
    assert body.rstrip().endswith(b"# EOF")
