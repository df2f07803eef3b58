"""Prompts as files: parsing, versions, references and labels, rendering and the sandbox."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from elevenfactor.context._prompt_inputs import inputs_from_pairs
from elevenfactor.context._prompts import (
    PromptRegistry,
    load_prompts,
    parse_ref,
    prompt_diff,
)
from elevenfactor.errors import PromptError, PromptInputError, PromptNotFound
from elevenfactor.models import ModelSettings

DATA = Path(__file__).parent.parent / "data" / "prompts"


@pytest.fixture
def registry() -> PromptRegistry:
    return load_prompts(DATA)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_prompt_file_is_read_with_its_front_matter(registry: PromptRegistry) -> None:
    assert [p.id for p in registry.list()] == ["plain", "support", "triage"]
    p = registry.get("support")
    assert p.description == "Billing support agent instructions"
    assert p.route == "default"
    assert p.settings.temperature == 0.2 and p.settings.max_tokens == 300
    assert isinstance(p.settings, ModelSettings)
    assert p.settings.prompt_version == p.ref  # the response cache keys on the version
    assert p.params() == {"route": "default", "temperature": 0.2, "max_tokens": 300}
    assert p.inputs["required"] == ["customer"]
    assert p.file == "prompts/support.md" and p.path == DATA / "support.md"
    assert p.origin == "file"
    assert p.body.startswith("You help {{ customer }}")
    # id defaults to the file name; `model: NAME` is a route; no front matter: no inputs
    triage = registry.get("triage")
    assert triage.route == "fast" and triage.params() == {"route": "fast"}
    plain = registry.get("plain")
    assert plain.description == "" and plain.route is None and plain.params() == {}
    assert plain.render() == "Answer briefly and politely."


def test_the_version_is_the_content_hash_of_the_file(registry: PromptRegistry) -> None:
    p = registry.get("support")
    assert p.full_hash == _sha(DATA / "support.md")
    assert p.version == p.full_hash[:12] and len(p.version) == 12
    assert p.ref == f"support@{p.version}"


def test_line_endings_do_not_change_the_version(tmp_path: Path) -> None:
    text = (DATA / "support.md").read_bytes()
    (tmp_path / "lf").mkdir()
    (tmp_path / "crlf").mkdir()
    (tmp_path / "lf" / "support.md").write_bytes(text)
    (tmp_path / "crlf" / "support.md").write_bytes(text.replace(b"\n", b"\r\n"))
    lf = load_prompts(tmp_path / "lf").get("support")
    crlf = load_prompts(tmp_path / "crlf").get("support")
    assert lf.full_hash == crlf.full_hash
    assert crlf.render({"customer": "Ann"}) == lf.render({"customer": "Ann"})
    # any other change is a new version
    (tmp_path / "lf" / "support.md").write_bytes(text.replace(b"billing", b"invoices"))
    assert load_prompts(tmp_path / "lf").get("support").full_hash != lf.full_hash


def test_rendering_fills_the_body_with_its_inputs(registry: PromptRegistry) -> None:
    support = registry.get("support")
    assert support.render({"customer": "Ann", "tier": "pro"}) == (
        "You help Ann, a pro customer, with billing."
    )
    # an optional input not given is None: the branch is not taken, nothing is printed
    assert support.render({"customer": "Ann"}) == "You help Ann, with billing."
    triage = registry.get("triage")
    # a schema default fills a missing input; block tags leave no blank lines
    assert triage.render({"tickets": ["refund", "outage"]}) == (
        "Sort these tickets, most urgent first, and keep the top 3:\n- refund\n- outage\n"
    )
    assert "top 1:" in triage.render({"tickets": ["x"], "limit": 1})


@pytest.mark.parametrize(
    ("inputs", "name", "says"),
    [
        ({}, "customer", "missing required input 'customer'"),
        ({"customer": "Ann", "tier": "gold"}, "tier", "'gold' is not one of ['free', 'pro']"),
        ({"customer": 7}, "customer", "7 is not of type 'string'"),
    ],
)
def test_bad_inputs_name_the_prompt_and_the_input(
    registry: PromptRegistry, inputs: dict[str, object], name: str, says: str
) -> None:
    support = registry.get("support")
    with pytest.raises(PromptInputError) as err:
        support.render(inputs)
    assert err.value.code == "prompt_input_invalid"
    assert err.value.message.startswith(f"prompt {support.ref}: ")
    assert says in err.value.message
    assert err.value.param == f"inputs.{name}"
    assert err.value.hint is not None and "customer (string, required)" in err.value.hint


def test_bad_nested_inputs_and_non_objects_are_input_errors(registry: PromptRegistry) -> None:
    triage = registry.get("triage")
    with pytest.raises(PromptInputError, match=r"input 'tickets'\[1\]: 5 is not of type"):
        triage.render({"tickets": ["a", 5]})
    with pytest.raises(PromptInputError, match=r"input 'tickets': \[\] should be non-empty"):
        triage.render({"tickets": []})
    with pytest.raises(PromptInputError, match="inputs must be an object"):
        triage.render(["a"])


def test_undeclared_inputs_are_refused_when_the_schema_says_so(tmp_path: Path) -> None:
    (tmp_path / "strict.md").write_text(
        "---\ninputs:\n  type: object\n  properties: {a: {type: string}}\n"
        "  additionalProperties: false\n---\n{{ a }}\n"
    )
    p = load_prompts(tmp_path).get("strict")
    with pytest.raises(PromptInputError, match="unknown input 'b'") as err:
        p.render({"a": "x", "b": "y"})
    assert err.value.param == "inputs.b"


@pytest.mark.parametrize(
    "expr",
    [
        "''.__class__.__mro__",
        "''.__class__.__mro__[1].__subclasses__()",
        "cycler.__init__.__globals__",
        "lipsum.__globals__['os']",
        "customer.__class__",
        "items.append('x')",
        "mapping.update(k='x')",
    ],
)
def test_the_sandbox_keeps_the_body_inside(tmp_path: Path, expr: str) -> None:
    (tmp_path / "evil.md").write_text(
        "---\ninputs:\n  type: object\n  properties:\n    customer: {type: string}\n"
        "    items: {type: array}\n    mapping: {type: object}\n---\nline one\n{{ " + expr + " }}\n"
    )
    evil = load_prompts(tmp_path).get("evil")
    items: list[str] = []
    mapping: dict[str, str] = {}
    with pytest.raises(PromptError) as err:
        evil.render({"customer": "Ann", "items": items, "mapping": mapping})
    assert "the sandbox forbids" in err.value.message
    assert err.value.message.startswith(f"{tmp_path.name}/evil.md:10: ")
    assert err.value.details == {"file": f"{tmp_path.name}/evil.md", "line": 10}
    assert items == [] and mapping == {}


def test_a_failure_inside_the_body_names_the_line(tmp_path: Path) -> None:
    (tmp_path / "oops.md").write_text(
        "---\ninputs:\n  type: object\n  properties: {n: {type: integer}, c: {type: string}}\n"
        "---\nfirst\nsecond {{ 10 // n }}\nthird {{ c.name }}\n"
    )
    oops = load_prompts(tmp_path).get("oops")
    with pytest.raises(PromptError, match=r"oops\.md:7: rendering failed: ZeroDivisionError"):
        oops.render({"n": 0, "c": "x"})
    with pytest.raises(PromptError, match=r"oops\.md:8: rendering failed: UndefinedError"):
        oops.render({"n": 1, "c": "x"})


def test_huge_ranges_are_refused_by_the_sandbox(tmp_path: Path) -> None:
    (tmp_path / "big.md").write_text("{% for i in range(10**9) %}x{% endfor %}\n")
    with pytest.raises(PromptError, match=r"big\.md:1: rendering failed: OverflowError"):
        load_prompts(tmp_path).get("big").render()


def test_references_labels_and_versions(tmp_path: Path) -> None:
    shutil.copy(DATA / "support.md", tmp_path / "support.md")
    version = _sha(tmp_path / "support.md")[:12]
    labels = {"support": {"production": version, "staging": "9b1c44d2e0aa"}}
    reg = load_prompts(tmp_path, labels)
    now = reg.get("support")
    assert reg.get("support@production") is now
    assert reg.get(f"support@{version}") is now
    assert reg.get(f"support@{version[:8]}") is now  # a prefix of 8 digits is enough
    assert reg.get(f"support@{version.upper()}") is now
    assert reg.labels_of("support", now.full_hash) == ("production",)
    with pytest.raises(PromptNotFound, match=r"label 'staging'.*is not the file on disk") as err:
        reg.get("support@staging")
    assert err.value.code == "prompt_not_found"
    with pytest.raises(PromptNotFound, match="prompt 'support' has no label 'canary'") as err:
        reg.get("support@canary")
    assert err.value.hint is not None and "production, staging" in err.value.hint
    with pytest.raises(PromptNotFound, match="has no label '1234567'"):
        reg.get("support@1234567")  # 7 hex digits is not a version
    with pytest.raises(PromptNotFound, match="version 00000000 of prompt 'support' is not"):
        reg.get("support@00000000")
    with pytest.raises(PromptNotFound, match="unknown prompt 'billing'") as err:
        reg.get("billing@production")
    assert err.value.hint is not None and err.value.hint.endswith(": support")
    for bad in ("", "a@b@c", "sup port", "@production"):
        with pytest.raises(PromptNotFound, match="is not a prompt reference"):
            reg.get(bad)


async def test_resolve_without_a_store_is_get(registry: PromptRegistry) -> None:
    assert await registry.resolve("support") is registry.get("support")
    with pytest.raises(PromptNotFound, match="not the file on disk"):
        await registry.resolve("support@00000000")


def test_a_missing_directory_is_an_empty_registry_named_in_errors(tmp_path: Path) -> None:
    reg = load_prompts(tmp_path / "nowhere")
    assert reg.list() == []
    with pytest.raises(PromptNotFound) as err:
        reg.get("support")
    assert err.value.hint is not None and "(the directory does not exist)" in err.value.hint


def test_parse_ref() -> None:
    assert parse_ref("support") == ("support", None)
    assert parse_ref("support@production") == ("support", "production")
    assert parse_ref(" support@3f2a9c1e ") == ("support", "3f2a9c1e")


def test_diff_of_two_versions(tmp_path: Path, registry: PromptRegistry) -> None:
    old = registry.get("support")
    (tmp_path / "support.md").write_text(old.source.replace("with billing", "with invoices"))
    new = load_prompts(tmp_path).get("support")
    lines = prompt_diff(old, new)
    assert lines[0] == f"--- {old.ref} (prompts/support.md)"
    assert lines[1] == f"+++ {new.ref} ({tmp_path.name}/support.md)"
    assert [x for x in lines if x[:1] in "+-" and x[:3] not in ("+++", "---")] == [
        "-" + old.body.rstrip("\n"),
        "+" + new.body.rstrip("\n"),
    ]
    assert prompt_diff(old, old) == []


def test_inputs_from_key_value_text(registry: PromptRegistry) -> None:
    triage = registry.get("triage")
    assert inputs_from_pairs(triage.inputs, ["limit=2", 'tickets=["a","b"]']) == {
        "limit": 2,
        "tickets": ["a", "b"],
    }
    support = registry.get("support")
    # a string input stays text even when it looks like JSON; "=" may appear in the value
    assert inputs_from_pairs(support.inputs, ["customer=42", "tier=a=b"]) == {
        "customer": "42",
        "tier": "a=b",
    }
    # not JSON: kept as text, and the schema check says what is wrong
    values = inputs_from_pairs(triage.inputs, ["tickets=abc"])
    with pytest.raises(PromptInputError, match="'abc' is not of type 'array'"):
        triage.render(values)
    with pytest.raises(PromptInputError, match="key=value"):
        inputs_from_pairs(support.inputs, ["customer"])
