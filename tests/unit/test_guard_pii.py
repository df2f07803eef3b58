"""PII detectors: what a guard redacts before a provider sees it, and (as much) what it must
leave alone — dates, prices, versions, order numbers and product codes are not personal data."""

from __future__ import annotations

import time

import pytest

from elevenfactor.governance._guard_pii import PII_KINDS, find_pii
from elevenfactor.governance._guard_pii_checks import (
    card_network,
    dni_valid,
    iban_valid,
    luhn_valid,
    nino_valid,
    nir_valid,
    ssn_valid,
)


def found(text: str) -> list[tuple[str, str]]:
    return [(f.kind, text[f.start : f.end]) for f in find_pii(text)]


@pytest.mark.parametrize(
    ("text", "kind", "value"),
    [
        ("Write to jane.doe@example.com today.", "email", "jane.doe@example.com"),
        ("<o'brien+news@mail.example.co.uk>", "email", "o'brien+news@mail.example.co.uk"),
        ("Schreiben Sie an josé@exämple.de.", "email", "josé@exämple.de"),
        ("mailto:support@example.org?subject=hi", "email", "support@example.org"),
        ("Call +44 20 7946 0958 now", "phone", "+44 20 7946 0958"),
        ("Tel: +1 (415) 555-2671.", "phone", "+1 (415) 555-2671"),
        ("whatsapp +14155552671", "phone", "+14155552671"),
        ("from abroad +44 (0)20 7946 0958", "phone", "+44 (0)20 7946 0958"),
        ("office (415) 555-2671 ext", "phone", "(415) 555-2671"),
        ("office 415-555-2671", "phone", "415-555-2671"),
        ("office 415.555.2671", "phone", "415.555.2671"),
        ("toll free 1-800-555-0199", "phone", "1-800-555-0199"),
        ("call me at 415 555 2671", "phone", "415 555 2671"),
        ("ring 020 7946 0958 after six", "phone", "020 7946 0958"),
        ("portable : 06 12 34 56 78", "phone", "06 12 34 56 78"),
        ("Büro 030 1234567", "phone", "030 1234567"),
        ("Zentrale (089) 123 4567", "phone", "(089) 123 4567"),
        ("Fax 089/1234567", "phone", "089/1234567"),
        ("card 4111 1111 1111 1111 exp 12/29", "payment_card", "4111 1111 1111 1111"),
        ("card 4111-1111-1111-1111", "payment_card", "4111-1111-1111-1111"),
        ("card 4111111111111111.", "payment_card", "4111111111111111"),
        ("amex 3782 822463 10005", "payment_card", "3782 822463 10005"),
        ("amex 378282246310005", "payment_card", "378282246310005"),
        ("mc 5555 5555 5555 4444", "payment_card", "5555 5555 5555 4444"),
        ("mc 2-series 2223003122003222", "payment_card", "2223003122003222"),
        ("discover 6011 1111 1111 1117", "payment_card", "6011 1111 1111 1117"),
        ("jcb 3530111333300000", "payment_card", "3530111333300000"),
        ("diners 3056 930902 5904", "payment_card", "3056 930902 5904"),
        ("unionpay 6205 5000 0000 0000 004", "payment_card", "6205 5000 0000 0000 004"),
        ("13-digit visa 4222222222222", "payment_card", "4222222222222"),
        ("card 4111 1111 1111 1111 123 (cvv)", "payment_card", "4111 1111 1111 1111"),
        ("since 2019 call 020 7946 0958 2023", "phone", "020 7946 0958"),
        ("pay to GB82 WEST 1234 5698 7654 32 please", "iban", "GB82 WEST 1234 5698 7654 32"),
        ("IBAN: DE89370400440532013000", "iban", "DE89370400440532013000"),
        ("FR14 2004 1010 0505 0001 3M02 606 IBAN", "iban", "FR14 2004 1010 0505 0001 3M02 606"),
        ("NO93 8601 1117 947.", "iban", "NO93 8601 1117 947"),
        (
            "MT84 MALT 0110 0001 2345 MTLC AST0 01S",
            "iban",
            "MT84 MALT 0110 0001 2345 MTLC AST0 01S",
        ),
        ("SSN 123-45-6789.", "us_ssn", "123-45-6789"),
        ("my ssn: 123456789", "us_ssn", "123456789"),
        ("social security number 123 45 6789", "us_ssn", "123 45 6789"),
        ("NI number AB 12 34 56 C", "uk_nino", "AB 12 34 56 C"),
        ("NINO AB123456C", "uk_nino", "AB123456C"),
        ("DNI 12345678Z", "es_dni", "12345678Z"),
        ("DNI 12345678-Z", "es_dni", "12345678-Z"),
        ("NIE X1234567L", "es_dni", "X1234567L"),
        ("NIR 1 84 12 76 451 089 46", "fr_nir", "1 84 12 76 451 089 46"),
        ("NIR 269054958815780", "fr_nir", "269054958815780"),
        ("host 192.168.1.10 down", "ipv4", "192.168.1.10"),
        ("resolver 8.8.8.8.", "ipv4", "8.8.8.8"),
        ("listen 203.0.113.5:8080", "ipv4", "203.0.113.5"),
        ("net 10.0.0.0/8", "ipv4", "10.0.0.0"),
        ("addr 2001:db8::1 ok", "ipv6", "2001:db8::1"),
        ("addr 2606:4700:4700::1111.", "ipv6", "2606:4700:4700::1111"),
        ("mapped ::ffff:192.0.2.1", "ipv6", "::ffff:192.0.2.1"),
        (
            "full 2001:0db8:85a3:0000:0000:8a2e:0370:7334",
            "ipv6",
            "2001:0db8:85a3:0000:0000:8a2e:0370:7334",
        ),
    ],
)
def test_positive(text: str, kind: str, value: str) -> None:
    assert found(text) == [(kind, value)]


@pytest.mark.parametrize(
    "text",
    [
        # dates, times, prices, quantities
        "Due 2023-10-15, paid 15.10.2023, shipped 10/15/2023 at 14:30:45.",
        "Meeting 01.02.2023 12:30 to 01-02-2023 13:00.",
        "Total $1,299.99 (EUR 1.299,00) for 3 items.",
        "Buffer sizes 256 512 1024 and 2048 4096 8192.",
        "Population 8 336 817 in 2019.",
        # versions, builds, sections
        "Upgrade to 1.2.3 or v10.15.7; Windows 10.0.19041.1 build.",
        "version 1.2.3.4 fixed it; see section 4.1.2.3 and OID 1.3.6.1.4.1.",
        "netmask 255.255.255.0, loopback 127.0.0.1 and ::1, any 0.0.0.0, mcast 224.0.0.251",
        "link-local 169.254.10.20 and fe80::1",
        # identifiers and codes
        "Order 1234567890123456 shipped; order #4111111111111112; ref 00123-45678.",
        "SKU 555-123-4567 and part no. 555-123-4567 in stock.",
        "ISBN 978-3-16-148410-0 and ISBN 0-306-40615-2.",
        "Tracking 0012 3456 7890 1234; invoice 020 7946 0958.",
        "Request 123e4567-e89b-12d3-a456-426614174000 failed.",
        "commit a94a8fe5ccb19ba61c4c0873d391e987982fbbd3 fixes it.",
        "Plain id 123456789 and 4111111111111112 and 12345678901234567890.",
        # invalid checksums and ranges
        "Card 4111 1111 1111 1112 and 1234 5678 9012 3456.",
        "Account 4111 1111 1111 1111 1111 1111 and amount 4111111111111111.50",
        "Bad IBAN GB82 WEST 1234 5698 7654 33 and XX82 WEST 1234 5698 7654 32.",
        "SSN 000-12-3456, 666-12-3456, 912-34-5678, 123-00-4567, 123-45-0000.",
        "SSN 078-05-1120 was printed in wallets.",
        "NINO QQ 12 34 56 C, GB123456A, AB123456E.",
        "DNI 12345678A and NIE X1234567A.",
        # look-alike e-mail and network strings
        "icon@2x.png, lodash@4.17.21, git@github.com:org/repo.git, @decorator, a@b",
        "postgres://app:s3cret@db.example.com/app",
        "Time 10:30:45, MAC 00:1a:2b:3c:4d:5e, C++ std::vector, cafe::beef, a::b",
        "base64 SGVsbG8gd29ybGQgdGhpcyBpcyBhIHRlc3Q= and +-+-+-",
        # phone-like product codes and math
        "Model 020-7946-0958 replaced; patent 06 12 34 56 78.",
        "x = 1 + 12345678; 000-12-3456",
    ],
)
def test_negative(text: str) -> None:
    assert found(text) == []


def test_findings_carry_rule_kind_positions_and_no_value() -> None:
    text = "Jane <jane@example.com>, card 4111 1111 1111 1111"
    findings = find_pii(text)
    assert [(f.rule, f.kind) for f in findings] == [
        ("pii.email", "email"),
        ("pii.payment_card", "payment_card"),
    ]
    for f in findings:
        assert "jane" not in f.detail and "4111" not in f.detail
        assert f.to_dict()["start"] == f.start
    assert findings[1].detail == "Visa card, Luhn valid"


def test_kinds_filter_and_unknown_kind() -> None:
    text = "jane@example.com 192.168.1.10"
    assert [f.kind for f in find_pii(text, kinds=["ipv4"])] == ["ipv4"]
    assert find_pii(text, kinds=[]) == []
    with pytest.raises(ValueError, match="unknown PII kinds \\['passport'\\]"):
        find_pii(text, kinds=["passport"])
    assert set(PII_KINDS) >= {"email", "phone", "payment_card", "iban", "us_ssn", "ipv6"}


def test_ip_detail_names_the_range() -> None:
    details = [f.detail for f in find_pii("8.8.8.8 10.1.2.3 192.0.2.7 2001:db8::5")]
    assert details == [
        "IPv4 address (public)",
        "IPv4 address (private)",
        "IPv4 address (documentation)",
        "IPv6 address (documentation)",
    ]


def test_unicode_text_around_matches() -> None:
    text = "連絡先taro@example.jpです。電話+81 3-1234-5678。カード4111111111111111です — “8.8.8.8”"
    assert found(text) == [
        ("email", "taro@example.jp"),
        ("phone", "+81 3-1234-5678"),
        ("payment_card", "4111111111111111"),
        ("ipv4", "8.8.8.8"),
    ]
    emoji = "📧 jane@example.com 🎉 +44 20 7946 0958 ✅"
    assert [v for _, v in found(emoji)] == ["jane@example.com", "+44 20 7946 0958"]


def test_nested_findings_are_dropped_overlapping_kept() -> None:
    # The IBAN's digits contain national-phone-shaped groups; only the IBAN is reported.
    assert found("GB82 WEST 1234 5698 7654 32") == [("iban", "GB82 WEST 1234 5698 7654 32")]
    assert found("DE89 3704 0044 0532 0130 00") == [("iban", "DE89 3704 0044 0532 0130 00")]
    # Same span reported by two kinds stays reported twice (redaction merges them).
    two = [f.kind for f in find_pii("x 4111111111111111 y")]
    assert two == ["payment_card"]


def test_cards_in_a_row() -> None:
    text = "4111111111111111 5555555555554444, 4111-1111-1111-1111 3782 822463 10005"
    assert [v for _, v in found(text)] == [
        "4111111111111111",
        "5555555555554444",
        "4111-1111-1111-1111",
        "3782 822463 10005",
    ]


def test_adjacent_findings_in_one_string() -> None:
    text = "GB82 WEST 1234 5698 7654 32 DE89 3704 0044 0532 0130 00,jane@example.com;8.8.8.8"
    assert [k for k, _ in found(text)] == ["iban", "iban", "email", "ipv4"]


# --- check digits -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("digits", "ok"),
    [
        ("79927398713", True),
        ("79927398710", False),
        ("0", True),
        ("", False),
        ("4111111111111111", True),
        ("4111111111111121", False),
        ("41111111111111a1", False),
        ("٤١١١١١١١١١١١١١١١", False),  # Arabic-Indic digits are not card digits
    ],
)
def test_luhn(digits: str, ok: bool) -> None:
    assert luhn_valid(digits) is ok


@pytest.mark.parametrize(
    ("digits", "network"),
    [
        ("4111111111111111", "Visa"),
        ("411111111111111", None),  # Visa has no 15-digit cards
        ("2720990000000007", "Mastercard"),
        ("2721000000000000", None),
        ("5105105105105100", "Mastercard"),
        ("5605105105105100", None),  # Maestro range, deliberately not covered
        ("371449635398431", "American Express"),
        ("3714496353984310", None),
        ("6221260000000000", "Discover"),
        ("3528000000000000", "JCB"),
        ("3590000000000000", None),
        ("30569309025904", "Diners Club"),
        ("6200000000000005", "UnionPay"),
    ],
)
def test_card_networks(digits: str, network: str | None) -> None:
    assert card_network(digits) == network


@pytest.mark.parametrize(
    ("iban", "ok"),
    [
        ("GB82WEST12345698765432", True),
        ("GB82WEST12345698765433", False),  # check digits
        ("GB82WEST1234569876543", False),  # length for GB is 22
        ("gb82west12345698765432", False),  # compact form is upper case
        ("QQ82WEST12345698765432", False),  # unknown country
        ("BE68539007547034", True),
        ("BE6853900754703", False),
        ("CH9300762011623852957", True),
        ("BR9700360305000010009795493P1", True),
        ("GB8XWEST12345698765432", False),
        ("GB00WEST12345698765432", False),
    ],
)
def test_iban(iban: str, ok: bool) -> None:
    assert iban_valid(iban) is ok


@pytest.mark.parametrize(
    ("ssn", "ok"),
    [
        ("123456789", True),
        ("001010001", True),
        ("665999999", True),
        ("899999999", True),
        ("000123456", False),
        ("666123456", False),
        ("900123456", False),
        ("999999999", False),
        ("123004567", False),
        ("123450000", False),
        ("078051120", False),
        ("219099999", False),
        ("12345678", False),
    ],
)
def test_ssn_ranges(ssn: str, ok: bool) -> None:
    assert ssn_valid(ssn) is ok


@pytest.mark.parametrize(
    ("nino", "ok"),
    [
        ("AB123456C", True),
        ("ZY123456D", True),
        ("AB123456E", False),
        ("DA123456A", False),
        ("AO123456A", False),
        ("GB123456A", False),
        ("NK123456A", False),
        ("TN123456A", False),
        ("AB12345XA", False),
    ],
)
def test_nino(nino: str, ok: bool) -> None:
    assert nino_valid(nino) is ok


def test_dni_and_nie_letters() -> None:
    assert dni_valid("12345678Z") and dni_valid("00000000T") and dni_valid("X1234567L")
    assert dni_valid("Y1234567X") and dni_valid("Z1234567R")
    assert not dni_valid("12345678A") and not dni_valid("W1234567L")
    assert not dni_valid("1234567Z")


def test_nir_key_including_corsica() -> None:
    assert nir_valid("184127645108946") and nir_valid("269054958815780")
    assert not nir_valid("184127645108947")
    body = "180012A004123"
    key = 97 - int(body.replace("2A", "19")) % 97
    assert nir_valid(f"{body}{key:02d}")
    assert not nir_valid(f"180012B004123{key:02d}")
    assert found(f"NIR {body}{key:02d}") == [("fr_nir", f"{body}{key:02d}")]


# --- cost: no catastrophic backtracking ---------------------------------------------------

_SIZE = 100_000


def _rep(unit: str) -> str:
    return (unit * (_SIZE // len(unit) + 1))[:_SIZE]


def _scan_seconds(text: str) -> float:
    start = time.perf_counter()
    find_pii(text)
    return time.perf_counter() - start


def test_100kb_of_mixed_text_is_scanned_fast() -> None:
    text = _rep(
        "Dear Jane, write to jane.doe@example.com or call +44 20 7946 0958; card 4111 1111 "
        "1111 1111, IBAN GB82 WEST 1234 5698 7654 32, host 10.0.0.1, order 123456 of "
        "2023-10-15 for $1,299.99 (v1.2.3). "
    )
    assert len(find_pii(text)) > 1000
    assert _scan_seconds(text) < 1.0  # a guard against backtracking, not a benchmark


@pytest.mark.parametrize(
    "unit",
    [
        "a",  # e-mail local part without @
        "a@",
        "a.",
        "a-b.",
        "1 ",  # phone groups
        "+1 ",
        "(0",
        "0-",
        "415-555-",
        "4",  # card digits
        "4 ",
        "4-",
        "GB82 ",  # IBAN
        "GB82A",
        "123-45-",  # SSN
        "AB 12 ",  # NINO
        "12345678",  # DNI
        "1 84 12 ",  # NIR
        "1.",  # IPv4
        "255.",
        "a:",  # IPv6
        "1:",
        "f",
        "::",
    ],
)
def test_adversarial_inputs_do_not_backtrack(unit: str) -> None:
    assert _scan_seconds(_rep(unit)) < 1.0
    assert _scan_seconds("x@" + _rep(unit)) < 1.0
