"""Money amounts above a threshold (factor 10, tool-call stage).

``find_money_over(value, threshold, currency)`` reads amounts with ``Decimal`` only (a float
argument is converted through its shortest ``repr``) and reports each one strictly above
``threshold``. Negative amounts count by their absolute value (a refund moves money too).

**What counts as an amount.**

- A number (``int``, ``float``, ``Decimal``; never ``bool``), or a string that is one number
  (``"1250.00"``, ``" -1e6 "``, ``"(1,250.00)"``).
- Inside a string, any number written with a currency: a symbol (``$1,250.00``,
  ``1.250,00 €``, ``£5``, ``US$ 10``, ``R$ 3``, ``10 zł``) or an ISO 4217 code in capitals
  (``EUR 1250``, ``1250 USD``, ``CHF 99``; ``currency`` itself in any case). Bare numbers in
  free text (``order 12345``) are not amounts.
- Lists and tuples are walked. In a dict, numbers count only under a key that names an amount
  (``amount``, ``total``, ``price``, ``cost``, ``fee``, ``value``, ``amount_cents`` …) and
  strings count where they carry a currency; a ``currency``/``currency_code``/``ccy`` key gives
  its siblings their currency. Minor units are not converted (``amount_cents: 500000`` is
  500000): the larger reading, on purpose.

**Separators.** With both ``.`` and ``,`` the last one is the decimal mark (``1,250.00`` and
``1.250,00`` are both 1250). A single separator followed by exactly three digits is read as
grouping, the larger reading (``1,250`` and ``1.250`` are 1250; ``1.25`` is 1.25). Groups may
also use ``'``, a space, a no-break or a thin space (``1 250,00 €``, ``1'250.00``). A suffix
``k``, ``m``/``mm``/``mn``/``M`` or ``b``/``bn``/``B`` multiplies (``$1.2k`` is 1200, ``EUR 3M``
is 3 000 000); a one-letter suffix must touch the number (``5 m`` is no 5 million), words
may follow a space (``3 bn USD``, ``$2 million``, ``EUR 4 Mio``; also ``thousand``,
``billion``, ``Mrd``). A whole-value string keeps an unrecognised word next to its number
(``"XBT 5000"`` is 5000).

**Currencies.** With ``currency=None`` every amount is compared. With a code, amounts without a
currency are taken to be in it, amounts in it are compared, and amounts in another currency
are ``money.currency_mismatch`` findings whatever their size: they cannot be compared without
a rate (fail closed; route that rule to ``escalate`` in a policy). Ambiguous symbols match
every currency they may mean (``$``: USD, CAD, AUD …; ``¥``: JPY, CNY; ``kr``: SEK, NOK,
DKK, ISK).

Rules (kind = rule with ``_``): ``money.over_threshold``, ``money.currency_mismatch``,
``money.invalid`` (NaN or infinity). ``start``/``end`` locate the amount when ``value`` is a
string, else -1; ``detail`` names the key path and the threshold, never the amount.
"""

from __future__ import annotations

import numbers
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from elevenfactor.governance._guard_types import Finding

__all__ = ["find_money_over"]

_DOLLARS = frozenset("USD CAD AUD NZD SGD HKD MXN ARS CLP COP TWD".split())  # noqa: SIM905
_SYMBOLS: dict[str, frozenset[str]] = {
    "$": _DOLLARS,
    "US$": frozenset({"USD"}),
    "C$": frozenset({"CAD"}),
    "CA$": frozenset({"CAD"}),
    "A$": frozenset({"AUD"}),
    "AU$": frozenset({"AUD"}),
    "NZ$": frozenset({"NZD"}),
    "HK$": frozenset({"HKD"}),
    "S$": frozenset({"SGD"}),
    "R$": frozenset({"BRL"}),
    "MX$": frozenset({"MXN"}),
    "€": frozenset({"EUR"}),
    "£": frozenset({"GBP"}),
    "¥": frozenset({"JPY", "CNY"}),
    "￥": frozenset({"JPY", "CNY"}),
    "₹": frozenset({"INR"}),
    "₩": frozenset({"KRW"}),
    "₽": frozenset({"RUB"}),
    "₺": frozenset({"TRY"}),
    "₪": frozenset({"ILS"}),
    "₫": frozenset({"VND"}),
    "₴": frozenset({"UAH"}),
    "₦": frozenset({"NGN"}),
    "₱": frozenset({"PHP"}),
    "฿": frozenset({"THB"}),
    "zł": frozenset({"PLN"}),
    "Kč": frozenset({"CZK"}),
    "Ft": frozenset({"HUF"}),
    "kr": frozenset({"SEK", "NOK", "DKK", "ISK"}),
}
_CODES = frozenset(  # ISO 4217 codes in use, and BTC/ETH
    """USD EUR GBP JPY CNY CHF CAD AUD NZD SEK NOK DKK ISK PLN CZK HUF RON BGN RSD RUB UAH TRY
    ILS INR PKR BDT LKR IDR MYR SGD HKD TWD KRW THB VND PHP BRL MXN ARS CLP COP PEN UYU ZAR
    NGN KES GHS EGP MAD TND AED SAR QAR KWD BHD OMR JOD XAF XOF BTC ETH""".split()  # noqa: SIM905
)
_MULTIPLIERS = {"k": 3, "K": 3, "m": 6, "M": 6, "mm": 6, "MM": 6, "mn": 6, "b": 9, "B": 9, "bn": 9}
_WORD_MULTIPLIERS = {"thousand": 3, "million": 6, "mio": 6, "mn": 6, "mm": 6, "billion": 9}
_WORD_MULTIPLIERS["bn"] = _WORD_MULTIPLIERS["mrd"] = 9
_WORDS = "|".join(sorted(_WORD_MULTIPLIERS, key=len, reverse=True))
_SYMBOL = "|".join(re.escape(s) for s in sorted(_SYMBOLS, key=len, reverse=True))
_AMOUNT = re.compile(
    rf"""(?<![\w.,])
    (?:(?P<pre>[A-Za-z]{{3}}|{_SYMBOL})\s?)?[-\u2212+]?
    (?:
      (?P<grouped>[1-9]\d{{0,2}}(?P<g>[,.'\u2019\u00a0\u202f ])\d{{3}}(?:(?P=g)\d{{3}})*(?!\d))
      (?:[.,](?P<gfrac>\d+))?
      |(?P<plain>\d+)(?:[.,](?P<frac>\d+))?
    )
    (?:(?P<mult>mn|mm|MM|bn|[kKmMbB])(?![A-Za-z])|\s?(?P<word>(?i:{_WORDS}))(?![A-Za-z]))?
    (?:\s?(?P<post>[A-Za-z]{{3}}|{_SYMBOL})(?![A-Za-z]))?""",
    re.VERBOSE,
)
_AMOUNT_WORDS = re.compile(
    r"(?:^|_)(?:amount|total|subtotal|price|cost|fee|value|sum|balance|charge|refund|payment"
    r"|budget|spend)s?(?:$|_)"
)
_CURRENCY_KEYS = ("currency", "currency_code", "ccy")
_MAX_DEPTH = 32


@dataclass(frozen=True, slots=True)
class _Amount:
    value: Decimal
    marker: str | None  # the currency as written: "$", "EUR", or None
    start: int = -1
    end: int = -1


def find_money_over(value: Any, threshold: Decimal, currency: str | None) -> list[Finding]:
    """Findings for every amount in ``value`` above ``threshold`` (see the module docstring).
    Never raises for any ``value``; raises ``ValueError`` for a threshold that is not finite."""
    limit = Decimal(threshold)
    if not limit.is_finite():
        raise ValueError("the money threshold must be a finite number")
    code = currency.strip().upper() if currency else None
    findings: list[Finding] = []
    for path, amount in _amounts(value, "", code, top=True, depth=0):
        finding = _judge(amount, limit, code, path)
        if finding is not None:
            findings.append(finding)
    return findings


def _judge(amount: _Amount, threshold: Decimal, code: str | None, path: str) -> Finding | None:
    where = f"{path}: " if path else ""
    if not amount.value.is_finite():
        return _finding(amount, "invalid", f"{where}amount is not a finite number")
    if code is not None and amount.marker is not None and code not in _codes(amount.marker):
        detail = f"{where}amount in {amount.marker!r} cannot be compared with a {code} threshold"
        return _finding(amount, "currency_mismatch", detail)
    if abs(amount.value) > threshold:
        unit = f" {code}" if code else ""
        detail = f"{where}amount above the threshold of {threshold}{unit}"
        return _finding(amount, "over_threshold", detail)
    return None


def _finding(amount: _Amount, kind: str, detail: str) -> Finding:
    return Finding(
        rule=f"money.{kind}",
        kind=f"money_{kind}",
        start=amount.start,
        end=amount.end,
        detail=detail,
    )


def _amounts(
    value: Any, path: str, code: str | None, *, top: bool, depth: int
) -> Iterator[tuple[str, _Amount]]:
    """``(key path, amount)`` pairs; ``top``: bare numbers count here; ``code``: the currency
    of amounts written without one."""
    if depth > _MAX_DEPTH or value is None or isinstance(value, bool):
        return
    if isinstance(value, str):
        for amount in _in_text(value, whole_counts=top, code=code):
            yield path, amount
    elif isinstance(value, numbers.Number):
        if top:
            yield path, _Amount(_from_number(value), code)
    elif isinstance(value, Mapping):
        own = _currency_of(value) or code
        for key, item in value.items():
            name = f"{path}.{key}" if path else str(key)
            counts = isinstance(key, str) and bool(_AMOUNT_WORDS.search(_snake(key)))
            for sub_path, amount in _amounts(item, name, own, top=counts, depth=depth + 1):
                yield sub_path, _Amount(amount.value, amount.marker)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            for sub_path, amount in _amounts(item, f"{path}[{i}]", code, top=top, depth=depth + 1):
                yield sub_path, _Amount(amount.value, amount.marker)


def _in_text(text: str, *, whole_counts: bool, code: str | None) -> list[_Amount]:
    """Amounts with a currency anywhere in ``text``; a bare number only when it is all of
    ``text`` and ``whole_counts`` (it then takes ``code`` as its currency)."""
    bare = text.strip().strip("()").strip().lstrip("+-\u2212").strip()
    found: list[_Amount] = []
    for match in _AMOUNT.finditer(text):
        marker = _marker(match.group("pre"), code) or _marker(match.group("post"), code)
        if marker is None and not (whole_counts and match.group(0).strip() == bare):
            continue
        number = _number(match)
        if number is not None:
            found.append(_Amount(number, marker or code, match.start(), match.end()))
    whole = _decimal(bare) if whole_counts and bare and not found else None
    if whole is not None:  # what only Decimal reads: 1e6, Infinity, NaN
        start = text.find(bare)
        found.append(_Amount(whole, code, start, start + len(bare)))
    return found


def _number(match: re.Match[str]) -> Decimal | None:
    if match.group("grouped"):
        digits = re.sub(r"\D", "", match.group("grouped"))
        frac = match.group("gfrac")
    else:
        digits, frac = match.group("plain"), match.group("frac")
    number = _decimal(f"{digits}.{frac}" if frac else digits)
    mult, word = match.group("mult"), match.group("word")
    if number is None or not (mult or word):
        return number
    return number.scaleb(_MULTIPLIERS[mult] if mult else _WORD_MULTIPLIERS[word.lower()])


def _marker(text: str | None, code: str | None) -> str | None:
    """``text`` when it names a currency: a symbol, an ISO code in capitals, or ``code``."""
    if text is None:
        return None
    if text in _SYMBOLS or text in _CODES or (code is not None and text.upper() == code):
        return text
    return None


def _codes(marker: str) -> frozenset[str]:
    return _SYMBOLS.get(marker) or frozenset({marker.upper()})


def _currency_of(mapping: Mapping[Any, Any]) -> str | None:
    for key in _CURRENCY_KEYS:
        code = mapping.get(key)
        if isinstance(code, str) and len(code.strip()) == 3 and code.strip().isalpha():
            return code.strip().upper()
    return None


def _snake(key: str) -> str:
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", key).lower().replace("-", "_")


def _from_number(value: numbers.Number) -> Decimal:
    """Exact for ``int`` and ``Decimal``; a float (or numpy scalar) through its shortest text;
    a fraction by division. NaN when nothing works (reported as ``money.invalid``)."""
    if isinstance(value, (int, Decimal)):
        return Decimal(value)
    if isinstance(value, numbers.Rational) and not isinstance(value, numbers.Integral):
        return Decimal(int(value.numerator)) / Decimal(int(value.denominator))
    return _decimal(str(value)) or Decimal("NaN")


def _decimal(text: str) -> Decimal | None:
    try:
        return Decimal(text)
    except (InvalidOperation, ValueError, TypeError):
        return None
