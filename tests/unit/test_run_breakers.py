"""Per-run circuit breakers: each breaker, the tighter of agent limits and policies, and counts
that replay deterministically when a crashed run resumes."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections import Counter
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from elevenfactor.config import GuardsConfig, ProjectConfig
from elevenfactor.errors import AgentLimitExceeded, BreakerTripped
from elevenfactor.governance._policy_book import PolicyBook
from elevenfactor.governance._policy_model import AgentBreaker, Policy, PolicyFile
from elevenfactor.models import (
    AssistantMessage,
    FunctionModel,
    Message,
    ModelRegistry,
    ModelSettings,
    Response,
    ToolCall,
    ToolMessage,
)
from elevenfactor.runtime import (
    Agent,
    AgentDeps,
    AgentSpec,
    Programs,
    Worker,
    claim_run,
    get_run,
    submit_run,
)
from elevenfactor.runtime._agent_spec import AgentLimits
from elevenfactor.runtime._breakers import (
    _POLICY_FIELDS,
    AgentBreakers,
    RunBreakers,
    RunLimits,
    args_digest,
    combine_agent_breakers,
    normalise_error,
)
from elevenfactor.store import Store
from elevenfactor.tools import FunctionToolset

PROPERTY = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
NO_AGENT_LIMITS = AgentLimits(max_steps=1000, max_tool_calls=1000, max_wall_time=None)


def policy(name: str, run: dict[str, Any] | None = None, agent: Any = None) -> Policy:
    """A policy whose breakers are ``run`` (unset repeat breakers off) and ``agent``."""
    run = {"max_same_tool_call": None, "max_same_error": None, **(run or {})}
    spec = PolicyFile.model_validate({"breakers": {"run": run, "agent": agent}})
    digest = hashlib.sha256(f"{name}{json.dumps(run, default=str)}{agent}".encode()).hexdigest()
    return Policy(
        id=name, version=digest[:12], full_hash=digest, file=f"{name}.yaml", source="", spec=spec
    )


def breakers(*policies: Policy, agent: AgentLimits = NO_AGENT_LIMITS) -> RunBreakers:
    return RunBreakers(RunLimits.combine(agent, policies), "banker")


# -- each breaker ------------------------------------------------------------------------------


def test_policy_field_names_map_to_breakers() -> None:
    assert _POLICY_FIELDS == {
        "max_steps": "steps",
        "max_tool_calls": "tool_calls",
        "max_cost_usd": "cost",
        "max_wall_seconds": "wall_time",
        "max_same_tool_call": "same_tool_call",
        "max_same_error": "same_error",
    }


def test_steps_allow_the_limit_then_trip_with_the_policy_in_the_details() -> None:
    strict = policy("strict", {"max_steps": 2})
    b = breakers(strict)
    b.step()
    b.step()
    with pytest.raises(BreakerTripped) as info:
        b.step()
    err = info.value
    assert err.code == "breaker_tripped"
    assert err.details["breaker"] == "steps" and err.details["limit"] == 2
    assert err.details["policy"] == strict.ref and strict.ref in err.message


def test_the_agents_own_limit_keeps_its_error_code() -> None:
    b = breakers(policy("loose", {"max_steps": 50}), agent=AgentLimits(max_steps=1))
    b.step()
    with pytest.raises(AgentLimitExceeded) as info:
        b.step()
    assert not isinstance(info.value, BreakerTripped)
    assert info.value.code == "agent_limit"
    assert info.value.details == {"breaker": "steps", "limit": 1, "policy": None, "value": 2}


def test_tool_calls_over_the_limit_trip() -> None:
    b = breakers(policy("p", {"max_tool_calls": 2}))
    b.tool_call("lookup", {"q": 1})
    b.tool_call("lookup", {"q": 2})
    with pytest.raises(BreakerTripped) as info:
        b.tool_call("lookup", {"q": 3})
    assert info.value.details["breaker"] == "tool_calls"


def test_the_same_call_trips_at_the_nth_whatever_the_key_order_or_spacing() -> None:
    b = breakers(policy("p", {"max_same_tool_call": 3}))
    b.tool_call("refund", '{"order": 7, "amount": 10}')
    b.tool_call("refund", '{"order": 8, "amount": 10}')  # other arguments: another call
    b.tool_call("other", '{"order": 7, "amount": 10}')  # another tool
    b.tool_call("refund", {"amount": 10, "order": 7})
    with pytest.raises(BreakerTripped) as info:
        b.tool_call("refund", '{ "amount" : 10 , "order" : 7 }')
    assert info.value.details == {
        "breaker": "same_tool_call",
        "limit": 3,
        "policy": "p@" + policy("p", {"max_same_tool_call": 3}).version,
        "value": 3,
    }


def test_the_same_error_counts_in_total_with_digits_and_ids_collapsed() -> None:
    b = breakers(policy("p", {"max_same_error": 3}))
    b.tool_result("fetch", True, "Error: timeout after 30s (request 8f3a2c1d9e)")
    b.tool_result("fetch", False, "a success in between does not reset the count")
    b.tool_result("fetch", True, "Error: HTTP 500")  # another error
    b.tool_result("lookup", True, "Error: timeout after 31s (request 77c0aa12bb)")  # another tool
    b.tool_result("fetch", True, "Error: TIMEOUT after 31s  (request 77c0aa12bb)")
    with pytest.raises(BreakerTripped) as info:
        b.tool_result("fetch", True, "Error: timeout after 2s (request 0d1e2f3a4b)")
    assert info.value.details["breaker"] == "same_error" and info.value.details["value"] == 3


def test_results_are_errors_when_the_model_sees_an_error() -> None:
    b = breakers(policy("p", {"max_same_error": 2}))
    calls = [
        ToolCall(id="a", name="fetch", arguments="{}"),
        ToolCall(id="b", name="x", arguments=""),
    ]
    b.tool_results_of(calls, ["Error: down", "Error: down, says the text"])
    with pytest.raises(BreakerTripped):
        b.tool_results_of(calls[:1], ["Error: down"])


def test_cost_over_the_limit_trips_and_unpriced_calls_count_nothing() -> None:
    b = breakers(policy("p", {"max_cost_usd": "0.10"}))
    b.cost(0.06)
    b.cost(None)
    b.cost(0.04)  # exactly the limit: still allowed
    assert b.spent == Decimal("0.10")
    with pytest.raises(BreakerTripped) as info:
        b.cost(0.000001)
    assert info.value.details["breaker"] == "cost" and info.value.details["limit"] == 0.1


def test_wall_time_counts_from_the_first_reading() -> None:
    b = breakers(policy("p", {"max_wall_seconds": 60}))
    b.now(1000.0)
    b.now(1060.0)
    with pytest.raises(BreakerTripped) as info:
        b.now(1060.5)
    assert info.value.details["breaker"] == "wall_time"
    assert not breakers(policy("p")).timed


# -- combining ---------------------------------------------------------------------------------


def test_the_tightest_setting_of_each_breaker_wins() -> None:
    a = policy("a", {"max_steps": 8, "max_cost_usd": "1.0", "max_same_tool_call": 5})
    b = policy("b", {"max_steps": 4, "max_tool_calls": 40, "max_same_tool_call": 5})
    limits = RunLimits.combine(AgentLimits(max_steps=6, max_tool_calls=32), [a, b])
    assert (limits.steps.value, limits.steps.policy) == (4, b.ref)  # type: ignore[union-attr]
    assert (limits.tool_calls.value, limits.tool_calls.policy) == (32, None)  # type: ignore[union-attr]
    assert limits.cost is not None and limits.cost.policy == a.ref
    assert limits.same_tool_call is not None and limits.same_tool_call.policy == a.ref  # tie
    assert limits.same_error is None
    assert limits.wall_time is not None and limits.wall_time.policy is None  # the agent's 300 s
    tie = RunLimits.combine(AgentLimits(max_steps=4), [b])
    assert tie.steps is not None and tie.steps.policy is None  # a tie: the agent's own


def test_the_agent_breaker_takes_the_tightest_of_the_policies() -> None:
    a = policy("a", agent={"window_seconds": 600, "min_runs": 20, "max_error_rate": 0.5})
    b = policy(
        "b",
        agent={"window_seconds": 900, "min_runs": 5, "max_error_rate": 0.8, "max_block_rate": None},
    )
    merged, refs = combine_agent_breakers([a, policy("none"), b])
    assert merged == AgentBreaker(
        window_seconds=900, min_runs=5, max_error_rate=0.5, max_block_rate=0.5
    )
    assert refs == f"{a.ref},{b.ref}"
    assert combine_agent_breakers([policy("none")]) == (None, None)


def test_an_agent_resolves_its_own_policy_or_the_default() -> None:
    strict, default = policy("strict", {"max_steps": 2}), policy("default", {"max_steps": 9})
    book = PolicyBook({"strict": strict, "default": default}, GuardsConfig())
    assert AgentBreakers.resolve(AgentLimits(), "strict", book).run.steps.value == 2  # type: ignore[union-attr]
    assert AgentBreakers.resolve(AgentLimits(), None, book).run.steps.value == 9  # type: ignore[union-attr]
    alone = AgentBreakers.resolve(AgentLimits(), "strict", None)
    assert alone.run.same_tool_call is None and alone.agent is None


# -- comparing calls and errors ----------------------------------------------------------------


@PROPERTY
@given(st.dictionaries(st.text(max_size=8), JSON, max_size=6), st.randoms())
@example({}, None)
@example({"a": [1, {"b": None}], "é": "ü"}, None)
def test_argument_order_and_spacing_never_matter(args: dict[str, Any], rnd: Any) -> None:
    items = list(args.items())
    if rnd is not None:
        rnd.shuffle(items)
    shuffled = json.dumps(dict(items), indent=2, ensure_ascii=True)
    assert args_digest("t", shuffled) == args_digest("t", args)
    assert args_digest("t", shuffled) != args_digest("u", args)


@PROPERTY
@given(st.text(max_size=40), st.integers(min_value=0), st.integers(min_value=0))
@example("timeout after {}s", 5, 123456789)
@example("", 0, 0)
def test_errors_differing_only_in_numbers_are_the_same(text: str, a: int, b: int) -> None:
    template = text.replace("{", "").replace("}", "") + " code {}"
    assert normalise_error(template.format(a)) == normalise_error(template.format(b))


def test_different_errors_stay_different() -> None:
    assert normalise_error("permission denied") != normalise_error("not found")
    assert normalise_error("id 550e8400-e29b-41d4-a716-446655440000 gone") == normalise_error(
        "id 123e4567-e89b-12d3-a456-426614174000 gone"
    )


# -- replay ------------------------------------------------------------------------------------

effects: Counter[str] = Counter()
bank = FunctionToolset(name="bank")


@bank.tool(risk="read")
def balance(account: str) -> int:
    """The balance of an account."""
    effects[account] += 1
    return 120


def _looping(gate: asyncio.Event | None, reached: asyncio.Event | None) -> Any:
    async def script(messages: Sequence[Message], _: ModelSettings) -> Response:
        done = [m for m in messages if isinstance(m, ToolMessage)]
        if len(done) == 2 and gate is not None and reached is not None:
            reached.set()
            await gate.wait()
        call = ToolCall(id=f"c{len(done)}", name="balance", arguments='{"account": "alice"}')
        return Response(
            message=AssistantMessage(content=None, tool_calls=[call]), finish_reason="tool_calls"
        )

    return script


def _programs(script: Any, loop_policy: Policy) -> tuple[Programs, FunctionModel]:
    model = FunctionModel(script, name="scripted")
    registry = ModelRegistry(ProjectConfig(), deployments={"default": model})
    spec = AgentSpec(name="banker", tools=[{"toolset": "bank"}], policy="loops")
    book = PolicyBook({"loops": loop_policy}, GuardsConfig(default=None))
    deps = AgentDeps(registry, {"bank": bank}, {"banker": spec}, policies=book)
    programs = Programs()
    programs.register("banker", Agent(spec, deps))
    return programs, model


async def test_a_resumed_run_replays_its_counts_and_trips_at_the_same_call(store: Store) -> None:
    effects.clear()
    loops = policy("loops", {"max_same_tool_call": 3})
    gate, reached = asyncio.Event(), asyncio.Event()
    programs, model = _programs(_looping(gate, reached), loops)
    rid = await submit_run(store, "banker", "loop")
    lease = await claim_run(store, "w1", ["default"], 30)
    assert lease is not None
    task = asyncio.create_task(Worker(store, programs).execute(lease))
    await reached.wait()
    task.cancel()  # dies during the third model request, two calls made
    with pytest.raises(asyncio.CancelledError):
        await task
    assert effects == Counter({"alice": 2})
    await store.execute("UPDATE runs SET lease_expires_at = 0 WHERE id = ?", (rid,))
    gate.set()
    await Worker(store, programs).run_until_idle()
    run = await get_run(store, rid)
    assert run.status == "failed"
    error = run.error_dict()
    assert error is not None and error["code"] == "breaker_tripped", error
    assert "same_tool_call" in error["message"] and loops.ref in error["message"]
    assert effects == Counter({"alice": 2})  # replayed, not repeated; the third never ran
    assert len(model.calls) == 4  # two turns once, the interrupted third, then again


def test_the_shipped_default_stops_repeats_at_the_third(tmp_path: Path) -> None:
    book = PolicyBook.load(GuardsConfig(), tmp_path)  # no policies directory: the shipped one
    run = AgentBreakers.resolve(AgentLimits(), None, book).run
    assert run.same_tool_call is not None and run.same_tool_call.value == 3
    assert run.same_error is not None and run.same_error.value == 3
    assert run.same_tool_call.policy is not None and run.same_tool_call.policy.startswith(
        "default@"
    )
