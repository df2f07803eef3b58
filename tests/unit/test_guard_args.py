"""Tool-call argument guards (factor 10): allow-lists of tools, argument predicates, sandbox
paths, URL allow-lists (SSRF) and money thresholds. Adversarial cases come from path traversal
and SSRF cheat sheets; every check must fail closed and never raise on what a model sent."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from elevenfactor.governance import _guard_args, _guard_money, _guard_paths, _guard_urls
from elevenfactor.governance._guard_args import (
    PATTERN_MAX_INPUT,
    ArgRule,
    check_predicates,
    tool_allowed,
)

PROPERTY = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)


def rules_of(findings: list[Any]) -> list[str]:
    return [f.rule for f in findings]


# --- tool allow-lists -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tool", "allow", "deny", "expected"),
    [
        ("fs.read", ["fs.*"], [], []),
        ("fs.read", ["fs.read", "web.get"], [], []),
        ("mcp:github/create_issue", ["mcp:github/*"], [], []),
        ("mcp:gitlab/create_issue", ["mcp:github/*"], [], ["tool.not_allowed"]),
        ("shell.exec", ["fs.*"], [], ["tool.not_allowed"]),
        ("anything", [], [], ["tool.not_allowed"]),  # an empty allow-list allows nothing
        ("anything", ["*"], [], []),
        ("fs.delete", ["fs.*"], ["fs.delete"], ["tool.denied"]),  # deny wins
        ("fs.delete", ["fs.delete"], ["fs.*"], ["tool.denied"]),
        ("FS.Delete", ["*"], ["fs.delete"], ["tool.denied"]),  # deny ignores case
        ("fs.delete ", ["*"], ["fs.delete"], ["tool.denied"]),  # and surrounding spaces
        ("\uff46\uff53.delete", ["*"], ["fs.delete"], ["tool.denied"]),  # and fullwidth forms
        ("FS.read", ["fs.*"], [], ["tool.not_allowed"]),  # allow is exact
        ("fs.read\n", ["fs.*"], [], ["tool.not_allowed"]),
        ("fs.read\x00", ["*"], [], ["tool.not_allowed"]),
    ],
)
def test_tool_allowed(tool: str, allow: list[str], deny: list[str], expected: list[str]) -> None:
    found = tool_allowed(tool, allow, deny)
    assert rules_of(found) == expected
    assert all(f.kind == f.rule.replace(".", "_") and f.start == -1 for f in found)


@PROPERTY
@given(st.text(min_size=1, max_size=30))
@example("[0]")  # glob metacharacters in a real name: an exact name always matches itself
@example("fs[*]?")
def test_an_exact_deny_always_wins(tool: str) -> None:
    assert rules_of(tool_allowed(tool, ["*"], [tool])) == ["tool.denied"]


def test_an_exact_allow_matches_a_name_with_glob_metacharacters() -> None:
    assert tool_allowed("db[read]", ["db[read]"]) == []


# --- argument predicates --------------------------------------------------------------------


def test_predicates_on_nested_paths_lists_and_wildcards() -> None:
    rules = {
        "payment.amount": ArgRule(required=True, min=Decimal(0), max=Decimal(1000)),
        "to": ArgRule(pattern=r"[A-Z]{2}\d{2}[A-Z0-9]{4,30}"),
        "items.*.qty": ArgRule(max=Decimal(10)),
        "items.0.sku": ArgRule(required=True, max_length=8),
        "mode": ArgRule(enum=("fast", "slow")),
    }
    args = {
        "payment": {"amount": 1500},
        "to": "DE89370400440532013000",
        "items": [{"qty": 3, "sku": "ABC"}, {"qty": 30}],
        "mode": "FAST",
    }
    found = check_predicates(args, rules)
    assert [(f.rule, f.detail) for f in found] == [
        ("arg.max", "payment.amount: above the maximum 1000"),
        ("arg.max", "items.1.qty: above the maximum 10"),
        ("arg.enum", "mode: not one of the allowed values"),
    ]


def test_missing_and_null_required_args() -> None:
    rules = {"a.b": ArgRule(required=True), "c": ArgRule(required=True), "d": ArgRule(max=5)}
    found = check_predicates({"a": {"x": 1}, "c": None}, rules)
    assert [(f.rule, f.detail) for f in found] == [
        ("arg.missing", "a.b: required argument is missing"),
        ("arg.missing", "c: required argument is missing"),
    ]
    assert check_predicates({"a": "not a dict"}, {"a.b": ArgRule(required=True)})[0].rule == (
        "arg.missing"
    )


def test_a_literal_dotted_key_is_found_first() -> None:
    found = check_predicates({"a.b": 50, "a": {"b": 1}}, {"a.b": ArgRule(max=Decimal(10))})
    assert rules_of(found) == ["arg.max"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (5, []),
        (Decimal("10"), []),
        (10.0, []),
        ("7", []),  # models send numbers as strings
        (" 7 ", []),
        (0, []),
        (-1, ["arg.min"]),
        (10.000001, ["arg.max"]),
        ("11", ["arg.max"]),
        ("1e3", ["arg.max"]),
        (True, ["arg.type"]),  # a boolean is not a number
        (float("nan"), ["arg.type"]),  # NaN compares false with everything: never let through
        (float("inf"), ["arg.type"]),
        ("Infinity", ["arg.type"]),
        ("NaN", ["arg.type"]),
        ("1_000", ["arg.type"]),
        ("ten", ["arg.type"]),
        ([5], ["arg.type"]),
        ({"v": 5}, ["arg.type"]),
        ("1e999999999999999999999", ["arg.type"]),
    ],
)
def test_range_predicates(value: Any, expected: list[str]) -> None:
    rule = ArgRule(min=Decimal(0), max=Decimal(10))
    assert rules_of(check_predicates({"n": value}, {"n": rule})) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("ACME-123", []),
        ("acme-123", ["arg.pattern"]),
        ("ACME-123\n", ["arg.pattern"]),  # full match: no trailing newline sneaks through $
        ("xACME-123", ["arg.pattern"]),
        ("ACME-123; rm -rf /", ["arg.pattern"]),
        (123, ["arg.pattern"]),  # numbers are matched by their text
        (True, ["arg.type"]),
        (["ACME-123"], ["arg.type"]),
    ],
)
def test_pattern_predicates(value: Any, expected: list[str]) -> None:
    rule = ArgRule(pattern=r"ACME-\d+")
    assert rules_of(check_predicates({"id": value}, {"id": rule})) == expected


def test_pattern_input_is_capped_against_redos() -> None:
    evil = ArgRule(pattern=r"(a+)+$")
    value = "a" * (PATTERN_MAX_INPUT + 1) + "!"
    found = check_predicates({"s": value}, {"s": evil})
    assert rules_of(found) == ["arg.pattern"]
    assert "not matched" in found[0].detail
    assert rules_of(check_predicates({"s": "a" * 20}, {"s": evil})) == []


def test_enum_keeps_json_types_apart() -> None:
    rule = ArgRule(enum=(1, "two", None))
    assert check_predicates({"v": 1}, {"v": rule}) == []
    assert check_predicates({"v": "two"}, {"v": rule}) == []
    for wrong in (True, 1.0, "1", "TWO", [1]):
        assert rules_of(check_predicates({"v": wrong}, {"v": rule})) == ["arg.enum"]


def test_max_length_on_strings_lists_and_objects() -> None:
    rule = ArgRule(max_length=3)
    assert check_predicates({"v": "abc", "w": [1, 2, 3]}, {"v": rule, "w": rule}) == []
    assert rules_of(check_predicates({"v": "abcd"}, {"v": rule})) == ["arg.max_length"]
    assert rules_of(check_predicates({"v": {"a": 1, "b": 2, "c": 3, "d": 4}}, {"v": rule})) == [
        "arg.max_length"
    ]
    assert rules_of(check_predicates({"v": 12345}, {"v": rule})) == ["arg.type"]


def test_arg_rule_is_strict_config() -> None:
    assert ArgRule.model_validate({"max": 1000.5}).max == Decimal("1000.5")
    with pytest.raises(ValidationError, match="min must not be greater than max"):
        ArgRule(min=Decimal(5), max=Decimal(1))
    with pytest.raises(ValidationError, match="not a valid regular expression"):
        ArgRule.model_validate({"pattern": "("})
    with pytest.raises(ValidationError, match="Extra inputs"):
        ArgRule.model_validate({"maximum": 5})
    with pytest.raises(ValidationError, match="finite"):
        ArgRule.model_validate({"max": "Infinity"})
    rule = ArgRule(max=Decimal(1))
    with pytest.raises(ValidationError, match="frozen"):
        rule.max = Decimal(2)


@PROPERTY
@given(st.dictionaries(st.text(max_size=8), JSON, max_size=5))
def test_predicates_never_raise(args: dict[str, Any]) -> None:
    rule = ArgRule(min=Decimal(-5), max=Decimal(5), pattern=r"\w*", enum=(1, "a"), max_length=3)
    paths = ["a", "a.b", "*", "*.*", "0", "a.0.b", *args][:8]
    for finding in check_predicates(args, dict.fromkeys(paths, rule)):
        assert finding.rule.startswith("arg.")


def test_tool_call_detectors_share_one_import() -> None:
    assert _guard_args.find_path_escapes is _guard_paths.find_path_escapes
    assert _guard_args.find_url_violations is _guard_urls.find_url_violations
    assert _guard_args.find_money_over is _guard_money.find_money_over
    assert set(_guard_args.__all__) >= {"ArgRule", "check_predicates", "tool_allowed"}
