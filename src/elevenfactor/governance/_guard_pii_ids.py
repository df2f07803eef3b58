"""National identification numbers (factor 10): US SSN, UK National Insurance number,
Spanish DNI/NIE and French NIR.

* ``us_ssn``: ``123-45-6789`` always (outside product-code context); ``123 45 6789`` and a
  bare ``123456789`` only after *SSN* / *social security* (a 9-digit integer is far more often
  something else). Invalid ranges are never reported: area 000, 666 or 9xx, group 00,
  serial 0000, and the voided advertising numbers 078-05-1120 and 219-09-9999.
* ``uk_nino``: ``AB 12 34 56 C`` / ``AB123456C``; allocated prefix letters only, suffix A-D.
* ``es_dni``: DNI ``12345678Z`` and NIE ``X1234567L`` (optionally ``-``/space before the
  letter), with the mod-23 control letter checked. Upper case only.
* ``fr_nir``: ``1 84 12 76 451 089 46`` or 15 characters run together; sex digit 1, 2, 7 or 8,
  a plausible month, Corsica's 2A/2B, and the mod-97 key checked.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

from elevenfactor.governance._guard_pii_checks import (
    Anchors,
    candidate_starts,
    dni_valid,
    finditer_at,
    keyword_near,
    nino_valid,
    nir_valid,
    ssn_valid,
    words_before,
)
from elevenfactor.governance._guard_pii_phone import CODE_WORDS
from elevenfactor.governance._guard_types import Finding

__all__ = ["ID_FINDERS"]

_END = r"(?![\w-]|[.,/:]\d)"
_SSN_DASHED = re.compile(r"\d(?<![\w\-.]\d)\d{2}([- ])\d{2}\1\d{4}" + _END, re.ASCII)
_SSN_BARE = re.compile(r"\d(?<![\w\-.]\d)\d{8}" + _END, re.ASCII)
_SSN_WORDS = frozenset({"ssn", "ssns", "social", "security", "ss"})
_NINO = re.compile(r"[A-Z](?<![\w-][A-Z])[A-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D](?![\w-])", re.ASCII)
_DNI = re.compile(
    r"[0-9XYZ](?<![\w-][0-9XYZ])(?:(?<=\d)\d{7}|(?<=[XYZ])-?\d{7})[- ]?[A-Z](?![\w-])", re.ASCII
)
_NIR = re.compile(
    r"[1278](?<![\w-][1278]) ?\d{2} ?\d{2} ?(?:\d{2}|2[AB]) ?\d{3} ?\d{3} ?\d{2}" + _END, re.ASCII
)
_NOT_ALNUM = re.compile(r"[^0-9A-Z]")
# Where each pattern can start (see ``candidate_starts``); when the text is too dense in digits
# for that to pay, the patterns scan it, so each starts with the character it consumes first
# and checks the one before it with a lookbehind placed after it (a lookbehind first would
# make ``re`` try the pattern at every position instead of skipping ahead).
_SSN_DASHED_ANCHORS: Anchors = ((b"000-00-0000", (0,)), (b"000 00 0000", (0,)))
_SSN_BARE_ANCHORS: Anchors = ((b"000000000", (0,)),)
_NINO_ANCHORS: Anchors = ((b"AA00", (0,)), (b"AA 00", (0,)))
_DNI_ANCHORS: Anchors = ((b"00000000", (0,)), (b"A0000000", (0,)), (b"A-0000000", (0,)))
# The NIR's last 8 digits ("451 089 46", spaces optional) start 7 to 11 characters in.
_NIR_ANCHORS: Anchors = tuple(
    (tail, (7, 8, 9, 10, 11)) for tail in (b"00000000", b"000 00000", b"000000 00", b"000 000 00")
)


def _compact(value: str) -> str:
    return _NOT_ALNUM.sub("", value)


def _finding(kind: str, start: int, end: int, detail: str, score: float = 1.0) -> Finding:
    return Finding(f"pii.{kind}", kind, start, end, score, detail)


def _code_context(text: str, start: int) -> bool:
    return any(w in CODE_WORDS for w in words_before(text, start, 2))


def _ssn(text: str) -> Iterator[Finding]:
    for m in finditer_at(_SSN_DASHED, text, candidate_starts(text, _SSN_DASHED_ANCHORS)):
        if not ssn_valid(_compact(m.group())) or _code_context(text, m.start()):
            continue
        if m.group(1) == " " and not keyword_near(text, m.start(), _SSN_WORDS):
            continue
        yield _finding("us_ssn", m.start(), m.end(), "US social security number", 0.9)
    for m in finditer_at(_SSN_BARE, text, candidate_starts(text, _SSN_BARE_ANCHORS)):
        if ssn_valid(m.group()) and keyword_near(text, m.start(), _SSN_WORDS):
            yield _finding("us_ssn", m.start(), m.end(), "US SSN (after an SSN keyword)", 0.8)


def _nino(text: str) -> Iterator[Finding]:
    for m in finditer_at(_NINO, text, candidate_starts(text, _NINO_ANCHORS)):
        if nino_valid(_compact(m.group())) and not _code_context(text, m.start()):
            yield _finding("uk_nino", m.start(), m.end(), "UK National Insurance number", 0.9)


def _dni(text: str) -> Iterator[Finding]:
    for m in finditer_at(_DNI, text, candidate_starts(text, _DNI_ANCHORS)):
        compact = _compact(m.group())
        if dni_valid(compact):
            what = "NIE" if compact[0] in "XYZ" else "DNI"
            yield _finding("es_dni", m.start(), m.end(), f"Spanish {what}, control letter valid")


def _nir(text: str) -> Iterator[Finding]:
    for m in finditer_at(_NIR, text, candidate_starts(text, _NIR_ANCHORS)):
        compact = _compact(m.group())
        month = int(compact[3:5])
        if not (1 <= month <= 12 or 20 <= month <= 42 or month >= 50):
            continue
        if nir_valid(compact):
            yield _finding("fr_nir", m.start(), m.end(), "French NIR, key valid")


ID_FINDERS: dict[str, Callable[[str], Iterator[Finding]]] = {
    "us_ssn": _ssn,
    "uk_nino": _nino,
    "es_dni": _dni,
    "fr_nir": _nir,
}
"""Finder per national-id kind."""
