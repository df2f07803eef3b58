"""The library behind ``guard eval``, ``guard test``, ``guard list`` and ``guard show``:
reading a labelled corpus, scoring a policy's rules on it, checking a text at several stages,
and summarising a policy (labels, attachments, rules per stage)."""

from __future__ import annotations

import ast
import asyncio
import json
from pathlib import Path
from types import ModuleType

import pytest

from elevenfactor.config._guards import GuardsConfig
from elevenfactor.errors import RequestError
from elevenfactor.governance import _guard_eval, _policy_info
from elevenfactor.governance._guard_eval import (
    Sample,
    check_stages,
    evaluate,
    read_corpus,
    spread,
)
from elevenfactor.governance._policy_info import policy_attachments, policy_info
from elevenfactor.governance._policy_load import parse_policy
from elevenfactor.governance._policy_model import Policy

POLICY = """\
description: phrases and secrets
stages:
  input:
    - {rule: phrases, deny: ["internal use only"], action: block}
    - {rule: secrets, action: redact}
  tool_call:
    - {rule: tools, deny: ["*.delete*"]}
"""
OPENAI_KEY = "sk-proj-" + "Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z"


def _policy() -> Policy:
    return parse_policy(POLICY.encode(), file="policies/house.yaml")


def _write(path: Path, rows: list[object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_read_corpus_reads_every_jsonl_of_a_directory_in_name_order(tmp_path: Path) -> None:
    _write(tmp_path / "b.jsonl", [{"text": "second", "label": "benign"}])
    _write(tmp_path / "a.jsonl", [{"text": "first", "label": "injection", "stage": "output"}])
    (tmp_path / "a.jsonl").write_text(
        (tmp_path / "a.jsonl").read_text() + "\n" + json.dumps({"text": "x", "expect": []}) + "\n"
    )
    (tmp_path / "notes.txt").write_text("not a corpus")
    assert read_corpus(tmp_path) == [
        Sample("first", True, "output"),
        Sample("x", False),  # an empty `expect` without a label is a negative
        Sample("second", False),
    ]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("not json", "not valid JSON"),
        ('{"label": "benign"}', "expected an object with a string `text`"),
        ('{"text": "t"}', "a row needs `label`"),
        ('{"text": "t", "expect": "email"}', "`expect` must be a list"),
        ('{"text": "t", "label": "x", "stage": "nowhere"}', "unknown stage 'nowhere'"),
    ],
)
def test_read_corpus_names_the_file_and_line_of_a_bad_row(
    tmp_path: Path, line: str, message: str
) -> None:
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"text": "ok", "label": "benign"}\n' + line + "\n")
    with pytest.raises(RequestError) as info:
        read_corpus(corpus)
    assert info.value.code == "guard_corpus_invalid"
    assert f"{corpus}:2: " in str(info.value) and message in str(info.value)


def test_read_corpus_of_a_missing_file_or_empty_directory_is_a_request_error(
    tmp_path: Path,
) -> None:
    for path, message in ((tmp_path / "absent.jsonl", "cannot read"), (tmp_path, "no *.jsonl")):
        with pytest.raises(RequestError) as info:
            read_corpus(path)
        assert info.value.code == "guard_corpus_invalid" and message in str(info.value)


def test_spread_picks_rows_evenly_and_keeps_all_without_a_smaller_limit() -> None:
    rows = [Sample(str(i), False) for i in range(10)]
    assert [s.text for s in spread(rows, 3)] == ["0", "3", "6"]
    assert spread(rows, None) == rows == spread(rows, 10) == spread(rows, 50)


def test_evaluate_scores_each_rule_and_the_policy() -> None:
    samples = [
        Sample("for internal use only", True),
        Sample(f"my key is {OPENAI_KEY}", True, expect=("secrets",)),
        Sample("hello there", False),
        Sample("internal use only, says the memo", False),
    ]
    steps: list[int] = []
    report = evaluate(_policy(), samples, "input", lambda: steps.append(1))
    assert len(steps) == 4
    assert (report["rows"], report["positives"], report["stage"]) == (4, 2, "input")
    phrases, secrets = report["rules"]
    # the `expect` row counts for the secrets rule only; a labelled row counts for every rule
    assert (phrases["tp"], phrases["fp"], phrases["fn"], phrases["tn"]) == (1, 1, 0, 2)
    assert (secrets["tp"], secrets["fp"], secrets["fn"], secrets["tn"]) == (1, 0, 1, 2)
    assert phrases["action"] == "block" and phrases["precision"] == 0.5
    total = report["policy_total"]
    assert (total["tp"], total["fp"], total["tn"]) == (2, 1, 1)
    assert report["verdicts"] == {"block": 2, "redact": 1, "allow": 1}
    assert report["check_us"]["p50"] is not None


def test_check_stages_checks_the_tool_call_and_the_text() -> None:
    results = asyncio.run(
        check_stages(
            _policy(),
            ["input", "tool_call"],
            f"key {OPENAI_KEY}",
            tool="db.delete_rows",
            args={"table": "users"},
        )
    )
    (st1, v1, c1), (st2, v2, c2) = results
    assert (st1, v1.action, c1) == ("input", "redact", f"key {OPENAI_KEY}")
    assert OPENAI_KEY not in (v1.content or "")
    assert (st2, v2.action, c2) == ("tool_call", "block", '{"table": "users"}')


def test_policy_info_lists_labels_attachments_and_rules_per_stage() -> None:
    policy = _policy()
    cfg = GuardsConfig.model_validate(
        {
            "keys": {"bot": "house@production"},
            "routes": {"gpt-4o": "house"},
            "labels": {"house": {"production": policy.version}},
        }
    )
    assert policy_attachments(cfg) == {
        "default": ["default"],
        "house": ["key:bot@production", "route:gpt-4o"],
    }
    info = policy_info(policy, cfg)
    assert info["labels"] == ["production"]
    assert info["attached"] == ["key:bot@production", "route:gpt-4o"]
    assert list(info["stages"]) == ["input", "tool_call"]
    assert info["stages"]["input"][0] == {
        "rule": info["stages"]["input"][0]["rule"],
        "kind": "phrases",
        "action": "block",
        "options": {"deny": ["internal use only"]},
    }


@pytest.mark.parametrize("module", [_guard_eval, _policy_info])
def test_library_modules_do_not_import_the_cli_stack(module: ModuleType) -> None:
    tree = ast.parse(Path(str(module.__file__)).read_text(encoding="utf-8"))
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {
        (node.module or "").split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
    }
    assert not imported & {"click", "rich"}
