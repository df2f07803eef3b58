"""Eval results: pass rates over repeats against thresholds, baseline comparison and JSON
round trips (what baselines saved as files rely on)."""

from __future__ import annotations

import json

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from elevenfactor.evals import CaseResult, Score, SuiteResult, compare

OK = Score("contains", True, 1.0, "found")
BAD = Score("contains", False, 0.0, "missing 'x'")


def run(outcomes: dict[str, list[bool]], thresholds: dict[str, float]) -> SuiteResult:
    results = [
        CaseResult(case, i, (OK if ok else BAD,), output="out", cost_usd=0.01, latency_ms=5.0)
        for case, oks in outcomes.items()
        for i, ok in enumerate(oks)
    ]
    return SuiteResult("s", "abc123def456", results, thresholds, {"model": "m"})


def test_pass_rates_with_repeats_and_thresholds() -> None:
    result = run(
        {"a": [True, True, False], "b": [True, False, False], "c": [True]},
        {"a": 0.66, "b": 0.5, "c": 1.0, "never": 1.0},
    )
    stats = {s.case_id: s for s in result.cases()}
    assert [s.case_id for s in result.cases()] == ["a", "b", "c", "never"]
    assert stats["a"].pass_rate == pytest.approx(2 / 3) and stats["a"].passed
    assert not stats["b"].passed and stats["c"].passed
    assert stats["never"].runs == 0 and not stats["never"].passed
    assert not result.passed and result.pass_rate == 0.5
    assert result.cost_usd == pytest.approx(0.07)
    assert result.stats("zz") is None


def test_a_case_fails_on_an_error_or_any_failed_score() -> None:
    errored = CaseResult("a", 0, (OK,), error="timeout")
    mixed = CaseResult("b", 0, (OK, BAD))
    assert not errored.passed and not mixed.passed and CaseResult("c", 0, (OK,)).passed
    assert not SuiteResult("s", "v").passed  # no cases at all


def test_score_value_must_be_in_range() -> None:
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        Score("x", True, 1.5)
    with pytest.raises(ValueError):
        Score("x", True, float("nan"))


def test_compare_reports_regressions_fixes_and_changed_cases() -> None:
    baseline = run(
        {"a": [True, True], "b": [True, True, True], "c": [False], "gone": [True]},
        {"a": 1.0, "b": 0.5, "c": 1.0, "gone": 1.0},
    )
    current = run(
        {"a": [True, False], "b": [True, True, False], "c": [True], "new": [False]},
        {"a": 1.0, "b": 0.5, "c": 1.0, "new": 1.0},
    )
    diff = compare(baseline, current)
    assert not diff.ok
    kinds = {r.case_id: (r.kind, r.before, r.after) for r in diff.regressions}
    assert kinds["a"] == ("now_failing", 1.0, 0.5)
    assert kinds["b"][0] == "pass_rate_drop" and kinds["b"][2] == pytest.approx(2 / 3)
    assert diff.fixed == ("c",) and diff.added == ("new",) and diff.removed == ("gone",)
    tolerant = compare(baseline, current, tolerance=0.4)
    assert [r.case_id for r in tolerant.regressions] == ["a"]
    assert compare(current, current).ok
    assert json.loads(json.dumps(diff.to_dict()))["ok"] is False


def test_suite_result_json_round_trip() -> None:
    result = run({"a": [True, False], "b": [True]}, {"a": 0.5, "b": 1.0})
    result.results.append(
        CaseResult("c", 0, (Score("judge", False, 0.0, "bad", error="malformed"),), error=None)
    )
    data = json.loads(json.dumps(result.to_dict()))
    assert data["passed"] is False and data["cases"][0]["pass_rate"] == 0.5
    back = SuiteResult.from_dict(data)
    assert back == result
    assert back.to_dict() == result.to_dict()


outcome = st.lists(st.booleans(), min_size=1, max_size=5)


@given(
    st.dictionaries(st.sampled_from("abcd"), outcome, min_size=1),
    st.floats(min_value=0, max_value=1),
)
@example({"a": [True, True, False]}, 2 / 3)
@example({"a": [False]}, 0.0)
def test_stats_agree_with_counts_and_round_trip(oks: dict[str, list[bool]], t: float) -> None:
    result = run(oks, {c: t for c in oks})
    for s in result.cases():
        assert s.runs == len(oks[s.case_id]) and s.passes == sum(oks[s.case_id])
        assert s.passed == (s.pass_rate + 1e-9 >= t)
    assert SuiteResult.from_dict(json.loads(json.dumps(result.to_dict()))) == result
    assert compare(result, result).ok


def test_a_threshold_just_above_the_rate_fails() -> None:
    # 2 of 3 is 0.666...: a 0.67 threshold needs all three repeats
    assert not run({"a": [True, True, False]}, {"a": 0.67}).passed
    assert run({"a": [True, True, True]}, {"a": 0.67}).passed
