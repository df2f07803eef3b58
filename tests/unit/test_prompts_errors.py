"""Every load-time error of a prompt file names the file and the line."""

from __future__ import annotations

from pathlib import Path

import pytest

from elevenfactor.config import parse_project
from elevenfactor.context._prompts import load_prompts
from elevenfactor.errors import ConfigError, PromptError

GOOD_INPUTS = "inputs:\n  type: object\n  properties: {customer: {type: string}}\n"

CASES = [
    pytest.param(
        "---\ndescription: ok\nmodel: {route: default\n---\nhi\n",
        3,
        "the front matter is not valid YAML",
        id="bad-yaml",
    ),
    pytest.param(
        "---\ndescription: ok\nmodel:\n  route: default\n   temperature: 0.2\n---\nhi\n",
        5,
        "the front matter is not valid YAML",
        id="bad-yaml-indent",
    ),
    pytest.param(
        "---\ndescription: ok\ntemperature: 0.2\n---\nhi\n",
        3,
        "unknown key 'temperature' in the front matter",
        id="unknown-key",
    ),
    pytest.param(
        "---\ndescription:\n  - a list\n---\nhi\n",
        3,
        "description must be text",
        id="wrong-type-description",
    ),
    pytest.param(
        "---\nid: [support]\n---\nhi\n",
        2,
        "id must be a plain name",
        id="wrong-type-id",
    ),
    pytest.param(
        "---\nid: bad name!\n---\nhi\n",
        2,
        "'bad name!' is not a valid prompt id",
        id="bad-id",
    ),
    pytest.param(
        "---\nmodel:\n  route: default\n  temperature: hot\n---\nhi\n",
        4,
        "model.temperature: Input should be a valid number",
        id="wrong-type-setting",
    ),
    pytest.param(
        "---\nmodel:\n  route: default\n  temperature: 3\n---\nhi\n",
        4,
        "model.temperature: Input should be less than or equal to 2",
        id="setting-out-of-range",
    ),
    pytest.param(
        "---\nmodel:\n  route: default\n  temprature: 0.2\n---\nhi\n",
        4,
        "unknown key model.temprature",
        id="unknown-setting",
    ),
    pytest.param(
        "---\nmodel:\n  tools: []\n---\nhi\n",
        3,
        "unknown key model.tools",
        id="setting-not-from-a-file",
    ),
    pytest.param("---\nmodel: 5\n---\nhi\n", 2, "model must be a route name", id="model-type"),
    pytest.param(
        "---\nmodel: {route: 'no route'}\n---\nhi\n",
        2,
        "model.route must be a route name",
        id="bad-route",
    ),
    pytest.param(
        "---\ninputs:\n  type: object\n  properties:\n    customer: {type: strng}\n---\nhi\n",
        5,
        "inputs is not a valid JSON Schema",
        id="invalid-schema",
    ),
    pytest.param(
        "---\ninputs:\n  type: object\n  properties: {}\n  required: 3\n---\nhi\n",
        5,
        "inputs is not a valid JSON Schema: 3 is not of type 'array'",
        id="invalid-schema-required",
    ),
    pytest.param(
        "---\ninputs:\n  type: array\n---\nhi\n",
        3,
        "inputs must be a JSON Schema with type: object",
        id="schema-not-object",
    ),
    pytest.param(
        "---\n" + GOOD_INPUTS + "  required: [customer, tier]\n---\nhi\n",
        5,
        "required input 'tier' is not declared under inputs.properties",
        id="required-undeclared",
    ),
    pytest.param(
        "---\n" + GOOD_INPUTS + "---\nline one\n{% if customer %}hi{% endif\n",
        7,
        "template syntax error",
        id="template-syntax",
    ),
    pytest.param(
        "---\n" + GOOD_INPUTS + "---\nHello {{ customer }}.\n\nYour plan: {{ plan }}.\n",
        8,
        "the body uses 'plan', which `inputs` does not declare",
        id="undeclared-variable",
    ),
    pytest.param(
        "---\n" + GOOD_INPUTS + "---\n{% for x in [1] %}{{ x }}{% endfor %}\n{{ x }}\n",
        7,
        "the body uses 'x'",
        id="loop-variable-outside-its-loop",
    ),
    pytest.param(
        "Hello\n{% include 'other.md' %}\n", 2, "{% include %} is not supported", id="include"
    ),
    pytest.param(
        "---\ndescription: never closed\nhi\n", 1, "is never closed", id="unclosed-front-matter"
    ),
    pytest.param(
        "---\ndescription: a\nid: x\ndescription: b\n---\nhi\n",
        4,
        "duplicate key 'description'",
        id="duplicate-key",
    ),
    pytest.param("---\n- a\n- b\n---\nhi\n", 2, "must be a mapping", id="not-a-mapping"),
    pytest.param(
        "---\ndescription: a\nx: &me [*me]\n---\nhi\n",
        3,
        "unknown key 'x'",
        id="self-referencing-alias",  # no RecursionError while looking for duplicate keys
    ),
]


@pytest.mark.parametrize(("text", "line", "says"), CASES)
def test_a_bad_file_is_refused_with_its_file_and_line(
    tmp_path: Path, text: str, line: int, says: str
) -> None:
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "bad.md").write_text(text)
    with pytest.raises(PromptError) as err:
        load_prompts(tmp_path / "prompts")
    assert err.value.code == "prompt_invalid"
    assert err.value.message.startswith(f"prompts/bad.md:{line}: "), err.value.message
    assert says in err.value.message
    assert err.value.details == {"file": "prompts/bad.md", "line": line}


def test_line_numbers_count_from_the_file_with_windows_line_endings(tmp_path: Path) -> None:
    text = "---\n" + GOOD_INPUTS + "---\nHello {{ customer }}.\n\nYour plan: {{ plan }}.\n"
    (tmp_path / "bad.md").write_bytes(text.replace("\n", "\r\n").encode())
    with pytest.raises(PromptError, match=r"bad\.md:8: the body uses 'plan'"):
        load_prompts(tmp_path)


def test_a_file_that_is_not_utf8_names_its_line(tmp_path: Path) -> None:
    (tmp_path / "latin.md").write_bytes(b"first\nsecond\ncaf\xe9\n")
    with pytest.raises(PromptError, match=r"latin\.md:3: the file is not valid UTF-8"):
        load_prompts(tmp_path)


def test_a_duplicate_id_names_both_files(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("---\nid: support\n---\none\n")
    (tmp_path / "b.md").write_text("---\ndescription: x\nid: support\n---\ntwo\n")
    (tmp_path / "support.md").write_text("three\n")  # its id is its name: a third claim
    with pytest.raises(PromptError) as err:
        load_prompts(tmp_path)
    assert err.value.message.startswith(f"{tmp_path.name}/b.md:3: duplicate prompt id")
    assert f"{tmp_path.name}/a.md has it too" in err.value.message
    errors: list[PromptError] = []
    reg = load_prompts(tmp_path, errors=errors)
    assert [e.details for e in errors] == [
        {"file": f"{tmp_path.name}/b.md", "line": 3},
        {"file": f"{tmp_path.name}/support.md", "line": 1},
    ]
    assert reg.get("support").body == "one\n"  # the first file keeps the id


def test_errors_can_be_collected_while_the_valid_prompts_load(tmp_path: Path) -> None:
    (tmp_path / "good.md").write_text("fine\n")
    (tmp_path / "bad1.md").write_text("{{ nope }}\n")
    (tmp_path / "bad2.md").write_text("---\nfoo: 1\n---\nx\n")
    errors: list[PromptError] = []
    reg = load_prompts(tmp_path, errors=errors)
    assert [p.id for p in reg.list()] == ["good"]
    assert [(e.details["file"].split("/")[-1], e.details["line"]) for e in errors] == [
        ("bad1.md", 1),
        ("bad2.md", 2),
    ]


def test_labels_in_the_project_file_are_checked() -> None:
    ok = parse_project({"prompts": {"labels": {"support": {"production": "3f2a9c1e0b7d"}}}})
    assert ok.prompts.dir == "prompts"
    assert ok.prompts.labels == {"support": {"production": "3f2a9c1e0b7d"}}
    with pytest.raises(ConfigError) as err:
        parse_project({"prompts": {"labels": {"support": {"production": "latest"}}}})
    assert err.value.key == "prompts.labels.support.production"
    with pytest.raises(ConfigError) as err:
        parse_project({"prompts": {"labels": {"support": {"production": "3f2a9c1"}}}})
    assert err.value.key == "prompts.labels.support.production"  # 7 digits: too short
    with pytest.raises(ConfigError) as err:
        parse_project({"prompts": {"folder": "x"}})
    assert err.value.key == "prompts.folder" and err.value.message.endswith("unknown key")
