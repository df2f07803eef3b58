"""Content detectors of the guard pipeline (factor 10): denied phrases and patterns, denied
topics, length limits and JSON-schema conformance. Each returns ``Finding`` s whose ``detail``
names the policy entry that matched (``deny[2]``, ``topic 'weapons'``), never the text.

**Phrases** (``PhraseMatcher``) are searched case-insensitively as substrings in four readings
of the content: the text as written, the text folded by ``_guard_normalize.fold`` (NFKC, case
folding, homoglyphs to ASCII, invisible characters removed, whitespace collapsed), and every
segment ``decoded_views`` decodes (base64, hex, percent-encoding), folded. Regular expressions
(``patterns``) run case-insensitively on the same readings. ``fold`` does not preserve
positions, so a hit is located in the original text by folding it character by character
(with the same whitespace collapsing) and mapping each folded character back to its source.
When that cannot place a hit (the fold of a character sequence differs from the fold of its
characters, e.g. composing accents) **the whole line holding it** is the finding; a hit only
in a decoded segment marks the encoded token (the run of non-space characters) that decodes to
it; failing both, the whole content. Redacting a phrase therefore may mask more than the
phrase, never less.

**Topics** (``TopicMatcher``) fire when ``min_hits`` distinct keywords of one topic appear as
whole words (no letter, digit or underscore on either side) in the folded text or a decoded
segment. **Length** counts characters. **JSON schema** (``SchemaCheck``) strips one
surrounding Markdown code fence (```` ```json ````), parses the rest as JSON and validates it
with ``jsonschema`` (the schema's ``$schema`` dialect, else 2020-12); details name the failing
keyword and the location (``$.items[0]``), never the offending value.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.validators import validator_for

from elevenfactor.governance._guard_normalize import decoded_views, fold
from elevenfactor.governance._guard_types import Finding

__all__ = [
    "PhraseMatcher",
    "SchemaCheck",
    "TextViews",
    "TopicMatcher",
    "find_length_over",
    "folded_with_positions",
]

_TOKEN = re.compile(r"\S+")
_LINE = re.compile(r"[^\r\n]+")
_FENCE = re.compile(r"\A\s*```[A-Za-z0-9_-]*[ \t]*\r?\n(.*?)\r?\n?```\s*\Z", re.DOTALL)
_MAX_SCHEMA_FINDINGS = 10


class TextViews:
    """One content and its normalised readings, computed once per check and shared by every
    rule that needs them: ``folded`` (``fold(text)``) and ``decoded`` (each decoded segment,
    folded)."""

    __slots__ = ("_decoded", "_folded", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self._folded: str | None = None
        self._decoded: tuple[str, ...] | None = None

    @property
    def folded(self) -> str:
        """``fold(text)``."""
        if self._folded is None:
            self._folded = fold(self.text)
        return self._folded

    @property
    def decoded(self) -> tuple[str, ...]:
        """The folded text of every segment ``decoded_views`` decodes."""
        if self._decoded is None:
            self._decoded = tuple(fold(view) for view in decoded_views(self.text))
        return self._decoded


@lru_cache(maxsize=8192)
def _fold_char(char: str) -> str:
    return " " if char.isspace() else fold(char)


def folded_with_positions(text: str) -> tuple[str, list[int]]:
    """``text`` folded character by character (whitespace runs collapsed to one space) and,
    for every folded character, the index of the character of ``text`` it came from."""
    out: list[str] = []
    origin: list[int] = []
    for i, char in enumerate(text):
        piece = _fold_char(char)
        if piece == " " and (not out or out[-1] == " "):
            continue
        for ch in piece:
            out.append(ch)
            origin.append(i)
    return "".join(out), origin


def _phrase_regex(phrase: str) -> re.Pattern[str]:
    words = fold(phrase).split()
    if not words:
        raise ValueError("a denied phrase is empty after normalisation")
    return re.compile(r"\s+".join(re.escape(w) for w in words))


class PhraseMatcher:
    """Denied phrases and regular expressions (see the module docstring). Compiles once;
    ``find`` is cheap when nothing matches (one combined search per reading)."""

    def __init__(self, deny: Sequence[str], patterns: Sequence[str] = ()) -> None:
        named: list[tuple[str, str, re.Pattern[str]]] = []
        for i, phrase in enumerate(deny):
            named.append(("phrase.denied", f"deny[{i}]", _phrase_regex(phrase)))
        for i, pattern in enumerate(patterns):
            named.append(("phrase.pattern", f"patterns[{i}]", re.compile(pattern, re.IGNORECASE)))
        self._named = named
        phrases = [rx.pattern for rule, _, rx in named if rule == "phrase.denied"]
        self._any_phrase = re.compile("|".join(phrases)) if phrases else None

    def find(self, views: TextViews) -> list[Finding]:
        """A finding per located hit of every phrase and pattern, sorted by position."""
        plain = self._hits([views.folded], views.text)
        decoded = self._hits(views.decoded) if views.decoded else set()
        if not plain and not decoded:
            return []
        text = views.text
        mapped: tuple[str, list[int]] | None = None
        found: dict[tuple[int, int, str], Finding] = {}
        for i in sorted(plain | decoded):
            rule, where, rx = self._named[i]
            spans: set[tuple[int, int]] = set()
            if i in plain:
                if rule == "phrase.pattern":
                    spans |= {m.span() for m in rx.finditer(text) if m.end() > m.start()}
                mapped = mapped or folded_with_positions(text)
                spans |= _mapped_spans(rx, *mapped)
                spans = spans or _line_spans(rx, text)
            if i in decoded:
                spans |= _token_spans(rx, text)
            detail = f"matches {where}" + ("" if i in plain else " inside encoded text")
            for start, end in spans or {(0, len(text))}:
                kind = "denied_phrase" if rule == "phrase.denied" else "denied_pattern"
                found.setdefault((start, end, where), Finding(rule, kind, start, end, 1.0, detail))
        return sorted(found.values(), key=lambda f: (f.start, f.end, f.detail))

    def _hits(self, folded: Sequence[str], raw: str | None = None) -> set[int]:
        """Indices of the phrases and patterns found: phrases (folded already) in the
        ``folded`` readings, patterns there and in ``raw``, the text as written."""
        hits: set[int] = set()
        readings = [*folded, raw] if raw is not None else list(folded)
        any_phrase = self._any_phrase
        phrase_hit = any_phrase is not None and any(any_phrase.search(r) for r in folded)
        for i, (rule, _, rx) in enumerate(self._named):
            if rule == "phrase.denied":
                if phrase_hit and any(rx.search(r) for r in folded):
                    hits.add(i)
            elif any(rx.search(r) for r in readings):
                hits.add(i)
        return hits


def _mapped_spans(rx: re.Pattern[str], folded: str, origin: list[int]) -> set[tuple[int, int]]:
    return {
        (origin[m.start()], origin[m.end() - 1] + 1)
        for m in rx.finditer(folded)
        if m.end() > m.start()
    }


def _line_spans(rx: re.Pattern[str], text: str) -> set[tuple[int, int]]:
    return {m.span() for m in _LINE.finditer(text) if rx.search(fold(m.group()))}


def _token_spans(rx: re.Pattern[str], text: str) -> set[tuple[int, int]]:
    spans: set[tuple[int, int]] = set()
    for m in _TOKEN.finditer(text):
        if any(rx.search(fold(view)) for view in decoded_views(m.group())):
            spans.add(m.span())
    return spans


class TopicMatcher:
    """Denied topics: a topic fires when ``min_hits`` of its distinct keywords appear as whole
    words in the folded text or a decoded segment."""

    def __init__(self, deny: Mapping[str, Sequence[str]], min_hits: int = 1) -> None:
        self._min_hits = min_hits
        self._topics: list[tuple[str, re.Pattern[str]]] = []
        for name, keywords in deny.items():
            words = sorted({" ".join(fold(k).split()) for k in keywords} - {""}, key=len)
            if not words:
                raise ValueError(f"topic {name!r} has no keywords after normalisation")
            body = "|".join(r"\s+".join(map(re.escape, w.split())) for w in reversed(words))
            self._topics.append((name, re.compile(rf"(?<!\w)(?:{body})(?!\w)", re.IGNORECASE)))

    def find(self, views: TextViews) -> list[Finding]:
        """A whole-content finding per topic with enough keyword hits."""
        readings = [views.folded, *views.decoded]
        found: list[Finding] = []
        for name, rx in self._topics:
            hits = {" ".join(m.group().lower().split()) for r in readings for m in rx.finditer(r)}
            if len(hits) >= self._min_hits:
                detail = f"topic {name!r}: {len(hits)} of its keywords"
                found.append(Finding("topic.denied", "denied_topic", detail=detail))
        return found


def find_length_over(length: int, max_chars: int) -> list[Finding]:
    """A finding when ``length`` characters exceed ``max_chars``."""
    if length <= max_chars:
        return []
    detail = f"{length} characters, over the limit of {max_chars}"
    return [Finding("length.exceeded", "too_long", detail=detail)]


class SchemaCheck:
    """Validates that content is JSON conforming to a JSON Schema. Raises
    ``jsonschema.SchemaError`` when the schema itself is invalid."""

    def __init__(self, schema: dict[str, Any]) -> None:
        cls = validator_for(schema, default=Draft202012Validator)
        cls.check_schema(schema)
        self._validator = cls(schema, format_checker=cls.FORMAT_CHECKER)

    def find(self, text: str) -> list[Finding]:
        """Findings when ``text`` (one optional code fence stripped) is not JSON
        (``json.invalid``) or breaks the schema (``json.schema``, one per error, at most 10)."""
        fenced = _FENCE.match(text)
        body = fenced.group(1) if fenced else text
        try:
            document = json.loads(body)
        except (ValueError, RecursionError) as exc:
            line = getattr(exc, "lineno", "?")
            col = getattr(exc, "colno", "?")
            detail = f"not valid JSON (line {line}, column {col})"
            return [Finding("json.invalid", "json_invalid", detail=detail)]
        errors = sorted(self._validator.iter_errors(document), key=lambda e: list(e.path))
        return [
            Finding("json.schema", "json_schema", detail=f"{e.json_path}: fails {e.validator!r}")
            for e in errors[:_MAX_SCHEMA_FINDINGS]
        ]
