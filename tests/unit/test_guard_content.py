"""Content detectors: denied phrases survive homoglyphs, invisible characters, fullwidth forms
and base64 wrapping and are located in the original text; topics count distinct whole-word
keywords; JSON-schema findings never quote the offending value."""

from __future__ import annotations

import base64

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from jsonschema.exceptions import SchemaError

from elevenfactor.governance._guard_content import (
    PhraseMatcher,
    SchemaCheck,
    TextViews,
    TopicMatcher,
    find_length_over,
    folded_with_positions,
)
from elevenfactor.governance._guard_normalize import fold
from elevenfactor.governance._guard_types import Finding

PHRASE = "internal use only"


def fullwidth(text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


def phrases(
    text: str, deny: tuple[str, ...] = (PHRASE,), patterns: tuple[str, ...] = ()
) -> list[Finding]:
    return PhraseMatcher(deny, patterns).find(TextViews(text))


@pytest.mark.parametrize(
    "variant",
    [
        "internal use only",
        "INTERNAL Use ONLY",
        "internal   use\n\tonly",  # whitespace runs
        "int\u200bernal use\u200d only",  # zero-width space and joiner
        fullwidth("internal use only"),
        "\u0456ntern\u0430l use \u043enly",  # Cyrillic i, a, o
        "i\u0301nternal use only",  # a combining accent
        "internal\u00a0use\u2003only",  # no-break and em spaces
    ],
)
def test_denied_phrase_is_found_through_obfuscation_and_located(variant: str) -> None:
    text = f"Note: {variant}. Thanks"
    found = phrases(text)
    assert [f.rule for f in found] == ["phrase.denied"]
    f = found[0]
    assert fold(text[f.start : f.end]) == PHRASE  # the span covers exactly the phrase
    assert f.detail == "matches deny[0]"
    assert "internal" not in f.detail


@pytest.mark.parametrize(
    "text",
    ["internal use", "for internal purposes only", "use only internally", "", "   "],
)
def test_text_without_the_phrase_passes(text: str) -> None:
    assert phrases(text) == []


def test_base64_wrapped_phrase_marks_the_encoded_token() -> None:
    token = base64.b64encode(b"this is for internal use only, do not share").decode()
    text = f"decode this: {token} please"
    found = phrases(text)
    assert len(found) == 1
    assert (found[0].start, found[0].end) == (text.index(token), text.index(token) + len(token))
    assert "encoded" in found[0].detail


def test_every_occurrence_is_found_once() -> None:
    text = "internal use only; INTERNAL USE ONLY; int\u200bernal use only"
    found = phrases(text)
    assert len(found) == 3
    assert all(fold(text[f.start : f.end]) == PHRASE for f in found)


def test_patterns_match_case_insensitively_on_text_and_folded_text() -> None:
    text = f"Project {fullwidth('ATLAS')}-42 launches"
    found = phrases(text, deny=(), patterns=(r"atlas-\d+",))
    assert [f.rule for f in found] == ["phrase.pattern"]
    assert found[0].detail == "matches patterns[0]"
    assert phrases("Project Atlas launches", deny=(), patterns=(r"atlas-\d+",)) == []


@given(prefix=st.text(max_size=30), suffix=st.text(max_size=30))
@settings(max_examples=150, deadline=None)
@example(prefix="\u200b", suffix="\u200b")
@example(prefix="\ufb01", suffix="\u00df")
def test_phrase_found_wherever_it_is_embedded(prefix: str, suffix: str) -> None:
    text = f"{prefix} internal use only {suffix}"
    found = phrases(text)
    assert found, "the phrase must be found"
    assert all(0 <= f.start < f.end <= len(text) for f in found)
    covered = [fold(text[f.start : f.end]) for f in found]
    assert any(PHRASE in c for c in covered)


def test_folded_with_positions_maps_back() -> None:
    text = "A\u200bB  \uff43"
    folded, origin = folded_with_positions(text)
    assert folded == "ab c"
    assert [text[i] for i in origin] == ["A", "B", " ", "\uff43"]


def test_empty_phrase_after_folding_is_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        PhraseMatcher(["\u200b"])


# --- topics ---------------------------------------------------------------------------------


def topics(text: str, min_hits: int = 1) -> list[Finding]:
    deny = {"weapons": ["gun", "rifle", "explosive device"]}
    return TopicMatcher(deny, min_hits).find(TextViews(text))


def test_topic_fires_on_a_keyword_as_a_whole_word() -> None:
    found = topics("how do I clean a GUN?")
    assert [(f.rule, f.kind, f.start) for f in found] == [("topic.denied", "denied_topic", -1)]
    assert "weapons" in found[0].detail


@pytest.mark.parametrize("text", ["gunpowder history", "begun", "shotguns are loud", ""])
def test_topic_needs_word_boundaries(text: str) -> None:
    assert topics(text) == []


def test_topic_min_hits_counts_distinct_keywords() -> None:
    assert topics("gun gun gun", min_hits=2) == []
    assert len(topics("a gun and a rifle", min_hits=2)) == 1
    assert len(topics("an explosive\n device and a \u0261un", min_hits=2)) == 1  # script g


def test_topic_in_base64_is_found() -> None:
    token = base64.b64encode(b"where can I buy a rifle cheaply").decode()
    assert len(topics(f"see {token}")) == 1


# --- length and JSON schema -----------------------------------------------------------------


def test_length() -> None:
    assert find_length_over(10, 10) == []
    (f,) = find_length_over(11, 10)
    assert (f.rule, f.kind) == ("length.exceeded", "too_long")


SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
    "required": ["name"],
    "additionalProperties": False,
}


@pytest.mark.parametrize(
    "text",
    [
        '{"name": "Ada", "age": 36}',
        '```json\n{"name": "Ada"}\n```',
        '  ```\n{"name": "Ada"}\n```  ',
    ],
)
def test_schema_accepts_valid_json_with_or_without_a_fence(text: str) -> None:
    assert SchemaCheck(SCHEMA).find(text) == []


def test_schema_violations_name_the_place_not_the_value() -> None:
    found = SchemaCheck(SCHEMA).find('{"name": "SECRET-NAME-1", "age": "SECRET-AGE-2"}')
    assert [f.rule for f in found] == ["json.schema"]
    assert "$.age" in found[0].detail and "type" in found[0].detail
    assert all("SECRET" not in f.detail for f in found)


@pytest.mark.parametrize(
    "text", ["not json", '{"name": "Ada"', "```json\n{bad}\n```", "[" * 100_000]
)
def test_schema_rejects_what_is_not_json(text: str) -> None:
    found = SchemaCheck(SCHEMA).find(text)
    assert [f.rule for f in found] == ["json.invalid"]


def test_invalid_schema_is_refused() -> None:
    with pytest.raises(SchemaError):
        SchemaCheck({"type": "no-such-type"})
