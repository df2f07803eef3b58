"""Prompt-injection and jailbreak detection (factor 10): curated rules plus a local classifier.

``find_injection(text)`` returns ``Finding`` s (rule ``injection.<name>``, kind
``prompt_injection`` or ``jailbreak``):

* ``override``: "ignore / disregard / forget (all) (previous / prior / above) instructions /
  rules / prompts", "forget everything above", and German, French, Spanish, Italian,
  Portuguese, Russian, Chinese, Japanese and Korean forms;
* ``role_hijack`` (jailbreak): "you are now DAN / unfiltered / free…", "do anything now",
  developer / god / jailbreak mode, "act as … without restrictions", "no ethical guidelines";
* ``prompt_leak``: "reveal / print / repeat your system prompt / initial instructions",
  "repeat the words above", "what are your instructions";
* ``role_tag``: chat-template and role delimiters in content (``<|im_start|>system``,
  ``[INST]``, ``<<SYS>>``, ``</system>``, ``### system:``, "BEGIN ADMIN OVERRIDE", a line that
  starts "SYSTEM: you …");
* ``tool_hijack``: retrieved text steering tools ("call the tool … now", "delete … the user has
  authorised it", "without asking the user", "do not tell the user");
* ``ai_address``: text addressed to the model reading it ("if you are an AI reading this",
  "note to the assistant", "important message from the user to you");
* ``classifier``: the local classifier (``_guard_injection_model``), ``score`` = probability,
  reported at or above ``threshold``.

The rules (``_guard_injection_rules``) run on the text, on ``fold(text)`` (look-alike letters,
invisible characters, fullwidth and accents undone) and on each of ``decoded_views(text)``
(base64, hex, percent-encoding, tag characters). A finding has positions in the original text
when the rule matched it as written, else -1/-1 (the whole content). ``detail`` never quotes
the text.
"""

from __future__ import annotations

import re
import string

from elevenfactor.governance._guard_injection_model import score as classifier_score
from elevenfactor.governance._guard_injection_rules import INJECTION_RULES, Clause, Rule
from elevenfactor.governance._guard_normalize import decoded_views, fold
from elevenfactor.governance._guard_types import Finding

__all__ = ["find_injection"]

_MAX_SPANS = 8  # positions reported per rule
_MAX_TRIGGERS = 64  # trigger positions per clause; past that the clause scans the whole text
_BEFORE, _AFTER = 200, 360  # the window a clause reads around a trigger
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1b\x7f]")
_PUNCTUATION = str.maketrans(dict.fromkeys(string.punctuation, " "))


class _Words:
    """The words of a lower-case text and their 5-character prefixes: whether a trigger can
    occur costs a set lookup instead of a scan of the text (most triggers are absent)."""

    __slots__ = ("prefixes", "text", "words")

    def __init__(self, text: str) -> None:
        self.text = text
        self.words = set(text.translate(_PUNCTUATION).split())
        self.prefixes = {w[:5] for w in self.words if len(w) > 5}

    def find(self, trigger: str) -> int:
        """Where ``trigger`` first occurs, or -1; answered from the word sets without scanning
        the text when its first word is neither a word of the text nor, from five letters
        on, the start of one."""
        first, _ = _HEADS[trigger]
        if first and first not in self.words and first[:5] not in self.prefixes:
            return -1
        return self.text.find(trigger)


def _head(trigger: str) -> tuple[str, bool]:
    """A trigger's first word ("" when it has none or is not ASCII)."""
    words = trigger.translate(_PUNCTUATION).split()
    if not words or not trigger.isascii():
        return "", False
    return words[0], True


_HEADS = {t: _head(t) for rule in INJECTION_RULES for c in rule.clauses for t in c.triggers}


def _clause_spans(clause: Clause, text: str, index: _Words) -> list[tuple[int, int]]:
    """Where ``clause`` matches: its pattern run in windows around its triggers (in ``text``
    for raw clauses, else in the lower-case text of ``index``)."""
    target = text if clause.raw else index.text
    haystack = index.text if not clause.raw or clause.pattern.flags & re.IGNORECASE else text
    positions: list[int] = []
    for trigger in clause.triggers:
        at = index.find(trigger) if haystack is index.text else haystack.find(trigger)
        while at >= 0 and len(positions) < _MAX_TRIGGERS:
            positions.append(at)
            at = haystack.find(trigger, at + 1)
    if not positions:
        return []
    windows: list[list[int]] = []
    for at in sorted(positions):
        lo, hi = max(0, at - _BEFORE), at + _AFTER
        if windows and lo <= windows[-1][1]:
            windows[-1][1] = hi
        else:
            windows.append([lo, hi])
    if len(positions) >= _MAX_TRIGGERS or sum(hi - lo for lo, hi in windows) >= len(target):
        windows = [[0, len(target)]]
    return [m.span() for lo, hi in windows for m in clause.pattern.finditer(target, lo, hi)]


def _spans(rule: Rule, text: str, index: _Words, *, raw: bool) -> list[tuple[int, int]]:
    return [
        span
        for clause in rule.clauses
        if raw or not clause.raw
        for span in _clause_spans(clause, text, index)
    ]


def _rule_findings(
    rule: Rule, text: str, lowered: _Words | None, folded: _Words | None, views: list[str]
) -> list[Finding]:
    name = f"injection.{rule.name}"
    if lowered is not None:
        spans = _spans(rule, text, lowered, raw=True)
        if spans:
            return [
                Finding(name, rule.kind, start, end, 1.0, rule.detail)
                for start, end in sorted(set(spans))[:_MAX_SPANS]
            ]
    if folded is not None and _spans(rule, folded.text, folded, raw=False):
        detail = f"{rule.detail} (after undoing look-alike or invisible characters)"
        return [Finding(name, rule.kind, detail=detail)]
    for view in views:
        folded_view = _Words(fold(view))
        if _spans(rule, view, _Words(view.lower()), raw=True) or _spans(
            rule, folded_view.text, folded_view, raw=False
        ):
            return [Finding(name, rule.kind, detail=f"{rule.detail} (inside an encoded segment)")]
    return []


def find_injection(text: str, *, threshold: float = 0.5, classifier: bool = True) -> list[Finding]:
    """Prompt-injection and jailbreak findings in ``text``: one or more per rule that matched
    (positions when it matched the text as written, else -1/-1) and, when ``classifier`` is
    true, ``injection.classifier`` with the probability as ``score`` when it is at least
    ``threshold``. Empty when nothing was found."""
    lower = text.lower()
    # a few characters lower-case to two: then positions are not reported
    lowered = _Words(lower) if len(lower) == len(text) else None
    # ASCII without control characters folds to itself up to case and spacing, which the
    # separator-tolerant rules already absorb: the folded pass is only for other text
    plain = text.isascii() and _CONTROL.search(text) is None
    folded = None if plain and lowered is not None else _Words(fold(text))
    views = decoded_views(text)
    findings: list[Finding] = []
    for rule in INJECTION_RULES:
        findings.extend(_rule_findings(rule, text, lowered, folded, views))
    if classifier:
        probability = max([classifier_score(text), *(classifier_score(v) for v in views)])
        if probability >= threshold:
            detail = f"local classifier probability {probability:.2f} >= {threshold:.2f}"
            findings.append(
                Finding("injection.classifier", "prompt_injection", -1, -1, probability, detail)
            )
    return findings
