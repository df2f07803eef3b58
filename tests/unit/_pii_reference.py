"""A frozen copy of the PII detectors' matching logic (``_guard_pii``, ``_guard_pii_phone``,
``_guard_pii_ids`` and the context helpers of ``_guard_pii_checks``) as it was before the
scanning was optimised, so ``test_guard_pii_equivalence`` can check that the fast patterns
find exactly what these slow ones find. Do not optimise or "fix" this file: it is the oracle.
The check-digit functions (Luhn, IBAN, SSN ranges, NINO, DNI, NIR) are imported, not copied:
they validate a candidate once found and are not part of the scanning being compared.
"""

from __future__ import annotations

import bisect
import ipaddress
import re
from collections.abc import Callable, Iterable, Iterator

from elevenfactor.governance._guard_pii_checks import (
    IBAN_LENGTHS,
    card_network,
    dni_valid,
    iban_valid,
    luhn_valid,
    nino_valid,
    nir_valid,
    ssn_valid,
)
from elevenfactor.governance._guard_types import Finding

__all__ = ["reference_find_pii"]

# --- _guard_pii_checks: context -----------------------------------------------------------

_WORD = re.compile(r"[^\W_]+|[#§]")


def words_before(text: str, start: int, n: int = 2, window: int = 48) -> list[str]:
    return [w.lower() for w in _WORD.findall(text, max(0, start - window), start)][-n:]


def keyword_near(text: str, start: int, keywords: frozenset[str], n: int = 3) -> bool:
    for word in reversed(words_before(text, start, n)):
        if word in keywords:
            return True
        if any(ch.isdigit() for ch in word):
            return False
    return False


# --- _guard_pii_phone ---------------------------------------------------------------------

_INTL = re.compile(r"(?<![\w+])\+[1-9][\d ().-]{6,22}\d(?![\w-]|[.,/:]\d)", re.ASCII)
_NANP = re.compile(
    r"(?<![\w+.\-/#$€£¥])(?:1([ .-]))?(?:\([2-9]\d{2}\) ?|[2-9]\d{2}([ .-]))"
    r"[2-9]\d{2}([ .-])\d{4}(?![\w-]|[.,/:]\d)",
    re.ASCII,
)
_NATIONAL = re.compile(
    r"(?<![\w+.\-/#$€£¥,])(\(0\d{1,4}\) ?|0\d{1,4}[ ./-])\d{2,8}(?:[ .-]\d{2,8}){0,3}"
    r"(?![\w-]|[.,/:]\d)",
    re.ASCII,
)
_DOUBLE_SEP = re.compile(r"[ .-]{2}|\)\(|[.-]\)|\([.-]")
_PARENS = re.compile(r"\(\d+\)")
_SEPS = re.compile(r"(?<=\d)[ .-](?=\d)", re.ASCII)

CODE_WORDS = frozenset(
    "isbn issn sku ean upc order invoice inv serial sn part pn ref reference tracking model "  # noqa: SIM905 - word list
    "item product account acct policy case ticket batch lot version ver build id no nr "
    "# code patent claim".split()
)
_PHONE_WORDS = frozenset(
    "call phone tel telephone mobile cell cellphone fax contact number reach text sms "  # noqa: SIM905 - word list
    "whatsapp ph ring dial hotline landline".split()
)
_ID_WORDS = frozenset(
    "ssn social security nino nie dni nir iban bic swift card passport licence license vat "  # noqa: SIM905 - word list
    "tax ein tin".split()
)


def _phone_finding(start: int, end: int, detail: str, score: float) -> Finding:
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
        yield _phone_finding(m.start(), m.end(), "international phone number", 0.95)


def _north_american(text: str) -> Iterator[Finding]:
    for m in _NANP.finditer(text):
        area_sep, exch_sep = m.group(2), m.group(3)
        if area_sep is not None and area_sep != exch_sep:
            continue
        if _is_code(text, m.start()):
            continue
        spaces_only = "(" not in m.group() and exch_sep == " "
        if spaces_only and not keyword_near(text, m.start(), _PHONE_WORDS, 4):
            continue
        yield _phone_finding(m.start(), m.end(), "North American phone number", 0.85)


def _national(text: str) -> Iterator[Finding]:
    for m in _NATIONAL.finditer(text):
        value = m.group()
        digits = sum(ch.isdigit() for ch in value)
        while digits > 12:
            cut = max(value.rfind(" "), value.rfind("."), value.rfind("-"))
            if cut < len(m.group(1)):
                break
            digits -= sum(ch.isdigit() for ch in value[cut:])
            value = value[:cut]
        if not 9 <= digits <= 12 or value.startswith("000") or _is_code(text, m.start()):
            continue
        if len(set(_SEPS.findall(value)[1:])) > 1:
            continue
        yield _phone_finding(m.start(), m.start() + len(value), "national phone number", 0.8)


def find_phones(text: str) -> list[Finding]:
    found: list[Finding] = []
    taken: list[tuple[int, int]] = []
    for finder in (_international, _north_american, _national):
        for f in finder(text):
            i = bisect.bisect_left(taken, (f.end,))
            if i > 0 and taken[i - 1][1] > f.start:
                continue
            taken.insert(i, (f.start, f.end))
            found.append(f)
    return sorted(found, key=lambda f: f.start)


# --- _guard_pii_ids -----------------------------------------------------------------------

_END = r"(?![\w-]|[.,/:]\d)"
_SSN_DASHED = re.compile(r"(?<![\w\-.])\d{3}([- ])\d{2}\1\d{4}" + _END, re.ASCII)
_SSN_BARE = re.compile(r"(?<![\w\-.])\d{9}" + _END, re.ASCII)
_SSN_WORDS = frozenset({"ssn", "ssns", "social", "security", "ss"})
_NINO = re.compile(r"(?<![\w-])[A-Z]{2} ?\d{2} ?\d{2} ?\d{2} ?[A-D](?![\w-])", re.ASCII)
_DNI = re.compile(r"(?<![\w-])(?:\d{8}|[XYZ]-?\d{7})[- ]?[A-Z](?![\w-])", re.ASCII)
_NIR = re.compile(
    r"(?<![\w-])[1278] ?\d{2} ?\d{2} ?(?:\d{2}|2[AB]) ?\d{3} ?\d{3} ?\d{2}" + _END, re.ASCII
)
_NOT_ALNUM = re.compile(r"[^0-9A-Z]")


def _compact(value: str) -> str:
    return _NOT_ALNUM.sub("", value)


def _finding(kind: str, start: int, end: int, detail: str, score: float = 1.0) -> Finding:
    return Finding(f"pii.{kind}", kind, start, end, score, detail)


def _code_context(text: str, start: int) -> bool:
    return any(w in CODE_WORDS for w in words_before(text, start, 2))


def _ssn(text: str) -> Iterator[Finding]:
    for m in _SSN_DASHED.finditer(text):
        if not ssn_valid(_compact(m.group())) or _code_context(text, m.start()):
            continue
        if m.group(1) == " " and not keyword_near(text, m.start(), _SSN_WORDS):
            continue
        yield _finding("us_ssn", m.start(), m.end(), "US social security number", 0.9)
    for m in _SSN_BARE.finditer(text):
        if ssn_valid(m.group()) and keyword_near(text, m.start(), _SSN_WORDS):
            yield _finding("us_ssn", m.start(), m.end(), "US SSN (after an SSN keyword)", 0.8)


def _nino(text: str) -> Iterator[Finding]:
    for m in _NINO.finditer(text):
        if nino_valid(_compact(m.group())) and not _code_context(text, m.start()):
            yield _finding("uk_nino", m.start(), m.end(), "UK National Insurance number", 0.9)


def _dni(text: str) -> Iterator[Finding]:
    for m in _DNI.finditer(text):
        compact = _compact(m.group())
        if dni_valid(compact):
            what = "NIE" if compact[0] in "XYZ" else "DNI"
            yield _finding("es_dni", m.start(), m.end(), f"Spanish {what}, control letter valid")


def _nir(text: str) -> Iterator[Finding]:
    for m in _NIR.finditer(text):
        compact = _compact(m.group())
        month = int(compact[3:5])
        if not (1 <= month <= 12 or 20 <= month <= 42 or month >= 50):
            continue
        if nir_valid(compact):
            yield _finding("fr_nir", m.start(), m.end(), "French NIR, key valid")


# --- _guard_pii ---------------------------------------------------------------------------

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
_SCP_PATH = re.compile(r":[^\s:]")
_URL_USERINFO = re.compile(r"://(?:[^\s/@]*:)?$")
_CARD = re.compile(r"(?<![\w.,-])(?<!\d[ -])\d(?:[ -]?\d){12,}(?![ -]?\d|[.,]\d)", re.ASCII)
_CARD_SEP = re.compile(r"[ -]")
_CARD_GROUPS = frozenset({(4, 6, 5), (4, 6, 4)})
_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}", re.ASCII)
_IPV4 = re.compile(r"(?<![\w.:-])(?:\d{1,3}\.){3}\d{1,3}(?![\w-]|\.\d)", re.ASCII)
_IPV6 = re.compile(r"(?<![\w:.-])[0-9A-Fa-f:][0-9A-Fa-f:.]{1,44}(?![\w:-])", re.ASCII)
_VERSION_WORDS = frozenset(
    "version versions ver v release rel build rev revision section sec chapter clause rule "  # noqa: SIM905 - word list
    "oid firmware fw sdk patch update kernel python node java".split()
)
_DOC_NETS = tuple(
    ipaddress.ip_network(n)
    for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")
)
_THIS_NET = ipaddress.ip_network("0.0.0.0/8")


def _emails(text: str) -> Iterator[Finding]:
    if "@" not in text:
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
        return False
    sizes = tuple(len(g) for g in groups)
    if sizes in _CARD_GROUPS:
        return True
    return all(s == 4 for s in sizes[:-1]) and 1 <= sizes[-1] <= 4


def _card_at(groups: list[str], separators: list[str], i: int) -> tuple[int, str] | None:
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
    for m in _CARD.finditer(text):
        groups = _CARD_SEP.split(m.group())
        separators = _CARD_SEP.findall(m.group())
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


def _ibans(text: str) -> Iterator[Finding]:
    pos = 0
    while (m := _IBAN.search(text, pos)) is not None:
        pos = m.start() + 1
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
    for m in _IPV4.finditer(text):
        if _VERSION_WORDS.intersection(words_before(text, m.start(), 1)):
            continue
        try:
            addr = ipaddress.IPv4Address(m.group())
        except ValueError:
            continue
        category = _ip_category(addr)
        if category is not None:
            yield _finding("ipv4", m.start(), m.end(), f"IPv4 address ({category})", 0.9)


def _ipv6(text: str) -> Iterator[Finding]:
    for m in _IPV6.finditer(text):
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


REFERENCE_FINDERS: dict[str, Callable[[str], Iterable[Finding]]] = {
    "email": _emails,
    "phone": find_phones,
    "payment_card": _cards,
    "iban": _ibans,
    "us_ssn": _ssn,
    "uk_nino": _nino,
    "es_dni": _dni,
    "fr_nir": _nir,
    "ipv4": _ipv4,
    "ipv6": _ipv6,
}
_ANY_DIGIT = re.compile(r"\d")
_KINDS = tuple(REFERENCE_FINDERS)


def reference_find_pii(text: str, kinds: Iterable[str] | None = None) -> list[Finding]:
    """``find_pii`` as it was: same arguments, same findings, same order."""
    wanted = _KINDS if kinds is None else tuple(kinds)
    unknown = sorted(set(wanted) - set(_KINDS))
    if unknown:
        raise ValueError(f"unknown PII kinds {unknown}; known: {', '.join(_KINDS)}")
    if _ANY_DIGIT.search(text) is None:
        wanted = tuple(k for k in wanted if k == "email" or (k == "ipv6" and ":" in text))
    found = [f for kind in _KINDS if kind in wanted for f in REFERENCE_FINDERS[kind](text)]
    found.sort(key=lambda f: (f.start, -f.end, f.kind))
    kept: list[Finding] = []
    reach_start, reach_end = -1, -1
    for f in found:
        if reach_end > f.end or (reach_end == f.end and reach_start < f.start):
            continue
        kept.append(f)
        if f.end > reach_end:
            reach_start, reach_end = f.start, f.end
    return kept
