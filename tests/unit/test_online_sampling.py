"""Online evaluation without a store: the sampling decision (deterministic per rule and run,
the configured share), which runs a rule matches, and the project file's ``evals.online``
validation (errors name the key and what is wrong)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from elevenfactor.config import OnlineRule, parse_project
from elevenfactor.errors import ConfigError
from elevenfactor.evals._online import (
    ONLINE_EVAL,
    OnlineSampler,
    sample_point,
    sampled,
    scorer_identity,
    scoring_run_id,
)
from elevenfactor.evals._online_rules import prepare_rules
from elevenfactor.evals._online_specs import SCORER_TYPES, parse_scorer_specs
from elevenfactor.evals._scorers import ContainsScorer
from elevenfactor.governance import check_id

IDS = [f"run-{i:04d}" for i in range(1000)]
BASE: dict[str, Any] = {
    "providers": {"t": {"type": "test"}},
    "models": {"echo": {"provider": "t", "model": "e"}},
    "routes": {"default": {"chain": ["echo"]}, "judge": {"chain": ["echo"]}},
}


def _rule(**kw: Any) -> OnlineRule:
    fields: dict[str, Any] = {"name": "q", "agent": "support", "sample": 1.0}
    fields["expect"] = [{"type": "contains", "value": "x"}]
    return OnlineRule.model_validate({**fields, **kw})


def test_the_share_sampled_is_the_configured_one_and_each_decision_is_stable() -> None:
    for share in (0.1, 0.5):
        picked = [r for r in IDS if sampled("quality", r, share)]
        assert abs(len(picked) - share * len(IDS)) < 0.03 * len(IDS), (share, len(picked))
        assert picked == [r for r in IDS if sampled("quality", r, share)]  # same every time
    # a run sampled at 10% is sampled at every larger share (one point per run)
    low = {r for r in IDS if sampled("quality", r, 0.1)}
    assert low <= {r for r in IDS if sampled("quality", r, 0.5)}
    assert not any(sampled("quality", r, 0.0) for r in IDS)
    assert all(sampled("quality", r, 1.0) for r in IDS)
    assert all(0.0 <= sample_point("quality", r) < 1.0 for r in IDS)


def test_rules_sample_independently_of_each_other() -> None:
    a = {r for r in IDS if sampled("a", r, 0.5)}
    b = {r for r in IDS if sampled("b", r, 0.5)}
    assert 180 < len(a & b) < 320  # about a quarter: not the same half


def test_scoring_run_ids_are_valid_stable_and_distinct() -> None:
    rid = scoring_run_id("quality", "run-1")
    assert rid == scoring_run_id("quality", "run-1")
    assert check_id(rid, "id") == rid
    assert len({scoring_run_id(rule, r) for rule in ("a", "b") for r in IDS[:200]}) == 400
    assert scorer_identity("quality") == "scorer:quality"


def test_which_runs_a_rule_matches() -> None:
    sampler = OnlineSampler(
        [
            _rule(name="exact"),
            _rule(name="glob", agent="bill*", tags=["prod", "eu"]),
            _rule(name="failures", agent="*", status=["failed"]),
            _rule(name="tools", agent="mcp.tool"),
        ]
    )

    def names(program: str, tags: list[str], status: str) -> set[str]:
        return {r.name for r in sampler.due(program, tags, status, "run-1")}

    assert names("support", [], "succeeded") == {"exact"}
    assert names("support", [], "cancelled") == set()
    assert names("billing", ["prod", "eu", "x"], "succeeded") == {"glob"}
    assert names("billing", ["prod"], "succeeded") == set()  # every tag of the rule is needed
    assert names("billing", [], "failed") == {"failures"}
    assert names("mcp.tool", [], "failed") == set()  # a pattern does not pick gated tool calls
    assert names("mcp.tool", [], "succeeded") == {"tools"}  # naming it does
    # never the scoring runs, never eval runs
    assert names(ONLINE_EVAL, [], "failed") == set()
    assert names("support", ["eval:support"], "succeeded") == set()


def test_unsampled_runs_are_not_due() -> None:
    sampler = OnlineSampler([_rule(sample=0.3)])
    due = [r for r in IDS if sampler.due("support", [], "succeeded", r)]
    assert due == [r for r in IDS if sampled("q", r, 0.3)]


@pytest.mark.parametrize(
    ("rule", "key", "words"),
    [
        ({"sample": 1.5}, "evals.online.0.sample", "less than or equal to 1"),
        ({"sample": -0.1}, "evals.online.0.sample", "greater than or equal to 0"),
        ({"expect": [{"type": "fuzzy"}]}, "evals.online.0.expect", "unknown scorer type 'fuzzy'"),
        ({"expect": [{"value": "x"}]}, "evals.online.0.expect", "needs `type:`"),
        ({"expect": [{"type": "contains"}]}, "evals.online.0.expect", "expect[0].value"),
        (
            {"expect": [{"type": "regex", "pattern": "("}]},
            "evals.online.0.expect",
            "not a valid regular expression",
        ),
        ({"expect": []}, "evals.online.0", "needs `expect:` scorers or a `suite:`"),
        (
            {"expect": [{"type": "judge", "rubric": "polite"}]},
            "evals.online.0",
            "judge scorer without a `route`",
        ),
        (
            {"expect": [{"type": "judge", "rubric": "r", "route": "nope"}]},
            "evals.online[0].expect[0].route",
            "unknown name 'nope'",
        ),
        ({"judge_route": "nope"}, "evals.online[0].judge_route", "unknown name 'nope'"),
        ({"status": ["running"]}, "evals.online.0.status.0", "Input should be"),
        ({"tags": ["two words"]}, "evals.online.0.tags", "not a valid tag"),
        ({"name": "has space"}, "evals.online.0.name", "should match pattern"),
        ({"surprise": 1}, "evals.online.0.surprise", "unknown key"),
    ],
)
def test_invalid_rules_are_config_errors_naming_the_key(
    rule: dict[str, Any], key: str, words: str
) -> None:
    fields = {"name": "q", "agent": "support", "sample": 0.1}
    fields["expect"] = [{"type": "contains", "value": "x"}]
    with pytest.raises(ConfigError) as err:
        parse_project({**BASE, "evals": {"online": [{**fields, **rule}]}}, source="p.yaml")
    assert err.value.key == key and err.value.source == "p.yaml"
    assert words in err.value.message, err.value.message


def test_rule_names_are_unique_and_a_valid_rule_loads() -> None:
    rule = {"name": "q", "agent": "support", "sample": 0.1, "suite": "support"}
    with pytest.raises(ConfigError) as err:
        parse_project({**BASE, "evals": {"online": [rule, rule]}})
    assert "two online rules are named 'q'" in err.value.message
    project = parse_project(
        {
            **BASE,
            "evals": {
                "online": [
                    {
                        "name": "q",
                        "agent": "support",
                        "sample": 0.25,
                        "judge_route": "judge",
                        "expect": [{"type": "judge", "rubric": "polite"}],
                    }
                ]
            },
        }
    )
    [loaded] = project.evals.online
    assert loaded.status == ["succeeded"] and not loaded.children and loaded.queue == "default"
    assert project.evals.dir == "evals"


def test_scorer_specs_parse_into_the_suites_scorers() -> None:
    [scorer] = parse_scorer_specs([{"type": "contains", "value": "refund", "name": "r"}])
    assert isinstance(scorer, ContainsScorer) and scorer.label == "r"
    assert {"exact", "contains", "judge", "custom", "guard"} <= set(SCORER_TYPES)
    with pytest.raises(ValueError, match=r"expect\[1\]\.surprise \(exact\): unknown key"):
        parse_scorer_specs(
            [{"type": "exact", "value": "a"}, {"type": "exact", "value": "b", "surprise": 1}]
        )


def _project(rule: dict[str, Any]) -> Any:
    fields = {"name": "q", "agent": "support", "sample": 0.1, **rule}
    return parse_project({**BASE, "evals": {"online": [fields]}})


def test_rules_are_prepared_with_their_suite_and_checked_when_the_runtime_is_built(
    tmp_path: Path,
) -> None:
    (tmp_path / "evals").mkdir()
    (tmp_path / "evals" / "support.yaml").write_text(
        "target: {agent: support}\n"
        "defaults:\n  judge_route: judge\n"
        "  expect: [{type: judge, rubric: polite}, {type: contains, value: echo}]\n"
        "cases: [{input: hi}]\n"
    )
    project = _project({"suite": "support", "expect": [{"type": "exact", "value": "x"}]})
    [rule] = prepare_rules(project, tmp_path, source="p.yaml").values()
    assert [s.label for s in rule.scorers] == ["judge", "contains", "exact"]  # suite's first
    assert (rule.judge_route, rule.suite) == ("judge", "support") and rule.suite_version
    with pytest.raises(ConfigError) as err:
        prepare_rules(_project({"suite": "missing"}), tmp_path, source="p.yaml")
    assert err.value.key == "evals.online[0].suite" and err.value.source == "p.yaml"
    broken = _project({"expect": [{"type": "custom", "ref": "no_such_module_xyz:score"}]})
    errors: list[ConfigError] = []
    assert prepare_rules(broken, tmp_path, errors=errors) == {}
    assert [e.key for e in errors] == ["evals.online[0].scorers[0]"]
