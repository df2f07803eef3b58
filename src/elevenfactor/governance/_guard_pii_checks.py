"""Check digits and number plans behind the PII detectors (factor 10): Luhn and card networks,
the IBAN mod-97 check and country lengths, US SSN ranges, UK National Insurance prefixes, the
Spanish DNI/NIE letter and the French NIR key.

Pure functions over the *compact* value (separators removed); the detectors in
``_guard_pii`` and ``_guard_pii_ids`` find candidates and call these to keep precision high.
``shape``, ``candidate_starts`` and ``finditer_at`` let the detectors find those candidates
without running every pattern over the whole text.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator

__all__ = [
    "IBAN_LENGTHS",
    "Anchors",
    "candidate_starts",
    "card_network",
    "dni_valid",
    "finditer_at",
    "iban_valid",
    "keyword_near",
    "luhn_valid",
    "nino_valid",
    "nir_valid",
    "shape",
    "ssn_valid",
    "words_before",
]


def luhn_valid(digits: str) -> bool:
    """Whether ``digits`` (only ASCII digits) passes the Luhn (mod 10) check."""
    if not digits.isascii() or not digits.isdigit():
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


# (network, IIN ranges as (low, high) over the first len(low) digits, allowed lengths).
# Maestro (IINs 50, 56-69, lengths 12-19) is left out on purpose: its prefixes cover most
# numbers starting with 5 or 6, which would make any Luhn-valid long integer a "card".
_NETWORKS: tuple[tuple[str, tuple[tuple[str, str], ...], frozenset[int]], ...] = (
    ("Visa", (("4", "4"),), frozenset({13, 16, 19})),
    ("Mastercard", (("51", "55"), ("2221", "2720")), frozenset({16})),
    ("American Express", (("34", "34"), ("37", "37")), frozenset({15})),
    (
        "Discover",
        (("6011", "6011"), ("644", "649"), ("65", "65"), ("622126", "622925")),
        frozenset(range(16, 20)),
    ),
    ("JCB", (("3528", "3589"),), frozenset(range(16, 20))),
    (
        "Diners Club",
        (("300", "305"), ("3095", "3095"), ("36", "36"), ("38", "39")),
        frozenset(range(14, 20)),
    ),
    ("UnionPay", (("62", "62"),), frozenset(range(16, 20))),
)


def card_network(digits: str) -> str | None:
    """The network whose IIN range and length admit ``digits`` (no Luhn check), or None."""
    for name, ranges, lengths in _NETWORKS:
        if len(digits) not in lengths:
            continue
        for low, high in ranges:
            if low <= digits[: len(low)] <= high:
                return name
    return None


# ISO 13616 registry lengths (SWIFT IBAN registry) for the countries most often seen.
IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22,
    "BH": 22, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22,
    "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FO": 18, "FR": 27,
    "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28,
    "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20,
    "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MD": 24,
    "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15, "PK": 24,
    "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24, "SC": 31,
    "SE": 24, "SI": 19, "SK": 24, "SM": 27, "ST": 25, "SV": 28, "TL": 23, "TN": 24,
    "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}  # fmt: skip


def iban_valid(compact: str) -> bool:
    """Whether ``compact`` (upper case, no spaces) is an IBAN of a known country with the
    registered length and a valid ISO 13616 mod-97 check (the rearranged number mod 97 is 1)."""
    if len(compact) != IBAN_LENGTHS.get(compact[:2], -1):
        return False
    if not compact[2:4].isdigit() or not compact.isascii() or not compact.isalnum():
        return False
    rearranged = compact[4:] + compact[:4]
    remainder = 0
    for ch in rearranged:
        # Letters count as two digits (A=10 ... Z=35); fold as we go to stay in small ints.
        value = ord(ch) - 48 if ch.isdigit() else ord(ch) - 55
        remainder = (remainder * (100 if value > 9 else 10) + value) % 97
    return remainder == 1


# Numbers the SSA voided after they were printed in advertising (widely copied).
_VOID_SSNS = frozenset({"078051120", "219099999"})


def ssn_valid(digits: str) -> bool:
    """Whether nine digits can be a US Social Security number: area not 000, 666 or 9xx,
    group not 00, serial not 0000, and not one of the famous advertising numbers."""
    if len(digits) != 9 or not digits.isdigit():
        return False
    area, group, serial = digits[:3], digits[3:5], digits[5:]
    if area in ("000", "666") or area[0] == "9" or group == "00" or serial == "0000":
        return False
    return digits not in _VOID_SSNS


_NINO_FIRST = frozenset("ABCEGHJKLMNOPRSTWXYZ")  # not D F I Q U V
_NINO_SECOND = frozenset("ABCEGHJKLMNPRSTWXYZ")  # not D F I O Q U V
_NINO_BAD_PREFIX = frozenset({"BG", "GB", "KN", "NK", "NT", "TN", "ZZ"})


def nino_valid(compact: str) -> bool:
    """Whether ``compact`` (``AB123456C``) is a well-formed UK National Insurance number:
    allowed prefix letters, not an unallocated prefix, six digits, suffix A-D."""
    if len(compact) != 9:
        return False
    prefix, digits, suffix = compact[:2], compact[2:8], compact[8]
    return (
        prefix[0] in _NINO_FIRST
        and prefix[1] in _NINO_SECOND
        and prefix not in _NINO_BAD_PREFIX
        and digits.isascii()
        and digits.isdigit()
        and suffix in "ABCD"
    )


_DNI_LETTERS = "TRWAGMYFPDXBNJZSQVHLCKE"


def dni_valid(compact: str) -> bool:
    """Whether ``compact`` is a Spanish DNI (``12345678Z``) or NIE (``X1234567L``) whose
    control letter matches: number mod 23, with the NIE's X/Y/Z read as 0/1/2."""
    if len(compact) != 9:
        return False
    body, letter = compact[:8], compact[8]
    if body[0] in "XYZ":
        body = str("XYZ".index(body[0])) + body[1:]
    if not body.isascii() or not body.isdigit():
        return False
    return _DNI_LETTERS[int(body) % 23] == letter


def nir_valid(compact: str) -> bool:
    """Whether ``compact`` (15 characters) is a French NIR (numéro de sécurité sociale) whose
    key is ``97 - (first 13 digits mod 97)``; Corsican departments 2A/2B count as 19/18."""
    if len(compact) != 15:
        return False
    body, key = compact[:13], compact[13:]
    body = body[:5] + body[5:7].replace("2A", "19").replace("2B", "18") + body[7:]
    if not (body + key).isascii() or not (body + key).isdigit():
        return False
    return 97 - int(body) % 97 == int(key)


_WORD = re.compile(r"[^\W_]+|[#§]")


def words_before(text: str, start: int, n: int = 2, window: int = 48) -> list[str]:
    """The last ``n`` words (lower case; ``#`` and ``§`` count as words) in the ``window``
    characters before ``start``: the context the detectors use to tell a phone number from a
    part number or an address from a version."""
    return [w.lower() for w in _WORD.findall(text, max(0, start - window), start)][-n:]


def keyword_near(text: str, start: int, keywords: frozenset[str], n: int = 3) -> bool:
    """Whether one of ``keywords`` is among the last ``n`` words before ``start`` with no word
    holding a digit between it and ``start`` (``SSN 123456789``, not ``SSN 1, then 123456789``)."""
    for word in reversed(words_before(text, start, n)):
        if word in keywords:
            return True
        if any(ch.isdigit() for ch in word):
            return False
    return False


# --- candidates ---------------------------------------------------------------------------
# ``re`` runs a pattern at every character of its first-character class: over 2 KB of text
# that costs 10-20 µs per pattern even where nothing matches. ``bytes.find`` of a digit shape
# (``000-00-0000``) costs well under a microsecond, so the detectors look for the shape first
# and run their pattern only where it can start.

_SHAPE_TABLE = bytes.maketrans(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ", b"0" * 10 + b"A" * 26)
_ALNUM_SHAPES = frozenset(b"0Aabcdefghijklmnopqrstuvwxyz")

Anchors = tuple[tuple[bytes, tuple[int, ...]], ...]
"""Shape literals and their possible offsets from the start of a match: at least one of them
occurs in the shape of every match of the pattern they stand for."""


@functools.lru_cache(maxsize=1)
def shape(text: str) -> bytes:
    """One byte per character of ``text``: ASCII digits become ``0``, ASCII capitals ``A``,
    other ASCII stays, anything else is ``?`` (the patterns are ASCII-only). Cached for the
    last text only: every detector asks for the shape of the text ``find_pii`` is scanning,
    and ``find_pii`` clears it when it returns, so no scanned text stays in the cache."""
    return text.encode("ascii", "replace").translate(_SHAPE_TABLE)


def candidate_starts(text: str, anchors: Anchors) -> list[int] | None:
    """Sorted positions where a match can start: an anchor occurs at one of its offsets and
    no ASCII letter or digit comes before (every pattern using this rules that out with its
    lookbehind). None when the anchors occur so often (dense digits) that scanning the whole
    text is cheaper."""
    s = shape(text)
    budget = 32 + len(s) // 32
    starts: set[int] = set()
    for literal, offsets in anchors:
        i = s.find(literal)
        while i >= 0:
            budget -= 1
            if budget < 0:
                return None
            for offset in offsets:
                p = i - offset
                if p == 0 or (p > 0 and s[p - 1] not in _ALNUM_SHAPES):
                    starts.add(p)
            i = s.find(literal, i + 1)
    return sorted(starts)


def finditer_at(
    pattern: re.Pattern[str], text: str, starts: list[int] | None
) -> Iterator[re.Match[str]]:
    """``pattern.finditer(text)`` trying the pattern only at ``starts`` (all of them when
    None). The same matches as long as ``starts`` holds every position where one can begin:
    ``match`` at a position sees the text before it, so lookbehinds behave as in a scan."""
    if starts is None:
        yield from pattern.finditer(text)
        return
    pos = 0
    for p in starts:
        if p >= pos and (m := pattern.match(text, p)) is not None:
            yield m
            pos = m.end()
