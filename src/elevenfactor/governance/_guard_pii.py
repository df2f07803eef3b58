"""PII detectors (factor 10): ``find_pii`` finds personal data in text and returns
``Finding`` s (rule ``pii.<kind>``, positions, a detail that never repeats the value).

Kinds and the decisions behind them (precision first: a guard that cries wolf gets disabled):

* ``email``: ``local@domain.tld``; Unicode letters allowed in the local part and the domain,
  except CJK, kana, Hangul and full-width forms (those scripts run words together, so
  ``連絡先taro@example.jpです`` yields ``taro@example.jp``); the TLD is ASCII letters or
  ``xn--`` and not a file extension (``icon@2x.png``, ``lodash@4.17.21`` are not addresses).
  An address followed by ``:`` and a path (``git@github.com:org/repo``) is an SSH remote, and
  ``scheme://user@host`` / ``scheme://user:pass@host`` is URL userinfo (``_guard_secrets``
  reports a password or token there), so none of them is an e-mail.
* ``phone``: see ``_guard_pii_phone``.
* ``payment_card``: 13-19 digits, optionally grouped by spaces or dashes in the printed
  groupings (4-4-4-4[-3], 4-6-5, 4-6-4), an IIN of Visa, Mastercard, Amex, Discover, JCB,
  Diners or UnionPay with a length that network issues, and a valid Luhn digit. A longer digit
  run counts only if it is cards end to end plus at most 4 digits (a CVV, a year): account
  numbers are not cut into cards. A Luhn-valid 16-digit order number starting with 4 *is*
  reported: without context the two cannot be told apart, and missing a card costs more.
* ``iban``: a registered country, that country's length, the ISO 13616 mod-97 check; upper
  case, compact or grouped by single spaces.
* ``us_ssn``, ``uk_nino``, ``es_dni``, ``fr_nir``: see ``_guard_pii_ids``.
* ``ipv4`` / ``ipv6``: validated by ``ipaddress``. Not reported: addresses that identify no
  host outside one machine or one link, or are not host addresses at all (loopback,
  unspecified, ``0.0.0.0/8``, multicast, link-local, reserved incl. broadcast and netmasks such
  as ``255.255.255.0``), dotted quads in a version context (*version*, *v*, *build*,
  *release*, *section* …, or glued to a letter as in ``v1.2.3.4``), and IPv6-looking strings
  without a single decimal digit (``cafe::beef`` is more often code). Private and
  documentation ranges *are* reported (they expose internal topology); the detail says which.

A finding nested strictly inside another one (a "phone" inside an IBAN) is dropped: the outer
finding covers it.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Iterator

from elevenfactor.governance._guard_pii_checks import (
    IBAN_LENGTHS,
    Anchors,
    candidate_starts,
    card_network,
    finditer_at,
    iban_valid,
    luhn_valid,
    shape,
    words_before,
)
from elevenfactor.governance._guard_pii_ids import ID_FINDERS
from elevenfactor.governance._guard_pii_phone import find_phones
from elevenfactor.governance._guard_types import Finding

__all__ = ["PII_KINDS", "find_pii"]

# Letters of scripts written with spaces: CJK, kana, Hangul and full-width forms are left out so
# that "連絡先taro@example.jpです" yields the address alone.
_L = r"[^\W\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef]"
_EMAIL = re.compile(
    rf"(?<!{_L}|[.%+'-])(?:{_L}|[%+'-])(?:{_L}|[.%+'-]){{0,63}}@"
    rf"(?:(?!_){_L}(?:(?!_){_L}|-){{0,62}}\.){{1,8}}(?:[A-Za-z]{{2,63}}|xn--[A-Za-z0-9-]{{1,59}})"
    r"(?![A-Za-z0-9_-]|\.[A-Za-z0-9]|@)"
)
_FILE_EXTENSIONS = frozenset(
    "png jpg jpeg gif svg webp ico bmp tif tiff pdf js mjs cjs ts tsx jsx css scss html htm "  # noqa: SIM905 - word list
    "json yaml yml toml txt lock map wasm zip gz tgz".split()
)
_SCP_PATH = re.compile(r":[^\s:]")  # git@github.com:org/repo.git
_URL_USERINFO = re.compile(r"://(?:[^\s/@]*:)?$")
# The number patterns run only where their shape says a match can start (``candidate_starts``).
# When the text is too dense in digits for that to pay they scan it, so each starts with the
# character it consumes first and checks the one before it with a lookbehind placed after it:
# a lookbehind first would keep ``re`` from skipping ahead and make it try every position.
_CARD = re.compile(r"\d(?<![\w.,-]\d)(?<!\d[ -]\d)(?:[ -]?\d){12,}(?![ -]?\d|[.,]\d)", re.ASCII)
_CARD_SEP = re.compile(r"[ -]")
_CARD_GROUPS = frozenset({(4, 6, 5), (4, 6, 4)})
# A digit run yields cards only if one starts it: 13+ digits, or 4-4-4-x / 4-6-x groups. No
# match can start inside another one, so skipping runs that yield nothing changes no other.
_CARD_ANCHORS: Anchors = (
    (b"0" * 13, (0,)),
    (b"0000 0000 0000 0", (0,)),
    (b"0000-0000-0000-0", (0,)),
    (b"0000 000000 0000", (0,)),
    (b"0000-000000-0000", (0,)),
)
_IBAN = re.compile(r"[A-Z](?<![A-Za-z0-9][A-Z])[A-Z]\d{2}(?: ?[A-Z0-9]){11,30}", re.ASCII)
_IBAN_ANCHORS: Anchors = ((b"AA00", (0,)),)
_IPV4 = re.compile(r"\d(?<![\w.:-]\d)\d{0,2}\.(?:\d{1,3}\.){2}\d{1,3}(?![\w-]|\.\d)", re.ASCII)
_IPV4_ANCHORS: Anchors = tuple((b"." + b"0" * n + b".", (1, 2, 3)) for n in (1, 2, 3))  # ".168."
_IPV6 = re.compile(r"(?<![\w:.-])[0-9A-Fa-f:][0-9A-Fa-f:.]{1,44}(?![\w:-])", re.ASCII)
# A reported IPv6 address holds two colons with only hex digits and dots between them.
_IPV6_PAIR = re.compile(r":(?=[0-9A-Fa-f.]*:)")
_IPV6_RUN = re.compile(r"[0-9A-Fa-f:.]*")
_HEX_OR_DOT = frozenset("0123456789ABCDEFabcdef.")
_VERSION_WORDS = frozenset(
    "version versions ver v release rel build rev revision section sec chapter clause rule "  # noqa: SIM905 - word list
    "oid firmware fw sdk patch update kernel python node java".split()
)
_DOC_NETS = tuple(
    ipaddress.ip_network(n)
    for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")
)
_THIS_NET = ipaddress.ip_network("0.0.0.0/8")


def _finding(kind: str, start: int, end: int, detail: str, score: float = 1.0) -> Finding:
    return Finding(f"pii.{kind}", kind, start, end, score, detail)


def _emails(text: str) -> Iterator[Finding]:
    if "@" not in text:  # the pattern needs one
        return
    for m in _EMAIL.finditer(text):
        local, _, domain = m.group().rpartition("@")
        labels = domain.split(".")
        if local.startswith(".") or local.endswith(".") or ".." in local:
            continue
        if any(lab.endswith("-") for lab in labels) or len(labels[-1]) < 2:
            continue
        if labels[-1].lower() in _FILE_EXTENSIONS or _SCP_PATH.match(text, m.end()):
            continue
        if _URL_USERINFO.search(text, max(0, m.start() - 200), m.start()):
            continue
        yield _finding("email", m.start(), m.end(), "e-mail address")


def _grouping_ok(groups: list[str], separators: list[str]) -> bool:
    if len(groups) == 1:
        return True
    if len(set(separators)) > 1:
        return False  # mixed separators
    sizes = tuple(len(g) for g in groups)
    if sizes in _CARD_GROUPS:
        return True
    return all(s == 4 for s in sizes[:-1]) and 1 <= sizes[-1] <= 4


def _card_at(groups: list[str], separators: list[str], i: int) -> tuple[int, str] | None:
    """The longest card made of whole groups from ``groups[i]``: (groups used, network)."""
    best, count = None, 0
    for k in range(i, len(groups)):
        count += len(groups[k])
        if count > 19:
            break
        digits = "".join(groups[i : k + 1])
        network = card_network(digits) if count >= 13 else None
        if network and _grouping_ok(groups[i : k + 1], separators[i:k]) and luhn_valid(digits):
            best = (k + 1 - i, network)
    return best


def _cards(text: str) -> Iterator[Finding]:
    for m in finditer_at(_CARD, text, candidate_starts(text, _CARD_ANCHORS)):
        groups = _CARD_SEP.split(m.group())
        separators = _CARD_SEP.findall(m.group())
        # The digit run must be cards end to end, leaving at most 4 digits over: a CVV after
        # the number ("4111 1111 1111 1111 123") or two cards in a row are fine; a longer
        # number (an account number, a compact run over 19 digits) yields nothing.
        cards, i = [], 0
        while (card := _card_at(groups, separators, i)) is not None:
            cards.append((i, i + card[0], card[1]))
            i += card[0]
        if not cards or sum(len(g) for g in groups[i:]) > 4:
            continue
        starts = [m.start()]
        for g in groups:
            starts.append(starts[-1] + len(g) + 1)
        for first, last, network in cards:
            end = starts[last] - 1
            yield _finding("payment_card", starts[first], end, f"{network} card, Luhn valid")


def _iban_matches(text: str) -> Iterator[re.Match[str]]:
    """A match of ``_IBAN`` at every position where it has one, overlapping."""
    starts = candidate_starts(text, _IBAN_ANCHORS)
    if starts is None:
        pos = 0
        while (m := _IBAN.search(text, pos)) is not None:
            yield m
            pos = m.start() + 1
    else:
        yield from (m for p in starts if (m := _IBAN.match(text, p)) is not None)


def _ibans(text: str) -> Iterator[Finding]:
    pos = 0
    for m in _iban_matches(text):
        if m.start() < pos:
            continue  # inside the IBAN found last
        length = IBAN_LENGTHS.get(m.group()[:2])
        if length is None:
            continue
        end, count = m.start(), 0
        for ch in m.group():
            end += 1
            count += ch != " "
            if count == length:
                break
        if count < length or text[end : end + 1].isalnum():
            continue
        compact = text[m.start() : end].replace(" ", "")
        if iban_valid(compact):
            pos = end
            yield _finding("iban", m.start(), end, f"IBAN ({compact[:2]}), mod-97 valid")


def _ip_category(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """``public``, ``private`` or ``documentation``; None for addresses not reported."""
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    if (
        addr.is_loopback
        or addr.is_unspecified
        or addr.is_multicast
        or addr.is_link_local
        or addr.is_reserved
        or (isinstance(addr, ipaddress.IPv4Address) and addr in _THIS_NET)
    ):
        return None
    if any(addr.version == net.version and addr in net for net in _DOC_NETS):
        return "documentation"
    return "private" if addr.is_private else "public"


def _ipv4(text: str) -> Iterator[Finding]:
    for m in finditer_at(_IPV4, text, candidate_starts(text, _IPV4_ANCHORS)):
        if _VERSION_WORDS.intersection(words_before(text, m.start(), 1)):
            continue
        try:
            addr = ipaddress.IPv4Address(m.group())
        except ValueError:
            continue
        category = _ip_category(addr)
        if category is not None:
            yield _finding("ipv4", m.start(), m.end(), f"IPv4 address ({category})", 0.9)


def _ipv6_matches(text: str) -> Iterator[re.Match[str]]:
    """The ``_IPV6`` matches holding two colons or more. A match can only start where a run of
    ``[0-9A-Fa-f:.]`` starts (its lookbehind) and ends inside that run, so the runs holding a
    colon pair are the only ones to try: from the run's start, found by walking back from the
    first pair (no colon comes before it in the run)."""
    pos = 0
    while (pair := _IPV6_PAIR.search(text, pos)) is not None:
        start = pair.start()
        while start > 0 and text[start - 1] in _HEX_OR_DOT:
            start -= 1
        if (m := _IPV6.match(text, start)) is not None:
            yield m
        run = _IPV6_RUN.match(text, pair.start())  # always matches: the pair's colon
        pos = run.end() if run is not None else pair.end()


def _ipv6(text: str) -> Iterator[Finding]:
    for m in _ipv6_matches(text):
        value = m.group().rstrip(".")
        if value.count(":") < 2 or not any(ch.isdigit() for ch in value):
            continue
        try:
            addr = ipaddress.IPv6Address(value)
        except ValueError:
            continue
        category = _ip_category(addr)
        if category is not None:
            end = m.start() + len(value)
            yield _finding("ipv6", m.start(), end, f"IPv6 address ({category})", 0.9)


_FINDERS: dict[str, Callable[[str], Iterable[Finding]]] = {
    "email": _emails,
    "phone": find_phones,
    "payment_card": _cards,
    "iban": _ibans,
    **ID_FINDERS,
    "ipv4": _ipv4,
    "ipv6": _ipv6,
}
_ANY_DIGIT = re.compile(r"\d")
PII_KINDS: tuple[str, ...] = tuple(_FINDERS)
"""Every kind ``find_pii`` knows, in the order it runs them."""


def find_pii(text: str, kinds: Iterable[str] | None = None) -> list[Finding]:
    """Personal data in ``text``: one ``Finding`` per match (rule ``pii.<kind>``, positions,
    a detail without the value), sorted by position. ``kinds`` limits the search to some of
    ``PII_KINDS``; an unknown kind raises ``ValueError``. Findings strictly inside another
    finding are dropped."""
    wanted = PII_KINDS if kinds is None else tuple(kinds)
    unknown = sorted(set(wanted) - set(PII_KINDS))
    if unknown:
        raise ValueError(f"unknown PII kinds {unknown}; known: {', '.join(PII_KINDS)}")
    if _ANY_DIGIT.search(text) is None:  # every kind but e-mail and IPv6 needs a digit
        wanted = tuple(k for k in wanted if k == "email" or (k == "ipv6" and ":" in text))
    try:
        found = [f for kind in PII_KINDS if kind in wanted for f in _FINDERS[kind](text)]
    finally:
        shape.cache_clear()  # the shape is shared by this call's finders, and kept no longer
    found.sort(key=lambda f: (f.start, -f.end, f.kind))
    kept: list[Finding] = []
    reach_start, reach_end = -1, -1  # the kept finding reaching furthest right
    for f in found:
        if reach_end > f.end or (reach_end == f.end and reach_start < f.start):
            continue
        kept.append(f)
        if f.end > reach_end:
            reach_start, reach_end = f.start, f.end
    return kept
