"""Phone numbers (factor 10): international E.164 numbers and the common national formats.

Phone numbers have no check digit, so precision comes from shape and context:

* **International** (``+44 20 7946 0958``, ``+1 (415) 555-2671``, ``+14155552671``): a ``+``,
  8 to 15 digits in total (the E.164 maximum), single separators (space, dot, dash), at most
  one pair of parentheses holding only digits. Always reported.
* **North American** (``(415) 555-2671``, ``415-555-2671``, ``415.555.2671``, ``1-800-…``):
  area code and exchange start with 2-9; the two separators match unless the area code is in
  parentheses. The space-only form (``415 555 2671``) is a phone only when a phone word
  (*call*, *phone*, *tel*, *mobile*, *number*, …) is among the four words before it, because
  ``256 512 1024`` is a list of numbers far more often than a phone number.
* **National trunk-0** (``020 7946 0958``, ``06 12 34 56 78``, ``030 1234567``,
  ``(089) 123 4567``, ``089/1234567``): a leading 0, at least one separator, 9 to 12 digits.

Never a phone: plain digit runs without separators (order numbers, ids), dates (``01.02.2023``
has 8 digits; ``2023-10-15`` does not start a phone group), times, version strings, prices,
and national forms whose nearest words are *order*, *invoice*, *sku*, *isbn*, *part*, *ref*,
*serial*, *tracking*, *account*, *id*, ``#``… (product and reference codes) or name another
identifier (*SSN*, *IBAN*, *card*, *passport*, *VAT*…) — unless a phone word is nearer. A ``00``
international prefix is read as a trunk-0 national number.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterator

from elevenfactor.governance._guard_pii_checks import (
    Anchors,
    candidate_starts,
    finditer_at,
    keyword_near,
    words_before,
)
from elevenfactor.governance._guard_types import Finding

__all__ = ["CODE_WORDS", "find_phones"]

# _INTL and _NANP start with the character they consume first and check the one before it with
# a lookbehind placed after it: a lookbehind first would keep ``re`` from skipping to the
# characters a number can start with, and make it try the pattern at every position.
# _NANP reads its first character ``[(1-9]`` back with lookbehinds to tell its forms apart.
# _NATIONAL only runs where _NATIONAL_ZERO / _NATIONAL_PAREN say it can start.
_INTL = re.compile(r"\+(?<![\w+]\+)[1-9][\d ().-]{6,22}\d(?![\w-]|[.,/:]\d)", re.ASCII)
_NANP = re.compile(
    r"[(1-9](?<![\w+.\-/#$€£¥][(1-9])(?:(?<=1)([ .-])[(2-9])?"
    r"(?:(?<=\()[2-9]\d{2}\) ?|(?<=[2-9])\d{2}([ .-]))"
    r"[2-9]\d{2}([ .-])\d{4}(?![\w-]|[.,/:]\d)",
    re.ASCII,
)
_NATIONAL = re.compile(
    r"(?<![\w+.\-/#$€£¥,])(\(0\d{1,4}\) ?|0\d{1,4}[ ./-])\d{2,8}(?:[ .-]\d{2,8}){0,3}"
    r"(?![\w-]|[.,/:]\d)",
    re.ASCII,
)
# Exchange and line number ("555-2671") sit 4 to 8 characters after the start of a NANP number.
_NANP_ANCHORS: Anchors = tuple(
    (b"000" + sep + b"0000", (4, 5, 6, 7, 8)) for sep in (b" ", b".", b"-")
)
_NATIONAL_ZERO = re.compile(r"0(?<![\w+.\-/#$€£¥,]0)", re.ASCII)  # where _NATIONAL can start
_NATIONAL_PAREN = re.compile(r"\((?<![\w+.\-/#$€£¥,]\()(?=0)", re.ASCII)
_DOUBLE_SEP = re.compile(r"[ .-]{2}|\)\(|[.-]\)|\([.-]")
_PARENS = re.compile(r"\(\d+\)")
_SEPS = re.compile(r"(?<=\d)[ .-](?=\d)", re.ASCII)

CODE_WORDS = frozenset(
    "isbn issn sku ean upc order invoice inv serial sn part pn ref reference tracking model "  # noqa: SIM905 - word list
    "item product account acct policy case ticket batch lot version ver build id no nr "
    "# code patent claim".split()
)
"""Words that, right before a digit group, make it a product or reference code."""
_PHONE_WORDS = frozenset(
    "call phone tel telephone mobile cell cellphone fax contact number reach text sms "  # noqa: SIM905 - word list
    "whatsapp ph ring dial hotline landline".split()
)


_ID_WORDS = frozenset(
    "ssn social security nino nie dni nir iban bic swift card passport licence license vat "  # noqa: SIM905 - word list
    "tax ein tin".split()
)


def _finding(start: int, end: int, detail: str, score: float) -> Finding:
    return Finding("pii.phone", "phone", start, end, score, detail)


def _is_code(text: str, start: int) -> bool:
    before = words_before(text, start, 2)
    if any(w in _PHONE_WORDS for w in before):
        return False
    return any(w in CODE_WORDS or w in _ID_WORDS for w in before)


def _international(text: str) -> Iterator[Finding]:
    for m in _INTL.finditer(text):
        value = m.group()
        digits = sum(ch.isdigit() for ch in value)
        if not 8 <= digits <= 15 or _DOUBLE_SEP.search(value):
            continue
        opens, closes = value.count("("), value.count(")")
        if opens != closes or opens > 1 or (opens and not _PARENS.search(value)):
            continue
        yield _finding(m.start(), m.end(), "international phone number", 0.95)


def _north_american(text: str) -> Iterator[Finding]:
    for m in finditer_at(_NANP, text, candidate_starts(text, _NANP_ANCHORS)):
        area_sep, exch_sep = m.group(2), m.group(3)
        if area_sep is not None and area_sep != exch_sep:
            continue
        if _is_code(text, m.start()):
            continue
        spaces_only = "(" not in m.group() and exch_sep == " "
        if spaces_only and not keyword_near(text, m.start(), _PHONE_WORDS, 4):
            continue
        yield _finding(m.start(), m.end(), "North American phone number", 0.85)


def _national(text: str) -> Iterator[Finding]:
    starts = [m.start() for rx in (_NATIONAL_ZERO, _NATIONAL_PAREN) for m in rx.finditer(text)]
    for m in finditer_at(_NATIONAL, text, sorted(starts)):
        value = m.group()
        digits = sum(ch.isdigit() for ch in value)
        while digits > 12:  # "020 7946 0958 2023": the year is not part of the number
            cut = max(value.rfind(" "), value.rfind("."), value.rfind("-"))
            if cut < len(m.group(1)):
                break
            digits -= sum(ch.isdigit() for ch in value[cut:])
            value = value[:cut]
        if not 9 <= digits <= 12 or value.startswith("000") or _is_code(text, m.start()):
            continue
        # Subscriber groups share one separator ("020 7946 0958", not "020 79-46.0958").
        if len(set(_SEPS.findall(value)[1:])) > 1:
            continue
        yield _finding(m.start(), m.start() + len(value), "national phone number", 0.8)


def find_phones(text: str) -> list[Finding]:
    """Phone numbers in ``text`` (see the module docstring for what counts), in text order.
    A number matched by several formats is reported once, by the most specific one."""
    found: list[Finding] = []
    taken: list[tuple[int, int]] = []  # sorted, pairwise disjoint
    for finder in (_international, _north_american, _national):
        for f in finder(text):
            i = bisect.bisect_left(taken, (f.end,))
            if i > 0 and taken[i - 1][1] > f.start:
                continue  # overlaps a number a more specific format already reported
            taken.insert(i, (f.start, f.end))
            found.append(f)
    return sorted(found, key=lambda f: f.start)
