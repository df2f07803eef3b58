"""Redaction with reversible placeholders (factor 10): the provider sees ``[EMAIL_1]``, the user
sees their own address again in the answer.

``redact(text, findings, mode="placeholder")`` replaces each finding with a placeholder
(``[EMAIL_1]``, ``[CARD_2]``, ``[SECRET_1]``): the same value gets the same placeholder, and
passing the ``PlaceholderMap`` of an earlier ``Redaction`` keeps numbering and placeholders
stable across the messages of one conversation. ``restore(answer, redaction)`` puts the values
back; ``StreamRestorer`` does the same over a stream of chunks, where a placeholder may arrive
split across chunks. ``mode="mask"`` writes ``[REDACTED:<kind>]`` and keeps nothing.
Placeholders are restored only when the model returns them verbatim (``[EMAIL_1]``; not
``EMAIL_1`` or ``[email_1]``), so a model that mangles one shows the user the placeholder,
never someone else's value.

Overlapping findings are merged: the union of their spans is replaced (so no part of either
value leaks), labelled by the most severe finding (secrets, then cards/bank/national ids, then
contact data, then addresses), the longer one on a tie.

**The mapping never leaves the process by accident.** ``PlaceholderMap`` holds the real values;
its ``repr``/``str`` show only placeholders, it refuses ``pickle``/``copy`` and has no
``to_dict``, and JSON encoders reject it (it is not a ``dict``). There is deliberately no
``to_vault()``/``from_vault()``: the gateway restores within the request that redacted, so the
map lives exactly as long as that request. A durable run that must restore after a restart
will need an encrypted, expiring vault with an audit trail; that belongs in its own module,
not in an innocent-looking serialiser here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal, NoReturn

from elevenfactor.governance._guard_types import Finding

__all__ = [
    "PlaceholderMap",
    "Redaction",
    "StreamRestorer",
    "label_for",
    "merge_findings",
    "redact",
    "restore",
]

_LABELS = {
    "email": "EMAIL",
    "phone": "PHONE",
    "payment_card": "CARD",
    "iban": "IBAN",
    "us_ssn": "SSN",
    "uk_nino": "NINO",
    "es_dni": "DNI",
    "fr_nir": "NIR",
    "ipv4": "IP",
    "ipv6": "IP",
}
_SEVERITY = {
    "ipv4": 1,
    "ipv6": 1,
    "email": 2,
    "phone": 2,
    "payment_card": 3,
    "iban": 3,
    "us_ssn": 3,
    "uk_nino": 3,
    "es_dni": 3,
    "fr_nir": 3,
}
_SECRET_SEVERITY = 4  # any ``secret.*`` rule
_NOT_LABEL = re.compile(r"[^A-Z0-9]+")
_PLACEHOLDER = re.compile(r"\[[A-Z][A-Z0-9]*_[1-9][0-9]*\]")


def label_for(finding: Finding) -> str:
    """The placeholder label of a finding's kind: ``EMAIL``, ``CARD``, ``SECRET`` (every
    secret), or the kind in upper case for kinds this module does not know."""
    if finding.rule.startswith("secret."):
        return "SECRET"
    known = _LABELS.get(finding.kind)
    if known is not None:
        return known
    label = _NOT_LABEL.sub("", finding.kind.upper())
    return label if label[:1].isalpha() else f"PII{label}"


def _severity(finding: Finding) -> int:
    if finding.rule.startswith("secret."):
        return _SECRET_SEVERITY
    return _SEVERITY.get(finding.kind, 2)


class PlaceholderMap:
    """Placeholder → original value for one conversation. Its ``repr`` never shows a value,
    and it cannot be pickled or copied; read values with ``value_of`` or ``restore``."""

    __slots__ = ("_by_placeholder", "_by_value", "_counters")

    def __init__(self) -> None:
        self._by_placeholder: dict[str, str] = {}
        self._by_value: dict[tuple[str, str], str] = {}
        self._counters: dict[str, int] = {}

    def placeholder_for(self, label: str, value: str, avoid: str = "") -> str:
        """The placeholder of ``value`` under ``label``, allocating the next free number (one
        that does not already occur in ``avoid``, the text being redacted) on first sight."""
        existing = self._by_value.get((label, value))
        if existing is not None:
            return existing
        n = self._counters.get(label, 0)
        while True:
            n += 1
            placeholder = f"[{label}_{n}]"
            if placeholder not in avoid:
                break
        self._counters[label] = n
        self._by_value[(label, value)] = placeholder
        self._by_placeholder[placeholder] = value
        return placeholder

    def value_of(self, placeholder: str) -> str | None:
        """The original value behind ``placeholder``, or None if this map did not issue it."""
        return self._by_placeholder.get(placeholder)

    @property
    def placeholders(self) -> tuple[str, ...]:
        """Every placeholder issued so far (safe to log: no values)."""
        return tuple(self._by_placeholder)

    def __len__(self) -> int:
        return len(self._by_placeholder)

    def __contains__(self, placeholder: object) -> bool:
        return placeholder in self._by_placeholder

    def __repr__(self) -> str:
        return f"PlaceholderMap({len(self)} values: {', '.join(self._by_placeholder)})"

    __str__ = __repr__

    def _refuse(self, *args: object) -> NoReturn:
        raise TypeError("PlaceholderMap holds redacted values and cannot be serialised or copied")

    __reduce__ = __reduce_ex__ = __getstate__ = __copy__ = __deepcopy__ = _refuse


@dataclass(frozen=True, slots=True)
class Redaction:
    """The result of ``redact``: the rewritten ``text``, the merged ``findings`` (positions in
    the original text), the ``mode`` and, in placeholder mode, the ``mapping`` to restore
    with (never shown by ``repr``)."""

    text: str
    findings: tuple[Finding, ...]
    mode: Literal["mask", "placeholder"]
    mapping: PlaceholderMap = field(default_factory=PlaceholderMap, repr=False, compare=False)

    def restore(self, answer: str) -> str:
        """``restore(answer, self)``."""
        return restore(answer, self)


def merge_findings(findings: Iterable[Finding]) -> list[Finding]:
    """Positioned findings with overlaps merged: each group of overlapping findings becomes one
    finding spanning their union, with the rule, kind and detail of the most severe (then
    longest) member. Whole-content findings (``start == -1``) are dropped."""
    spans = sorted(
        (f for f in findings if f.start >= 0), key=lambda f: (f.start, -(f.end - f.start))
    )
    merged: list[Finding] = []
    group: list[Finding] = []
    group_end = -1
    for f in [*spans, None]:
        if f is not None and group and f.start < group_end:
            group.append(f)
            group_end = max(group_end, f.end)
            continue
        if group:
            best = max(group, key=lambda g: (_severity(g), g.end - g.start))
            score = max(g.score for g in group)
            detail = best.detail + (f" (merged {len(group)} findings)" if len(group) > 1 else "")
            merged.append(Finding(best.rule, best.kind, group[0].start, group_end, score, detail))
        if f is not None:
            group, group_end = [f], f.end
    return merged


def redact(
    text: str,
    findings: Iterable[Finding],
    *,
    mode: Literal["mask", "placeholder"] = "placeholder",
    mapping: PlaceholderMap | None = None,
) -> Redaction:
    """``text`` with every positioned finding replaced. ``placeholder`` mode writes stable
    placeholders and records them in ``mapping`` (a new one unless given: pass the previous
    ``Redaction.mapping`` to keep placeholders stable across a conversation); ``mask`` mode
    writes ``[REDACTED:<kind>]`` and records nothing. A finding outside the text raises
    ``ValueError``."""
    if mode not in ("mask", "placeholder"):
        raise ValueError(f"unknown redaction mode {mode!r}; expected 'mask' or 'placeholder'")
    merged = merge_findings(findings)
    if merged and merged[-1].end > len(text):
        raise ValueError(f"finding {merged[-1].rule} ends at {merged[-1].end}, past the text")
    mapping = PlaceholderMap() if mapping is None else mapping
    parts: list[str] = []
    pos = 0
    for f in merged:
        parts.append(text[pos : f.start])
        if mode == "mask":
            parts.append(f"[REDACTED:{f.kind}]")
        else:
            parts.append(mapping.placeholder_for(label_for(f), text[f.start : f.end], text))
        pos = f.end
    parts.append(text[pos:])
    return Redaction("".join(parts), tuple(merged), mode, mapping)


def restore(text: str, redaction: Redaction | PlaceholderMap) -> str:
    """``text`` (typically the model's answer) with every placeholder the redaction issued
    replaced by its original value, in one pass (a restored value is never scanned again).
    Unknown placeholders and look-alikes are left as they are."""
    mapping = redaction.mapping if isinstance(redaction, Redaction) else redaction
    if not len(mapping) or "[" not in text:
        return text

    def value(m: re.Match[str]) -> str:
        found = mapping.value_of(m.group())
        return m.group() if found is None else found

    return _PLACEHOLDER.sub(value, text)


class StreamRestorer:
    """Restores placeholders in a stream of text chunks. A placeholder split across chunks is
    held back (at most the longest placeholder's length minus one character) until it is
    complete or proven not to be one; everything else is passed on at once.

    ``feed(chunk)`` returns the text that is safe to emit; ``flush()`` returns the rest at
    the end of the stream."""

    def __init__(self, redaction: Redaction | PlaceholderMap) -> None:
        self._mapping = redaction.mapping if isinstance(redaction, Redaction) else redaction
        self._held = ""
        self._known = -1  # len(mapping) the prefix table was built for (maps only grow)
        self._longest = 0
        self._prefixes: frozenset[str] = frozenset()

    def feed(self, chunk: str) -> str:
        """The restored text that is safe to emit after ``chunk``; a possible placeholder
        start at the end is held back for the next call."""
        if self._known != len(self._mapping):
            self._sync()
        text = self._held + chunk
        cut = text.rfind("[", max(0, len(text) - self._longest + 1))
        if cut >= 0 and text[cut:] in self._prefixes:
            self._held, text = text[cut:], text[:cut]
        else:
            self._held = ""
        return restore(text, self._mapping)

    def flush(self) -> str:
        """The held-back tail, restored as far as it goes (the stream has ended)."""
        text, self._held = self._held, ""
        return restore(text, self._mapping)

    def _sync(self) -> None:
        placeholders = self._mapping.placeholders
        self._known = len(placeholders)
        self._longest = max((len(p) for p in placeholders), default=0)
        self._prefixes = frozenset(p[:i] for p in placeholders for i in range(1, len(p)))
