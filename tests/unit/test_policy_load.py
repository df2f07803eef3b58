"""Guard policy files: every rule kind loads, the version is the file's content hash (the same
under CRLF), and every error names the file, the dotted key and the line."""

from __future__ import annotations

import hashlib
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from elevenfactor.errors import ConfigError
from elevenfactor.governance._policy_book import SHIPPED_DEFAULT, shipped_default
from elevenfactor.governance._policy_load import load_policy_dir, parse_policy
from elevenfactor.governance._policy_model import (
    ArgsRule,
    InjectionRule,
    MoneyRule,
    PiiRule,
    SecretsRule,
    SqlRule,
)

PROPERTY = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

FULL = """\
id: full
description: Every rule kind at a stage where it may stand
escalate: {group: security, timeout: 600, on_timeout: approve}
stages:
  input:
    - {rule: pii, action: redact, kinds: [email, iban], mode: mask}
    - {rule: secrets, action: block}
    - {rule: injection, action: block, threshold: 0.8, classifier: false}
    - {rule: topics, deny: {weapons: [rifle, ammunition]}, min_hits: 2}
  retrieved:
    - {rule: injection, action: escalate, group: trust}
  tool_call:
    - {rule: sql, action: escalate, dialect: postgres}
    - {rule: paths, root: /srv/data, args: [path]}
    - {rule: urls, allow: ["https://*.example.com/"]}
    - {rule: money, max: 500, currency: EUR, action: escalate}
    - {rule: tools, deny: ["*.delete*"]}
    - {rule: args, tools: {billing.refund: {amount: {max: 100, required: true}}}}
  tool_result:
    - {rule: length, max_chars: 20000, action: monitor}
  output:
    - {rule: secrets, action: block}
    - {rule: phrases, deny: ["internal use only"], patterns: ["(?i)confidential"]}
    - {rule: length, max_chars: 8000}
    - {rule: json_schema, schema: {type: object}}
    - {rule: relevance, route: judge, task: billing support}
breakers:
  run: {max_cost_usd: 0.50, max_same_tool_call: 3, max_same_error: 3}
  agent: {window_seconds: 900, min_runs: 10, max_error_rate: 0.5}
on_error: allow
keep_original: true
"""


def _error(text: str, file: str = "policies/p.yaml") -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_policy(text.encode(), file=file)
    return info.value


def test_every_rule_kind_loads_with_its_settings() -> None:
    policy = parse_policy(FULL.encode(), file="policies/full.yaml")
    assert policy.id == "full"
    assert policy.full_hash == hashlib.sha256(FULL.encode()).hexdigest()
    assert policy.version == policy.full_hash[:12]
    assert policy.ref == f"full@{policy.version}"
    assert policy.source == FULL
    assert policy.file == "policies/full.yaml"
    stages = policy.spec.stages
    kinds = {spec.rule for stage in ("input", "retrieved", "tool_call", "tool_result", "output")
             for spec in stages.rules(stage)}  # fmt: skip
    assert len(kinds) == 14  # every rule kind there is
    pii = stages.input[0]
    assert isinstance(pii, PiiRule) and pii.kinds == ["email", "iban"] and pii.mode == "mask"
    injection = stages.input[2]
    assert isinstance(injection, InjectionRule) and injection.threshold == 0.8
    money = stages.tool_call[3]
    assert isinstance(money, MoneyRule) and money.max == Decimal(500)
    args = stages.tool_call[5]
    assert isinstance(args, ArgsRule)
    assert args.tools["billing.refund"]["amount"].max == Decimal(100)
    assert policy.spec.escalate.on_timeout == "approve"
    assert policy.spec.breakers.agent is not None
    assert (policy.spec.on_error, policy.spec.keep_original) == ("allow", True)


def test_a_minimal_file_and_its_id_from_the_file_name() -> None:
    policy = parse_policy(b"description: nothing checked\n", file="policies/relaxed.yml")
    assert policy.id == "relaxed"
    assert policy.spec.stages.input == []
    assert policy.spec.on_error == "block"  # fail closed unless the file says otherwise


def test_crlf_and_lf_checkouts_have_the_same_version() -> None:
    lf = parse_policy(FULL.encode(), file="policies/full.yaml")
    crlf = parse_policy(FULL.replace("\n", "\r\n").encode(), file="policies/full.yaml")
    assert crlf.full_hash == lf.full_hash and crlf.source == lf.source
    edited = parse_policy(FULL.replace("0.8", "0.9").encode(), file="policies/full.yaml")
    assert edited.version != lf.version


@PROPERTY
@given(st.lists(st.sampled_from(["\n", "\r\n", "\r"]), min_size=1, max_size=40))
@example(["\r"])  # old Mac line endings
def test_the_version_depends_on_the_text_not_its_line_endings(endings: list[str]) -> None:
    lines = FULL.split("\n")
    mixed = "".join(line + endings[i % len(endings)] for i, line in enumerate(lines[:-1]))
    assert parse_policy(mixed.encode(), file="x/full.yaml").version == (
        parse_policy(FULL.encode(), file="x/full.yaml").version
    )


@PROPERTY
@given(st.text(max_size=120))
@example("")
@example("\ufeff")
@example("description: ok\n\x1f")  # a character YAML refuses, before any parsing
@example("stages: {input: [{rule: pii, kinds: [1]}]}")
@example("a: &x [*x]")  # an alias that refers to itself
@example("[" * 3000)  # deeper than the parser can go
@example("stages:\n  input: [&r {rule: pii}, *r]\n")
@example("stages: {input: [{rule: [pii]}]}")
@example("stages: {input: [{rule: {x: 1}}]}")
@example("? [a]\n: b\n")
@example("[\x85")  # YAML breaks lines at NEL, LS and PS too
def test_any_text_loads_or_is_a_config_error_with_a_line_in_the_file(text: str) -> None:
    try:
        parse_policy(text.encode(), file="policies/fuzz.yaml")
    except ConfigError as exc:
        assert exc.details["file"] == "policies/fuzz.yaml"
        line = exc.details["line"]
        breaks = sum(text.count(c) for c in "\n\r\x85\u2028\u2029")
        assert line is None or 1 <= line <= breaks + 1
        assert str(exc).startswith("policies/fuzz.yaml")


ERRORS = [
    pytest.param(
        "stages:\n  input:\n    - {rule: pii}\n    - {rule: secrets, colour: red}\n",
        4,
        "stages.input[1].colour",
        "unknown key",
        "one of: action, name, group, rule, kinds, mode",
        id="unknown-key",
    ),
    pytest.param(
        "descripton: x\n", 1, "descripton", "unknown key", "description", id="unknown-top-key"
    ),
    pytest.param(
        "stages:\n  input:\n    - rule: pii\n    - rule: injection\n      threshold: high\n",
        5,
        "stages.input[1].threshold",
        "Input should be a valid number",
        None,
        id="wrong-type",
    ),
    pytest.param(
        "stages:\n  input:\n    - {rule: pii}\n    - {rule: injection, threshold: 2}\n",
        4,
        "stages.input[1].threshold",
        "less than 1",
        None,
        id="out-of-range",
    ),
    pytest.param(
        "stages:\n  input:\n    - {rule: pii}\n\n    - {rule: sql}\n",
        5,
        "stages.input[1].rule",
        "rule 'sql' cannot stand at input (it can at: tool_call)",
        None,
        id="rule-at-wrong-stage",
    ),
    pytest.param(
        "stages:\n  output:\n    - {rule: length, max_chars: 5, action: redact}\n",
        3,
        "stages.output[0].action",
        "cannot redact",
        None,
        id="redact-by-a-rule-that-cannot",
    ),
    pytest.param(
        "stages:\n  output:\n    - rule: phrases\n      patterns:\n        - ok\n        - '(x'\n",
        6,
        "stages.output[0].patterns[1]",
        "not a valid regular expression",
        None,
        id="bad-regex",
    ),
    pytest.param(
        "stages:\n  tool_call:\n    - rule: args\n      tools:\n        billing.refund:\n"
        "          amount: {pattern: '(x'}\n",
        6,
        "stages.tool_call[0].tools['billing.refund'].amount.pattern",
        "not a valid regular expression",
        None,
        id="bad-arg-regex",
    ),
    pytest.param(
        "stages:\n  input:\n    - {rule: pi, action: block}\n",
        3,
        "stages.input[0].rule",
        "unknown rule kind 'pi'",
        "one of: pii, secrets, injection",
        id="unknown-rule-kind",
    ),
    pytest.param(
        "stages:\n  input:\n    - {action: block}\n",
        3,
        "stages.input[0].rule",
        "a rule needs `rule:`",
        None,
        id="rule-without-kind",
    ),
    pytest.param(
        "stages:\n  output:\n    - {rule: length}\n",
        3,
        "stages.output[0].max_chars",
        "missing required key",
        None,
        id="missing-setting",
    ),
    pytest.param(
        "description: x\nid: other\n", 2, "id", "does not match the file name", "'p'", id="id"
    ),
    pytest.param("id: 'bad id'\n", 1, "id", "is not a valid name", "letters", id="bad-id"),
    pytest.param(
        "stages:\n  input:\n  - {rule: pii\n", 4, None, "not valid YAML at line 4", None, id="yaml"
    ),
    pytest.param(
        "stages:\n\tinput: []\n", 2, None, "not valid YAML at line 2, column 1", None, id="tab"
    ),
    pytest.param("", 1, None, "the file is empty", "stages:", id="empty"),
    pytest.param("# only a comment\n", 1, None, "the file is empty", None, id="only-comments"),
    pytest.param("- a\n", 1, None, "must hold a mapping", None, id="a-list"),
    pytest.param("stages: {}\nstages: {}\n", 2, "stages", "duplicate key", None, id="duplicate"),
    pytest.param(
        "breakers:\n  run:\n    max_steps: 0\n",
        3,
        "breakers.run.max_steps",
        "greater than or equal to 1",
        None,
        id="breaker",
    ),
]


@pytest.mark.parametrize(("text", "line", "key", "message", "expected"), ERRORS)
def test_errors_name_the_file_the_key_and_the_line(
    text: str, line: int, key: str | None, message: str, expected: str | None
) -> None:
    exc = _error(text)
    assert exc.details == {"file": "policies/p.yaml", "line": line, "key": key}
    assert exc.source == f"policies/p.yaml:{line}"
    assert exc.key == key
    assert message in exc.message
    if expected is not None:
        assert exc.expected is not None and expected in exc.expected
    assert exc.code == "config_invalid"
    where = f"policies/p.yaml:{line}: {key}: " if key else f"policies/p.yaml:{line}: "
    assert str(exc).startswith(where)


def test_unknown_keys_suggest_the_close_one() -> None:
    exc = _error("stages:\n  inptu: []\n")
    assert exc.key == "stages.inptu" and exc.hint == "did you mean 'input'?"
    exc = _error("stages:\n  input: [{rule: injection, treshold: 0.9}]\n")
    assert exc.hint == "did you mean 'threshold'?"


def test_several_problems_are_counted_in_the_hint() -> None:
    exc = _error("stages:\n  input:\n    - {rule: pii, x: 1}\n    - {rule: pii, y: 2}\n")
    assert exc.key == "stages.input[0].x"
    assert exc.hint is not None and "1 more problem in the file" in exc.hint


def test_a_file_name_that_is_not_a_valid_id() -> None:
    exc = _error("description: x\n", file="policies/bad name.yaml")
    assert "'bad name' is not a valid policy id" in exc.message
    assert exc.hint is not None and "rename the file" in exc.hint


def test_a_file_that_is_not_utf8_names_the_line() -> None:
    with pytest.raises(ConfigError) as info:
        parse_policy(b"description: ok\ndescription2: \xff\n", file="policies/p.yaml")
    assert info.value.details["line"] == 2
    assert "not valid UTF-8" in info.value.message


def test_a_directory_loads_by_id_and_collects_errors(tmp_path: Path) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "strict.yaml").write_text("stages: {input: [{rule: secrets}]}\n")
    (policies / "relaxed.yml").write_text("description: relaxed\n")
    (policies / "broken.yaml").write_text("stages: {input: [{rule: nope}]}\n")
    (policies / "notes.txt").write_text("not a policy")
    with pytest.raises(ConfigError, match=r"policies/broken.yaml:1: stages.input\[0\].rule"):
        load_policy_dir(policies)
    errors: list[ConfigError] = []
    loaded = load_policy_dir(policies, errors=errors)
    assert sorted(loaded) == ["relaxed", "strict"]
    assert loaded["strict"].file == "policies/strict.yaml"  # relative to the project
    assert [e.details["file"] for e in errors] == ["policies/broken.yaml"]


def test_the_same_id_twice_in_a_directory_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "strict.yaml").write_text("description: a\n")
    (tmp_path / "strict.yml").write_text("description: b\n")
    with pytest.raises(ConfigError, match="duplicate policy id 'strict'"):
        load_policy_dir(tmp_path, root=tmp_path)


def test_a_missing_directory_has_no_policies(tmp_path: Path) -> None:
    assert load_policy_dir(tmp_path / "policies") == {}


def test_the_shipped_default_loads_and_is_safe_for_every_call() -> None:
    policy = shipped_default()
    assert policy.id == "default" and policy.file == SHIPPED_DEFAULT
    stages = policy.spec.stages
    # nothing blocks a request: secrets are masked, injection is only recorded
    assert [(r.rule, r.action) for r in stages.input] == [
        ("secrets", "redact"),
        ("injection", "monitor"),
    ]
    secrets = stages.input[0]
    assert isinstance(secrets, SecretsRule) and secrets.mode == "mask"
    for stage in ("retrieved", "tool_result"):
        assert [(r.rule, r.action) for r in stages.rules(stage)] == [("injection", "monitor")]
    sql = stages.tool_call[0]
    assert isinstance(sql, SqlRule) and sql.action == "escalate"
    assert [(r.rule, r.action) for r in stages.output] == [("secrets", "redact")]
    assert policy.spec.keep_original is False and policy.spec.on_error == "block"
    # its text is documented with comments and its version is its hash like any file
    assert policy.source.count("#") > 10
    assert policy.full_hash == hashlib.sha256(policy.source.encode()).hexdigest()
