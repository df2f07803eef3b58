"""The guard pipeline: every rule of every policy runs, the most severe action wins (earliest
rule on a tie), redaction rewrites placeholder and mask findings in one pass and can be
restored, a failing guard follows on_error, escalations carry their reviewer group, tool calls
are judged on nested arguments, and no verdict or record ever holds a matched value."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from elevenfactor.governance import _guard_builtin
from elevenfactor.governance._guard_pipeline import GuardPipeline, pipeline_for, verdict_record
from elevenfactor.governance._guard_redact import PlaceholderMap, restore
from elevenfactor.governance._guard_types import Stage, Verdict
from tests.support.guards import make_policy

KEY = "sk-proj-Zx9Qw3Er5Ty7Ui1Op3As5Df7Gh9JkLm2Nb4Vc6"
EMAIL = "jane.doe@example.com"
CARD = "4111 1111 1111 1111"
SECRET_VALUES = (KEY, EMAIL, CARD, "jane.doe", "Zx9Qw3")


def stages(**rules: list[dict[str, Any]]) -> dict[str, Any]:
    return {"stages": rules}


def assert_no_values(verdict: Verdict, stage: Stage = "input") -> None:
    """Neither the record nor the verdict's findings/extra hold a matched value."""
    blob = json.dumps(verdict_record(stage, verdict)) + repr(verdict.findings)
    blob += json.dumps({k: v for k, v in verdict.extra.items() if k != "args"}, default=str)
    for value in SECRET_VALUES:
        assert value not in blob


async def test_no_rules_means_allow_and_has_is_false() -> None:
    pipeline = GuardPipeline.build([make_policy("empty", {})])
    assert not any(pipeline.has(s) for s in ("input", "output", "tool_call"))
    verdict = await pipeline.check("input", f"{EMAIL} {KEY}")
    assert (verdict.action, verdict.findings, verdict.content) == ("allow", (), None)


async def test_most_severe_action_wins_across_policies() -> None:
    first = make_policy("first", stages(input=[{"rule": "pii", "action": "monitor"}]))
    second = make_policy("second", stages(input=[{"rule": "secrets", "action": "block"}]))
    pipeline = GuardPipeline.build([first, second])
    assert pipeline.has("input") and not pipeline.has("output")
    verdict = await pipeline.check("input", f"mail {EMAIL}, key {KEY}")
    assert (verdict.action, verdict.rule, verdict.policy) == ("block", "secrets", second.ref)
    assert {f.kind for f in verdict.findings} == {"email", "openai_api_key"}  # all findings
    fired = verdict.extra["fired"]
    assert [(f["policy"], f["rule"], f["action"]) for f in fired] == [
        (first.ref, "pii", "monitor"),
        (second.ref, "secrets", "block"),
    ]
    assert fired[0]["kinds"] == ["email"] and fired[0]["count"] == 1
    assert verdict.content is None
    assert isinstance(verdict.extra["elapsed_us"], int)
    assert_no_values(verdict)


async def test_tie_goes_to_the_earliest_policy_then_the_earliest_rule() -> None:
    a = make_policy("a", stages(input=[{"rule": "secrets", "name": "a-secrets"}]))
    b = make_policy(
        "b",
        stages(input=[{"rule": "phrases", "deny": ["key"]}, {"rule": "secrets", "name": "b2"}]),
    )
    text = f"my key {KEY}"
    assert (await GuardPipeline.build([a, b]).check("input", text)).policy == a.ref
    verdict = await GuardPipeline.build([b, a]).check("input", text)
    assert (verdict.policy, verdict.rule) == (b.ref, "phrases")
    assert len(verdict.extra["fired"]) == 3


async def test_redact_merges_placeholder_and_mask_findings_and_restores() -> None:
    policy = make_policy(
        "redact",
        stages(
            input=[
                {"rule": "pii", "action": "redact"},  # placeholder mode
                {"rule": "secrets", "action": "redact"},  # mask mode
                {"rule": "phrases", "deny": ["project zeus"], "action": "redact"},
            ]
        ),
    )
    pipeline = GuardPipeline.build([policy])
    mapping = PlaceholderMap()
    text = f"I am {EMAIL}, card {CARD}, key {KEY}, re Project Zeus. Again: {EMAIL}"
    verdict = await pipeline.check("input", text, placeholders=mapping)
    assert verdict.action == "redact"
    assert verdict.content == (
        "I am [EMAIL_1], card [CARD_1], key [REDACTED:openai_api_key], re "
        "[REDACTED:denied_phrase]. Again: [EMAIL_1]"
    )
    answer = "Thanks [EMAIL_1], your card [CARD_1] is on file."
    assert restore(answer, mapping) == f"Thanks {EMAIL}, your card {CARD} is on file."
    assert_no_values(verdict)

    # the same map keeps placeholders stable in the next message of the conversation
    again = await pipeline.check("input", f"bob@example.org and {EMAIL}", placeholders=mapping)
    assert again.content == "[EMAIL_2] and [EMAIL_1]"


async def test_overlapping_placeholder_and_mask_spans_are_masked_as_one() -> None:
    policy = make_policy(
        "overlap",
        stages(
            input=[
                {"rule": "pii", "action": "redact"},
                {"rule": "phrases", "patterns": [r"doe@example"], "action": "redact"},
            ]
        ),
    )
    mapping = PlaceholderMap()
    verdict = await GuardPipeline.build([policy]).check("input", f"to {EMAIL}!", None, mapping)
    assert verdict.content == "to [REDACTED:email]!"  # the union, masked; nothing reversible
    assert len(mapping) == 0


async def test_redact_loses_to_block_and_then_rewrites_nothing() -> None:
    policy = make_policy(
        "p", stages(input=[{"rule": "pii", "action": "redact"}, {"rule": "secrets"}])
    )
    verdict = await GuardPipeline.build([policy]).check("input", f"{EMAIL} {KEY}")
    assert (verdict.action, verdict.content) == ("block", None)


@pytest.mark.parametrize(("on_error", "action"), [("block", "block"), ("allow", "monitor")])
async def test_a_failing_guard_follows_on_error(
    monkeypatch: pytest.MonkeyPatch, on_error: str, action: str, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(text: str, kinds: Any = None) -> list[Any]:
        raise RuntimeError(f"cannot scan {text}")  # an exception that quotes the content

    policy = make_policy(
        "p", {"on_error": on_error, **stages(input=[{"rule": "pii", "action": "redact"}])}
    )
    pipeline = GuardPipeline.build([policy])
    monkeypatch.setattr(_guard_builtin, "find_pii", broken)
    verdict = await pipeline.check("input", f"hello {EMAIL}")
    assert (verdict.action, verdict.rule, verdict.policy) == (action, "pii", policy.ref)
    (finding,) = verdict.findings
    assert (finding.rule, finding.kind) == ("guard.error", "guard_error")
    assert finding.detail == "rule 'pii' failed (RuntimeError)"
    assert verdict.content is None  # the content is never passed on unredacted as "redacted"
    assert_no_values(verdict)
    assert EMAIL not in caplog.text and "RuntimeError" in caplog.text


async def test_escalate_carries_the_rule_group_else_the_policy_group() -> None:
    spec = {
        "escalate": {"group": "security", "timeout": 60, "on_timeout": "approve"},
        **stages(input=[{"rule": "secrets", "action": "escalate"}]),
    }
    verdict = await GuardPipeline.build([make_policy("p", spec)]).check("input", KEY)
    assert verdict.action == "escalate"
    assert (verdict.extra["group"], verdict.extra["timeout"]) == ("security", 60.0)
    assert verdict.extra["on_timeout"] == "approve"
    spec["stages"]["input"][0]["group"] = "secops"
    verdict = await GuardPipeline.build([make_policy("p", spec)]).check("input", KEY)
    assert verdict.extra["group"] == "secops"


async def test_tool_call_rules_on_nested_arguments() -> None:
    policy = make_policy(
        "tools",
        {
            "escalate": {"group": "ops"},
            **stages(
                tool_call=[
                    {"rule": "tools", "deny": ["*.delete*"]},
                    {"rule": "sql", "action": "escalate", "group": "dba"},
                    {"rule": "args", "tools": {"billing.*": {"refund.amount": {"max": 100}}}},
                    {"rule": "money", "max": 1000, "action": "monitor"},
                ]
            ),
        },
    )
    pipeline = GuardPipeline.build([policy])
    ok = await pipeline.check_tool_call("db.query", {"q": {"sql": "SELECT 1"}})
    assert ok.action == "allow"
    sql = await pipeline.check_tool_call("db.query", {"q": {"steps": [{"sql": "DROP TABLE t"}]}})
    assert (sql.action, sql.rule, sql.extra["group"]) == ("escalate", "sql", "dba")
    refund = await pipeline.check_tool_call("billing.refund", {"refund": {"amount": 5000}})
    assert (refund.action, refund.rule) == ("block", "args")
    assert [f["rule"] for f in refund.extra["fired"]] == ["args", "money"]
    denied = await pipeline.check_tool_call("fs.delete", {"sql": "DROP TABLE t"})
    assert (denied.action, denied.rule) == ("block", "tools")


async def test_tool_call_redact_rewrites_string_values_in_the_arguments() -> None:
    policy = make_policy(
        "p",
        stages(
            tool_call=[
                {"rule": "pii", "action": "redact"},
                {"rule": "secrets", "action": "redact"},
                {"rule": "length", "max_chars": 10_000, "action": "monitor"},
            ]
        ),
    )
    mapping = PlaceholderMap()
    args: dict[str, Any] = {
        "to": [EMAIL, "nobody"],
        "body": {"text": f"key {KEY}", "n": 3},
        EMAIL: True,
    }
    verdict = await GuardPipeline.build([policy]).check_tool_call("mail.send", args, None, mapping)
    assert verdict.action == "redact"
    assert verdict.extra["args"] == {
        "to": ["[EMAIL_1]", "nobody"],
        "body": {"text": "key [REDACTED:openai_api_key]", "n": 3},
        "[EMAIL_1]": True,
    }
    assert json.loads(verdict.content or "") == verdict.extra["args"]
    assert args["to"][0] == EMAIL  # the caller's arguments are not mutated
    assert mapping.value_of("[EMAIL_1]") == EMAIL
    assert_no_values(verdict, "tool_call")


async def test_tool_call_content_rules_read_the_json_of_the_arguments() -> None:
    policy = make_policy("p", stages(tool_call=[{"rule": "length", "max_chars": 20}]))
    verdict = await GuardPipeline.build([policy]).check_tool_call("t", {"a": "x" * 30})
    assert (verdict.action, verdict.rule) == ("block", "length")


async def test_synchronous_rules_create_no_tasks(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_gather(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("gather used for synchronous rules")

    monkeypatch.setattr(asyncio, "gather", no_gather)
    policy = make_policy(
        "p",
        stages(input=[{"rule": "pii"}, {"rule": "secrets"}, {"rule": "length", "max_chars": 9}]),
    )
    verdict = await GuardPipeline.build([policy]).check("input", f"{EMAIL} {KEY}")
    assert verdict.action == "block"


def test_pipelines_are_cached_per_policy_versions() -> None:
    one = make_policy("p", stages(input=[{"rule": "pii"}]))
    two = make_policy("p", stages(input=[{"rule": "secrets"}]))
    assert pipeline_for([one]) is pipeline_for([one])
    assert pipeline_for([one]) is not pipeline_for([two])
    assert pipeline_for([one, two]) is not pipeline_for([two, one])


def test_verdict_record_is_json_with_positions_only() -> None:
    verdict = Verdict(
        "monitor",
        (),
        rule="pii",
        policy="p@1",
        extra={"fired": [{"policy": "p@1"}], "elapsed_us": 12},
    )
    assert verdict_record("output", verdict) == {
        "stage": "output",
        "action": "monitor",
        "policy": "p@1",
        "rule": "pii",
        "findings": [],
        "fired": [{"policy": "p@1"}],
        "elapsed_us": 12,
    }
