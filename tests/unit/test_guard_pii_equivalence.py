"""The optimised PII scanners find exactly what the original patterns found: same kinds, same
positions, same details, in the same order. ``_pii_reference`` is a frozen copy of the original
matching logic; every finder and ``find_pii`` as a whole are compared on the repository's PII
examples and on generated text built from the pieces PII is made of (digit groups, separators,
keywords, check-digit-valid numbers, e-mail and IP fragments, unicode).

``PII_EQUIVALENCE_EXAMPLES`` raises the number of generated texts for a thorough local run."""

from __future__ import annotations

import ast
import contextlib
import json
import os
import string
import time
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from elevenfactor.governance import _guard_pii, _guard_pii_ids, _guard_pii_phone
from elevenfactor.governance._guard_pii import _FINDERS, PII_KINDS, find_pii
from elevenfactor.governance._guard_pii_checks import IBAN_LENGTHS
from tests.unit._pii_reference import REFERENCE_FINDERS, reference_find_pii

_EXAMPLES = int(os.environ.get("PII_EQUIVALENCE_EXAMPLES", "300"))
_TESTS = Path(__file__).parent
_CORPUS = _TESTS.parent / "data" / "guard" / "pii_secrets.jsonl"


@contextlib.contextmanager
def _scanning() -> Iterator[None]:
    """No candidate positions: every pattern scans the whole text, as on dense digits."""
    with contextlib.ExitStack() as stack:
        for module in (_guard_pii, _guard_pii_ids, _guard_pii_phone):
            stack.enter_context(mock.patch.object(module, "candidate_starts", return_value=None))
        yield


def _assert_same(text: str) -> None:
    assert tuple(_FINDERS) == tuple(REFERENCE_FINDERS) == PII_KINDS
    expected = {kind: list(finder(text)) for kind, finder in REFERENCE_FINDERS.items()}
    for kind, finder in _FINDERS.items():
        assert list(finder(text)) == expected[kind], (kind, text)
    with _scanning():
        for kind, finder in _FINDERS.items():
            assert list(finder(text)) == expected[kind], ("scanning", kind, text)
    assert find_pii(text) == reference_find_pii(text), text


def _fixed_examples() -> list[str]:
    """Every corpus line and every string literal of the PII unit tests."""
    texts = [json.loads(line)["text"] for line in _CORPUS.read_text().splitlines() if line]
    for path in sorted(_TESTS.glob("test_guard_pii*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                texts.append(node.value)
    return sorted(set(texts))


def test_fixed_examples_match_the_reference() -> None:
    texts = _fixed_examples()
    assert len(texts) > 150
    texts += ["4111 \ud800 1111", "(415) 555-2671\udfff", "a:b\ud800:1::2", "\ud8000 20 7946 0958"]
    for text in texts:
        _assert_same(text)
        _assert_same(f"x {text} 1")
        _assert_same(text.replace(" ", "-"))


# --- generated text -----------------------------------------------------------------------


def _luhn_complete(body: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return body + str(-total % 10)


@st.composite
def _cards(draw: st.DrawFn) -> str:
    prefix = draw(
        st.sampled_from(["4", "51", "55", "2221", "34", "37", "6011", "65", "3528", "36"])
    )
    length = draw(st.integers(13, 19))
    body = prefix + draw(st.text("0123456789", min_size=length - 1 - len(prefix), max_size=18))
    digits = _luhn_complete(body[: length - 1])
    sep = draw(st.sampled_from(["", " ", "-"]))
    sizes = draw(st.sampled_from([(4, 4, 4, 4, 3), (4, 6, 5), (4, 6, 4), (4, 4, 4, 4)]))
    parts, i = [], 0
    for size in sizes:
        parts.append(digits[i : i + size])
        i += size
    parts.append(digits[i:])
    return sep.join(p for p in parts if p)


@st.composite
def _ibans(draw: st.DrawFn) -> str:
    country = draw(st.sampled_from(sorted(IBAN_LENGTHS)))
    alphabet = string.digits + draw(st.sampled_from(["", "ABCXYZ"]))
    bban = draw(st.text(alphabet, min_size=IBAN_LENGTHS[country] - 4, max_size=40))
    bban = bban[: IBAN_LENGTHS[country] - 4]
    numeric = "".join(str(int(ch, 36)) for ch in bban + country + "00")
    compact = f"{country}{98 - int(numeric) % 97:02d}{bban}"
    if draw(st.booleans()):
        return " ".join(compact[i : i + 4] for i in range(0, len(compact), 4))
    return compact


@st.composite
def _national_ids(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["dni", "nie", "nir", "ssn", "nino"]))
    if kind in ("dni", "nie"):
        n = draw(st.integers(0, 99_999_999 if kind == "dni" else 9_999_999))
        nie = draw(st.sampled_from(["X", "Y", "Z", "X-", "Y-", "Z-"])) + f"{n:07d}"
        head = f"{n:08d}" if kind == "dni" else nie
        value = int(str("XYZ".index(head[0])) + head[-7:]) if kind == "nie" else n
        return head + draw(st.sampled_from(["", "-", " "])) + "TRWAGMYFPDXBNJZSQVHLCKE"[value % 23]
    if kind == "nir":
        month = draw(st.sampled_from([1, 7, 12, 20, 42, 50, 99, 0, 13]))
        dept = draw(st.sampled_from(["75", "2A", "2B", "99"]))
        rest = f"{draw(st.integers(0, 999_999)):06d}"
        body = f"{draw(st.sampled_from('1278'))}{draw(st.integers(0, 99)):02d}{month:02d}"
        body += dept + rest
        key = 97 - int(body.replace("2A", "19").replace("2B", "18")) % 97
        parts = (body[0], body[1:3], body[3:5], body[5:7], body[7:10], body[10:13], f"{key:02d}")
        seps = draw(st.sampled_from(["", " ", "mixed"]))
        if seps == "mixed":
            return "".join(part + draw(st.sampled_from(["", " "])) for part in parts).strip()
        return seps.join(parts)
    if kind == "ssn":
        sep = draw(st.sampled_from(["-", " ", ""]))
        area, group, serial = draw(st.integers(1, 899)), draw(st.integers(1, 99)), 1234
        return f"{area:03d}{sep}{group:02d}{sep}{serial:04d}"
    letters = draw(st.text("ABCEGHJKLMNOPRSTWXYZ", min_size=2, max_size=2))
    sep = draw(st.sampled_from(["", " "]))
    digits = f"{draw(st.integers(0, 999_999)):06d}"
    return sep.join([letters, digits[:2], digits[2:4], digits[4:], draw(st.sampled_from("ABCD"))])


@st.composite
def _ips(draw: st.DrawFn) -> str:
    if draw(st.booleans()):
        return ".".join(str(draw(st.integers(0, 255))) for _ in range(draw(st.integers(3, 5))))
    hextets = [f"{draw(st.integers(0, 0xFFFF)):x}" for _ in range(draw(st.integers(1, 8)))]
    hextets[0] = draw(st.sampled_from([hextets[0], "2001", "2606", "fd00", "fe80", "0"]))
    if len(hextets) < 8 or draw(st.booleans()):
        cut = draw(st.integers(0, len(hextets)))
        return ":".join(hextets[:cut]) + "::" + ":".join(hextets[cut:])
    return ":".join(hextets)


_PHONES = [
    "+44 20 7946 0958", "+1 (415) 555-2671", "+14155552671", "+44 (0)20 7946 0958",
    "(415) 555-2671", "415-555-2671", "415.555.2671", "1-800-555-0199", "415 555 2671",
    "020 7946 0958", "06 12 34 56 78", "030 1234567", "(089) 123 4567", "089/1234567",
    "0044 20 7946 0958", "+81 3-1234-5678", "1 (415) 555-2671", "1.415.555.2671",
]  # fmt: skip
_FRAGMENTS = [
    *_PHONES, "4111 1111 1111 1111", "3782 822463 10005", "GB82 WEST 1234 5698 7654 32",
    "DE89370400440532013000", "123-45-6789", "AB 12 34 56 C", "12345678Z", "X1234567L",
    "1 84 12 76 451 089 46", "2A", "2B", "192.168.1.10", "8.8.8.8", "10.0.0.0/8",
    "2001:db8::1", "::ffff:192.0.2.1", "fe80::1", "cafe::beef", "::", ":", "a@b.co",
    "jane.doe@example.com", "@", "git@github.com:o/r", "x://u:p@h", "v1.2.3.4", "version",
    "call", "phone", "tel", "ssn", "SSN", "social security", "invoice", "IBAN", "card", "order",
    "#", "sku", "ref", "no.", "ring", "NINO", "DNI", "NIR", "ext", "2023-10-15", "14:30",
    "$1,299.99", "€", "£", "¥", "連絡先", "です", "é", "ß", "ẞ", "٤٤", "\uff11\uff12\uff13",
    "\u00a0", "🎉",
]  # fmt: skip
_SEPARATORS = [" ", " ", ".", "-", "/", "(", ")", "+", ",", ":", ";", "_", "\n", "  ", ". "]
_piece = st.one_of(
    st.sampled_from(_FRAGMENTS),
    st.sampled_from(_SEPARATORS),
    st.text("0123456789", min_size=1, max_size=19),
    st.text("0123456789 .-", min_size=1, max_size=24),
    st.text("0123456789abcdefABCDEF:.", min_size=1, max_size=24),
    st.text(string.ascii_uppercase, min_size=1, max_size=4),
    st.text(string.ascii_lowercase, min_size=1, max_size=8),
    st.text(max_size=4),
    _cards(),
    _ibans(),
    _national_ids(),
    _ips(),
)


_text = st.lists(st.tuples(_piece, st.sampled_from(["", *_SEPARATORS])), max_size=16).map(
    lambda pairs: "".join(piece + sep for piece, sep in pairs)
)


@settings(max_examples=_EXAMPLES, deadline=None)
@given(_text)
def test_generated_text_matches_the_reference(text: str) -> None:
    _assert_same(text)


@settings(max_examples=_EXAMPLES // 3 or 1, deadline=None)
@given(st.lists(st.sampled_from(_FRAGMENTS + _SEPARATORS), max_size=30).map("".join))
def test_glued_fragments_match_the_reference(text: str) -> None:
    _assert_same(text)


# --- cost: the rewritten patterns must not backtrack ---------------------------------------

_SIZE = 100_000


@pytest.mark.parametrize(
    "unit",
    ["1-", "1 ", "(2", "(0", "0(", "1 (", "415 ", "0 ", "0/", "+1(", "1.1.", "9 ", "X-",
     "2A ", "1 2", "12 ", "AB 1", "a:1", "::1", "f:", "GB", "G1", "4111 ", "9-", "1:", ": ",
     "a.:", "0000 ", "AA00 ", "A0000000", "1.1.1.", "555 2671 "],
)  # fmt: skip
def test_adversarial_digit_runs_scan_in_linear_time(unit: str) -> None:
    text = (unit * (_SIZE // len(unit) + 1))[:_SIZE]
    for candidate in (text, "call " + text, "x " + text + " 1"):
        start = time.perf_counter()
        find_pii(candidate)
        assert time.perf_counter() - start < 1.0
