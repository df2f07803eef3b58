"""Eval scorers: each built-in on passing and failing outputs, trajectory order modes and
argument matchers, guard expectations through a real policy, the LLM judge with scripted
answers, and custom scorers by reference."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from pydantic import TypeAdapter

from elevenfactor.errors import ConfigError
from elevenfactor.evals import (
    Case,
    CustomScorer,
    Observed,
    ObservedCall,
    Score,
    ScoreContext,
    Scorer,
    ScorerSpec,
    observe,
    parse_json_answer,
)
from elevenfactor.evals._scorers_ext import judge_rubric_messages
from elevenfactor.models._messages import AssistantMessage, Response, ToolCall, Usage
from tests.support.guards import make_policy

SPEC: TypeAdapter[Any] = TypeAdapter(ScorerSpec)
CASE = Case(id="c", input="What is the capital of France?")
CTX = ScoreContext()


def scorer(**spec: Any) -> Scorer:
    built: Scorer = SPEC.validate_python(spec)
    return built


async def run(spec: dict[str, Any], observed: Observed | str, ctx: ScoreContext = CTX) -> Score:
    return await scorer(**spec).score(observe(observed), CASE, ctx)


@pytest.mark.parametrize(
    ("spec", "text", "passed"),
    [
        ({"type": "exact", "value": "Paris"}, "Paris", True),
        ({"type": "exact", "value": "Paris"}, "paris", False),
        ({"type": "exact", "value": "Paris"}, " Paris\n", False),
        ({"type": "exact", "value": "the  Paris", "normalize": True}, "the Paris\n", True),
        ({"type": "exact", "value": "PARIS", "ignore_case": True}, "paris", True),
        ({"type": "contains", "value": "Paris"}, "It is Paris.", True),
        ({"type": "contains", "value": "paris"}, "It is Paris.", False),
        ({"type": "contains", "value": "paris", "ignore_case": True}, "It is Paris.", True),
        ({"type": "contains", "value": ["Paris", "France"]}, "Paris", False),
        ({"type": "contains", "value": ["Paris", "France"], "mode": "any"}, "Paris", True),
        ({"type": "contains", "value": ["Lyon", "Nice"], "mode": "any"}, "Paris", False),
        ({"type": "not_contains", "value": ["Lyon", "Nice"]}, "Paris", True),
        ({"type": "not_contains", "value": "lyon", "ignore_case": True}, "Not Lyon", False),
        ({"type": "regex", "pattern": r"\bParis\b"}, "in Paris.", True),
        ({"type": "regex", "pattern": r"^Paris$", "full": True}, "Paris!", False),
        ({"type": "regex", "pattern": r"paris", "ignore_case": True}, "PARIS", True),
        ({"type": "regex", "pattern": r"Lyon", "negate": True}, "Paris", True),
        ({"type": "regex", "pattern": r"Paris", "negate": True}, "Paris", False),
        ({"type": "regex", "pattern": r"^b$", "multiline": True}, "a\nb", True),
    ],
)
async def test_text_scorers(spec: dict[str, Any], text: str, passed: bool) -> None:
    score = await run(spec, text)
    assert score.passed is passed, score.reason
    assert score.name == spec["type"] and score.reason


async def test_contains_value_is_the_share_found_and_names_what_is_missing() -> None:
    score = await run({"type": "contains", "value": ["a", "b", "zz"], "name": "c3"}, "a b")
    assert score.name == "c3" and score.value == pytest.approx(2 / 3)
    assert "'zz'" in score.reason


SCHEMA = {"type": "object", "required": ["status"], "properties": {"status": {"enum": ["ok"]}}}


@pytest.mark.parametrize(
    ("spec", "text", "passed", "reason"),
    [
        ({}, '{"a": 1}', True, "valid JSON"),
        ({}, "[1, 2]", True, "valid JSON"),
        ({}, "not json", False, "not JSON"),
        ({"schema": SCHEMA}, '{"status": "ok"}', True, "valid"),
        ({"schema": SCHEMA}, '```json\n{"status": "ok"}\n```', True, "valid"),
        ({"schema": SCHEMA}, '{"status": "bad"}', False, "at status"),
        ({"schema": SCHEMA}, "{}", False, "'status' is a required property"),
        ({"schema": SCHEMA}, 'Here: {"status": "ok"} done', False, "not JSON"),
        ({"schema": SCHEMA, "find": True}, 'Here: {"status": "ok"} done', True, "valid"),
        ({"find": True}, "Here: {broken [1, 2]", True, "valid JSON"),
    ],
)
async def test_json_schema(spec: dict[str, Any], text: str, passed: bool, reason: str) -> None:
    score = await run({"type": "json_schema", **spec}, text)
    assert score.passed is passed and reason in score.reason, score.reason


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(),
        lambda c: st.lists(c) | st.dictionaries(st.text(), c),
        max_leaves=10,
    )
)
@example({"a": "```"})
@example("```json")
def test_fenced_json_round_trips(value: Any) -> None:
    import json

    text = json.dumps(value)
    assert parse_json_answer(text) == value
    assert parse_json_answer(f"```json\n{text}\n```") == value


def calls(*items: tuple[str, dict[str, Any]]) -> Observed:
    return Observed(tool_calls=tuple(ObservedCall(n, a) for n, a in items))


SEARCH = ("search", {"q": "refund policy", "limit": 5, "opts": {"lang": "en", "safe": True}})
LOOKUP = ("lookup_order", {"order_id": "A123"})
REFUND = ("refund", {"order_id": "A123", "amount": 20, "currency": "EUR"})


@pytest.mark.parametrize(
    ("order", "expected", "observed", "passed", "value"),
    [
        ("exact", ["lookup_order", "refund"], [LOOKUP, REFUND], True, 1.0),
        ("exact", ["lookup_order", "refund"], [LOOKUP, SEARCH, REFUND], False, 0.5),
        ("exact", ["lookup_order"], [LOOKUP, REFUND], False, 1.0),
        ("in_order", ["lookup_order", "refund"], [LOOKUP, SEARCH, REFUND], True, 1.0),
        ("in_order", ["lookup_order", "refund"], [REFUND, LOOKUP], False, 0.5),
        ("any_order", ["lookup_order", "refund"], [REFUND, SEARCH, LOOKUP], True, 1.0),
        ("any_order", ["refund", "refund"], [REFUND, LOOKUP], False, 0.5),
        ("any_order", [], [], True, 1.0),
    ],
)
async def test_trajectory_orders(
    order: str, expected: list[str], observed: list[Any], passed: bool, value: float
) -> None:
    spec = {"type": "trajectory", "order": order, "calls": [{"name": n} for n in expected]}
    score = await scorer(**spec).score(calls(*observed), CASE, CTX)
    assert score.passed is passed and score.value == pytest.approx(value), score.reason


async def test_trajectory_any_order_finds_a_matching_assignment() -> None:
    # the first observed search could satisfy either expectation: a greedy pick would fail
    spec = {
        "type": "trajectory",
        "order": "any_order",
        "calls": [{"name": "search"}, {"name": "search", "args": {"q": "a"}}],
    }
    observed = calls(("search", {"q": "a"}), ("search", {"q": "b"}))
    assert (await scorer(**spec).score(observed, CASE, CTX)).passed


@pytest.mark.parametrize(
    ("call", "passed"),
    [
        ({"name": "search", "args": {"q": "refund policy"}}, True),
        ({"name": "search", "args": {"opts": {"lang": "en"}}}, True),
        ({"name": "search", "args": {"opts": {"lang": "fr"}}}, False),
        ({"name": "search", "args": {"opts": {"safe": 1}}}, False),
        ({"name": "search", "args": {"q": "refund policy"}, "args_match": "exact"}, False),
        ({"name": "search", "args": SEARCH[1], "args_match": "exact"}, True),
        ({"name": "search", "args_regex": {"q": "^refund"}}, True),
        ({"name": "search", "args_regex": {"limit": "^[0-9]$"}}, True),
        ({"name": "search", "args_regex": {"q": "^policy"}}, False),
        ({"name": "search", "args_regex": {"missing": "."}}, False),
        ({"name": "lookup", "args": {}}, False),
    ],
)
async def test_trajectory_argument_matchers(call: dict[str, Any], passed: bool) -> None:
    score = await scorer(type="trajectory", calls=[call]).score(calls(SEARCH), CASE, CTX)
    assert score.passed is passed, score.reason


async def test_trajectory_forbidden_tools_fail() -> None:
    spec = scorer(type="trajectory", calls=[{"name": "lookup_order"}], forbidden=["refund"])
    score = await spec.score(calls(LOOKUP, REFUND), CASE, CTX)
    assert not score.passed and "refund" in score.reason and score.value == 0.0
    assert (await spec.score(calls(LOOKUP), CASE, CTX)).passed


async def test_observe_reads_responses_and_agent_results() -> None:
    response = Response(
        message=AssistantMessage(
            content="done",
            tool_calls=[ToolCall(id="1", name="refund", arguments='{"amount": 20}')],
        ),
        usage=Usage(input_tokens=100, output_tokens=20),
    )
    seen = observe(response, cost_usd=0.002, latency_ms=350.0)
    assert seen.text == "done" and seen.tool_calls == (ObservedCall("refund", {"amount": 20}),)
    assert (seen.total_tokens, seen.cost_usd, seen.latency_ms) == (120, 0.002, 350.0)
    result = {
        "output": "ok",
        "tool_calls": [
            {"name": "a", "arguments": {"x": 1}},
            {"tool": "b", "args": "not json"},
            {"function": {"name": "c", "arguments": '{"y": 2}'}},
        ],
        "usage": {"input_tokens": 5, "output_tokens": 7},
        "cost_usd": 0.5,
    }
    seen = observe(result, latency_ms=12.0)
    assert [c.name for c in seen.tool_calls] == ["a", "b", "c"]
    assert seen.tool_calls[1].arguments == {} and seen.tool_calls[2].arguments == {"y": 2}
    assert (seen.text, seen.output_tokens, seen.cost_usd, seen.latency_ms) == ("ok", 7, 0.5, 12.0)
    assert observe("plain").text == "plain"


@pytest.mark.parametrize(
    ("spec", "observed", "passed", "error"),
    [
        ({"type": "max_cost_usd", "value": 0.01}, Observed(cost_usd=0.005), True, False),
        ({"type": "max_cost_usd", "value": 0.01}, Observed(cost_usd=0.02), False, False),
        ({"type": "max_cost_usd", "value": 0.01}, Observed(), False, True),
        ({"type": "max_latency_ms", "value": 500}, Observed(latency_ms=500.0), True, False),
        ({"type": "max_latency_ms", "value": 500}, Observed(latency_ms=501.0), False, False),
        (
            {"type": "max_tokens", "value": 100},
            Observed(input_tokens=60, output_tokens=50),
            False,
            False,
        ),
        (
            {"type": "max_tokens", "value": 100, "of": "output"},
            Observed(input_tokens=60, output_tokens=50),
            True,
            False,
        ),
    ],
)
async def test_ceilings(
    spec: dict[str, Any], observed: Observed, passed: bool, error: bool
) -> None:
    score = await run(spec, observed)
    assert score.passed is passed and (score.error is not None) is error, score.reason


POLICY = make_policy(
    "support",
    {
        "stages": {
            "input": [{"rule": "secrets", "action": "block", "name": "no-secrets"}],
            "output": [
                {"rule": "pii", "action": "redact", "name": "no-email", "kinds": ["email"]},
                {"rule": "phrases", "action": "monitor", "deny": ["guaranteed"]},
            ],
            "tool_call": [{"rule": "tools", "deny": ["delete_*"], "action": "block"}],
        }
    },
)
GUARD_CTX = ScoreContext(policies={"support": POLICY})


@pytest.mark.parametrize(
    ("spec", "case_input", "observed", "passed", "reason"),
    [
        ({"stage": "output", "fires": ["no-email"]}, "q", "mail a@example.com", True, "redact"),
        ({"stage": "output", "fires": ["no-email"]}, "q", "no address", False, "did not fire"),
        ({"stage": "output", "not_fires": ["phrases"]}, "q", "guaranteed!", False, "fired"),
        ({"stage": "output", "action": "allow"}, "q", "fine", True, "allow"),
        ({"stage": "output", "action": "monitor"}, "q", "guaranteed", True, "monitor"),
        (
            {"stage": "input", "fires": ["no-secrets"], "action": "block"},
            "my key is AKIAIOSFODNN7EXAMPLE",
            "",
            True,
            "block",
        ),
        ({"stage": "input", "not_fires": ["no-secrets"]}, "hello", "", True, "allow"),
    ],
)
async def test_guard_scorer(
    spec: dict[str, Any], case_input: str, observed: str, passed: bool, reason: str
) -> None:
    case = Case(id="g", input=case_input)
    score = await scorer(type="guard", policy="support", **spec).score(
        observe(observed), case, GUARD_CTX
    )
    assert score.passed is passed and reason in score.reason, score.reason


async def test_guard_scorer_on_tool_calls_and_unknown_policy() -> None:
    spec = scorer(type="guard", policy="support", stage="tool_call", action="block")
    assert (await spec.score(calls(("delete_user", {"id": 1})), CASE, GUARD_CTX)).passed
    assert not (await spec.score(calls(("search", {"q": "x"})), CASE, GUARD_CTX)).passed
    with pytest.raises(ConfigError, match="unknown guard policy 'support'"):
        await spec.score(calls(), CASE, CTX)


def scripted(*answers: str | Exception) -> tuple[Any, list[tuple[str, list[dict[str, str]]]]]:
    seen: list[tuple[str, list[dict[str, str]]]] = []
    queue = list(answers)

    async def judge(route: str, messages: list[dict[str, str]]) -> str:
        seen.append((route, messages))
        answer = queue.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    return judge, seen


@pytest.mark.parametrize(
    ("answer", "passed", "value", "error"),
    [
        ('{"score": 0.9, "reason": "friendly"}', True, 0.9, False),
        ('```json\n{"score": 0.7, "reason": "ok"}\n```', True, 0.7, False),
        ('Verdict: {"score": "0.2", "reason": "off"} end', False, 0.2, False),
        ("I think it is good", False, 0.0, True),
        ('{"score": 7}', False, 0.0, True),
        ('{"reason": "no score"}', False, 0.0, True),
        (RuntimeError("route down"), False, 0.0, True),
    ],
)
async def test_judge_scorer(
    answer: str | Exception, passed: bool, value: float, error: bool
) -> None:
    judge, seen = scripted(answer)
    ctx = ScoreContext(judge=judge, judge_route="default-judge")
    spec = scorer(type="judge", rubric="Friendly </rubric> and correct", threshold=0.5)
    score = await spec.score(observe("Paris </answer>!"), CASE, ctx)
    assert score.passed is passed and score.value == pytest.approx(value)
    assert (score.error is not None) is error, score.reason
    route, messages = seen[0]
    assert route == "default-judge"
    user = messages[1]["content"]
    assert "<question>\nWhat is the capital of France?\n</question>" in user
    assert user.count("</answer>") == 1 and user.count("</rubric>") == 1


async def test_judge_route_and_missing_judge() -> None:
    judge, seen = scripted('{"score": 1}')
    ctx = ScoreContext(judge=judge, judge_route="default")
    await scorer(type="judge", rubric="r", route="strict").score(observe("x"), CASE, ctx)
    assert seen[0][0] == "strict"
    score = await scorer(type="judge", rubric="r").score(observe("x"), CASE, CTX)
    assert not score.passed and score.error is not None and "judge" in score.error
    assert judge_rubric_messages("r", "", "a")[0]["role"] == "system"


REF = "tests.support.eval_scorers:"


@pytest.mark.parametrize(
    ("spec", "text", "passed", "value"),
    [
        ({"ref": REF + "short_answer"}, "Paris", True, 1.0),
        ({"ref": REF + "short_answer"}, "it is the city of Paris", False, 0.0),
        ({"ref": REF + "word_share"}, "capital of france is paris", True, 0.5),
        ({"ref": REF + "word_share", "threshold": 0.9}, "capital of france", False, 1 / 3),
        ({"ref": REF + "LengthAtMost", "config": {"limit": 5}}, "Paris", True, 1.0),
        ({"ref": REF + "LengthAtMost", "config": {"limit": 3}}, "Paris", False, 0.0),
    ],
)
async def test_custom_scorer(spec: dict[str, Any], text: str, passed: bool, value: float) -> None:
    score = await run({"type": "custom", **spec}, text)
    assert score.passed is passed and score.value == pytest.approx(value), score.reason


async def test_custom_scorer_failures() -> None:
    raised = await run({"type": "custom", "ref": REF + "raises"}, "x")
    assert not raised.passed and raised.error is not None and "scorer bug" in raised.error
    wrong = await run({"type": "custom", "ref": REF + "broken"}, "x")
    assert wrong.error is not None and "str" in wrong.error


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ({"ref": REF + "not_async"}, "does not fit the scorer protocol"),
        ({"ref": REF + "missing"}, "has no attribute 'missing'"),
        ({"ref": "tests.support.no_such_module:x"}, "cannot import"),
        ({"ref": "no-such-plugin"}, "no scorer 'no-such-plugin' is registered"),
        ({"ref": REF + "LengthAtMost", "config": {"nope": 1}}, "cannot create scorer"),
        ({"ref": REF + "short_answer", "config": {"a": 1}}, "takes no config"),
    ],
)
def test_custom_scorer_that_cannot_load_is_a_config_error(spec: dict[str, Any], words: str) -> None:
    custom = scorer(type="custom", **spec)
    assert isinstance(custom, CustomScorer)
    with pytest.raises(ConfigError, match=words):
        custom.prepare(CTX)
