"""Eval suite files: loading, versions, JSONL cases, the promptfoo mapping, and errors that
name the file, the line and the key."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from elevenfactor.errors import ConfigError
from elevenfactor.evals import (
    ContainsScorer,
    ExactScorer,
    JsonSchemaScorer,
    JudgeScorer,
    MaxCostScorer,
    NotContainsScorer,
    RegexScorer,
    TrajectoryScorer,
    load_suite,
    load_suite_dir,
    parse_suite,
)
from elevenfactor.models._messages import UserMessage

DATA = Path(__file__).parent.parent / "data" / "evals"


def parse(text: str, file: str = "evals/s.yaml", directory: Path | None = None) -> object:
    return parse_suite(text.encode(), file=file, directory=directory)


def error_of(text: str, **kw: object) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse(text, **kw)  # type: ignore[arg-type]
    return info.value


def test_example_suite_loads_with_defaults_and_jsonl_cases() -> None:
    suite = load_suite(DATA / "support.yaml", root=DATA.parent.parent.parent)
    assert suite.id == "support"
    assert suite.file == "tests/data/evals/support.yaml"
    assert (suite.target.kind, suite.target.name) == ("agent", "support")
    assert [c.id for c in suite.cases] == ["refund", "chat", "json-answer", "case-4", "case-5"]
    refund, chat = suite.case("refund"), suite.case("chat")
    assert suite.repeats_for(refund) == 3 and suite.pass_rate_for(refund) == 0.66
    assert suite.repeats_for(chat) == 1 and suite.pass_rate_for(chat) == 1.0
    assert [s.label for s in suite.scorers_for(refund)] == [
        "max_latency_ms",
        "contains",
        "trajectory",
    ]
    assert isinstance(chat.input, list) and isinstance(chat.input[1], UserMessage)
    assert chat.input_text() == "Say hi"
    assert suite.case("json-answer").input == {"question": "order status"}
    assert isinstance(suite.case("case-4").expect[0], ExactScorer)
    promptfoo_line = suite.case("case-5")
    assert promptfoo_line.input == "capital of France?"
    assert isinstance(promptfoo_line.expect[0], ContainsScorer)
    assert promptfoo_line.expect[0].ignore_case
    assert suite.thresholds()["chat"] == 1.0
    assert [c.id for c in suite.with_tags(["billing"])] == ["refund"]
    assert suite.defaults.judge_route == "judge"


def test_version_covers_the_suite_and_its_cases_file(tmp_path: Path) -> None:
    for name in ("support.yaml", "support.jsonl"):
        shutil.copy(DATA / name, tmp_path / name)
    before = load_suite(tmp_path / "support.yaml")
    assert len(before.version) == 12 and before.full_hash.startswith(before.version)
    crlf = (tmp_path / "support.yaml").read_bytes().replace(b"\n", b"\r\n")
    (tmp_path / "support.yaml").write_bytes(crlf)
    assert load_suite(tmp_path / "support.yaml").version == before.version
    with (tmp_path / "support.jsonl").open("a") as f:
        f.write('{"input": "one more"}\n')
    after = load_suite(tmp_path / "support.yaml")
    assert after.version != before.version and len(after.cases) == 6


def test_promptfoo_file_maps_assertions_onto_scorers() -> None:
    suite = load_suite(DATA / "promptfoo.yaml")
    greets, bananas = suite.cases
    assert greets.input == "Hello there" and greets.description == "greets"
    c, nc, rx = greets.expect
    assert isinstance(c, ContainsScorer) and c.ignore_case and c.value == "hello"
    assert isinstance(nc, NotContainsScorer) and nc.value == "goodbye"
    assert isinstance(rx, RegexScorer) and rx.pattern == "^[A-Z]" and not rx.negate
    assert bananas.input == {"topic": "bananas", "audience": "kids"}
    assert bananas.vars == bananas.input
    any_, is_json, has_json, cost, latency, rubric = bananas.expect
    assert isinstance(any_, ContainsScorer) and any_.mode == "any"
    assert isinstance(is_json, JsonSchemaScorer) and is_json.json_schema is None
    assert isinstance(has_json, JsonSchemaScorer) and has_json.find
    assert has_json.json_schema == {"type": "object"}
    assert isinstance(cost, MaxCostScorer) and cost.value == 0.01
    assert latency.value == 2000  # type: ignore[union-attr]
    assert isinstance(rubric, JudgeScorer)
    assert (rubric.route, rubric.threshold) == ("judge", 0.7)


def test_load_suite_dir_collects_every_error(tmp_path: Path) -> None:
    (tmp_path / "good.yaml").write_text("target: {route: r}\ncases: [{input: hi}]\n")
    (tmp_path / "bad.yml").write_text("target: {route: r}\n")
    (tmp_path / "notes.txt").write_text("ignored")
    errors: list[ConfigError] = []
    suites = load_suite_dir(tmp_path, errors=errors)
    assert list(suites) == ["good"]
    assert len(errors) == 1 and "no cases" in errors[0].message
    with pytest.raises(ConfigError):
        load_suite_dir(tmp_path)


TARGET = "target: {route: r}\n"


@pytest.mark.parametrize(
    ("text", "line", "key", "words"),
    [
        # unknown key, with a suggestion
        (TARGET + "cases:\n  - input: hi\n    expct: []\n", 4, "cases[0].expct", "expect"),
        (TARGET + "descripton: x\ncases: [{input: a}]\n", 2, "descripton", "description"),
        # unknown key inside a scorer
        (
            TARGET + "cases:\n  - input: hi\n    expect:\n      - type: regex\n        patern: x\n",
            6,
            "cases[0].expect[0].patern",
            "pattern",
        ),
        # unknown scorer type, with a suggestion
        (
            TARGET + "cases:\n  - input: hi\n    expect:\n      - type: contain\n"
            "        value: x\n",
            5,
            "cases[0].expect[0].type",
            "contains",
        ),
        # a scorer without type
        (TARGET + "cases:\n  - input: hi\n    expect:\n      - value: x\n", 5, "type", "type"),
        # a bad regex
        (
            TARGET + "cases:\n  - input: hi\n    expect:\n      - type: regex\n"
            "        pattern: '('\n",
            6,
            "cases[0].expect[0].pattern",
            "regular expression",
        ),
        # a bad JSON schema
        (
            TARGET + "cases:\n  - input: hi\n    expect:\n      - type: json_schema\n"
            "        schema: {type: 12}\n",
            6,
            "cases[0].expect[0].schema",
            "JSON schema",
        ),
        # missing input
        (TARGET + "cases:\n  - id: a\n    expect: []\n", 3, "cases[0].input", "missing"),
        # out-of-range pass rate
        (
            TARGET + "defaults:\n  pass_rate: 1.5\ncases: [{input: a}]\n",
            3,
            "defaults.pass_rate",
            "1.5",
        ),
        # a bad chat message
        (
            TARGET + "cases:\n  - input:\n      - {role: user, content: hi, extra: 1}\n",
            4,
            "cases[0].input[0].extra",
            "unknown key",
        ),
        # two targets
        ("target: {route: r, agent: a}\ncases: [{input: a}]\n", 1, "target", "exactly one"),
        ("cases: [{input: a}]\n", 1, "target", "missing"),
        # guard scorer without expectations
        (
            TARGET + "cases:\n  - input: hi\n    expect:\n      - {type: guard, policy: p}\n",
            5,
            "cases[0].expect[0]",
            "fires",
        ),
        # trajectory argument regex
        (
            TARGET + "cases:\n  - input: hi\n    expect:\n      - type: trajectory\n"
            "        calls:\n          - name: t\n            args_regex: {a: '['}\n",
            8,
            "cases[0].expect[0].calls[0].args_regex",
            "regular expression",
        ),
        # unsupported promptfoo assertion
        (
            TARGET + "tests:\n  - vars: {input: a}\n    assert:\n      - type: javascript\n"
            "        value: output.length > 2\n",
            5,
            "tests[0].assert[0]",
            "javascript",
        ),
        # promptfoo assertion whose value does not fit
        (
            TARGET + "tests:\n  - vars: {input: a}\n    assert:\n      - type: cost\n",
            5,
            "tests[0].assert[0]",
            "'cost' assertion",
        ),
        # duplicate key
        (TARGET + "cases: [{input: a}]\ncases: [{input: b}]\n", 3, "cases", "duplicate key"),
        # duplicate case id
        (TARGET + "cases:\n  - {id: a, input: x}\n  - {id: a, input: y}\n", 4, "id", "a"),
        # invalid YAML
        (TARGET + "cases: [{input: a}\n", 3, None, "not valid YAML"),
        # id that disagrees with the file name
        ("id: other\n" + TARGET + "cases: [{input: a}]\n", 1, "id", "file name"),
        # bad case id
        (TARGET + "cases: [{id: 'a b', input: x}]\n", 2, "cases[0].id", "a b"),
        ("", 1, None, "empty"),
        ("- a\n- b\n", 1, None, "mapping"),
        (TARGET, 1, "cases", "no cases"),
    ],
)
def test_errors_name_file_line_and_key(text: str, line: int, key: str | None, words: str) -> None:
    exc = error_of(text)
    assert exc.source == f"evals/s.yaml:{line}", str(exc)
    assert exc.details["line"] == line and exc.details["file"] == "evals/s.yaml"
    if key is not None:
        assert exc.key is not None and exc.key.endswith(key), str(exc)
    assert words in str(exc)


def test_missing_cases_file_names_the_key(tmp_path: Path) -> None:
    exc = error_of(TARGET + "cases_file: nope.jsonl\n", directory=tmp_path)
    assert exc.source == "evals/s.yaml:2" and exc.key == "cases_file"


@pytest.mark.parametrize(
    ("lines", "line", "key", "words"),
    [
        (['{"input": "a"}', "", "{not json"], 3, None, "not valid JSON"),
        (['{"input": "a"}', "[1, 2]"], 2, None, "JSON object"),
        (['{"input": "a"}', '{"inptu": "b"}'], 2, "inptu", "did you mean 'input'"),
        (['{"input": "a", "expect": [{"type": "regx", "pattern": "x"}]}'], 1, "type", "regex"),
        (['{"input": "a", "expect": [{"type": "exact"}]}'], 1, "expect[0].value", "missing"),
        (
            ['{"vars": {}, "assert": [{"type": "similar", "value": "x"}]}'],
            1,
            "assert[0]",
            "similar",
        ),
        (['{"id": "a", "input": "x"}', '{"id": "a", "input": "y"}'], None, "id", "duplicate"),
    ],
)
def test_jsonl_errors_name_the_cases_file_and_line(
    tmp_path: Path, lines: list[str], line: int | None, key: str | None, words: str
) -> None:
    (tmp_path / "c.jsonl").write_text("\n".join(lines) + "\n")
    exc = error_of(TARGET + "cases_file: c.jsonl\n", directory=tmp_path)
    where = "evals/c.jsonl" if line is None else f"evals/c.jsonl:{line}"
    assert exc.source == where, str(exc)
    if key is not None:
        assert exc.key is not None and exc.key.endswith(key), str(exc)
    assert words in str(exc)


def test_trajectory_spec_reads_its_calls() -> None:
    suite = load_suite(DATA / "support.yaml")
    traj = suite.case("refund").expect[1]
    assert isinstance(traj, TrajectoryScorer)
    assert [c.name for c in traj.calls] == ["lookup_order", "refund"]
    assert traj.calls[0].args_regex == {"order_id": r"^A\d+$"}
