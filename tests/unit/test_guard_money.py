"""Money thresholds (factor 10): amounts a payment tool is about to move, in the formats models
and people write them, read with Decimal only; every amount above the threshold is a finding,
amounts in another currency fail closed, and no input makes the check raise."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from elevenfactor.governance._guard_money import find_money_over

PROPERTY = settings(max_examples=200, deadline=None)
LIMIT = Decimal(1000)


def rules_of(value: Any, currency: str | None = None, limit: Decimal = LIMIT) -> list[str]:
    return [f.rule for f in find_money_over(value, limit, currency)]


@pytest.mark.parametrize(
    ("value", "over"),
    [
        (1000, False),  # strictly above
        (1001, True),
        (Decimal("1000.00"), False),
        (Decimal("1000.01"), True),
        (1000.01, True),
        (0.1 + 0.2, False),
        (-5000, True),  # a refund moves money too
        (Fraction(5001, 5), True),
        (True, False),  # a boolean is no amount
        (None, False),
        ("1250", True),
        ("  1250.00  ", True),
        ("-1250", True),
        ("(1,250.00)", True),  # accounting negative
        ("1e6", True),
        ("999.99", False),
        ("$1,250.00", True),
        ("$999.99", False),
        ("1.250,00 €", True),
        ("1 250,00 €", True),
        ("1\u00a0250,00\u00a0€", True),  # no-break spaces
        ("1'250.00 CHF", True),
        ("1\u2019250.00 CHF", True),
        ("EUR 1250", True),
        ("EUR1250", True),
        ("1250 USD", True),
        ("1250USD", True),
        ("USD 1,250", True),
        ("£1,000.50", True),
        ("US$ 2000", True),
        ("R$ 5.000,00", True),
        ("12,345,678.90 kr", True),
        ("1,250", True),  # a single separator before three digits groups: the larger reading
        ("1.250", True),
        ("1.25", False),
        ("1,25", False),
        ("0,250", False),
        ("1.2500", False),
        ("$1.2k", True),
        ("1.2k", True),
        ("$0.9k", False),
        ("EUR 3M", True),
        ("$2 million", True),
        ("3 bn USD", True),
        ("EUR 4 Mio", True),
        ("$5mm", True),
        ("-$5,000", True),
        ("$-5,000", True),
        ("\u22125000", True),  # a minus sign
        ("order 12345 shipped", False),  # bare numbers in text are no amounts
        ("5 kg of rice for $3", False),
        ("5km", False),
        ("v1.2.3", False),
        ("", False),
        ("free", False),
    ],
)
def test_amounts(value: Any, over: bool) -> None:
    assert rules_of(value) == (["money.over_threshold"] if over else [])


def test_amounts_in_text_are_located() -> None:
    text = "Please wire $12,500.00 today and €20 tomorrow."
    found = find_money_over(text, LIMIT, None)
    assert [(f.rule, text[f.start : f.end]) for f in found] == [
        ("money.over_threshold", "$12,500.00")
    ]
    assert found[0].detail == "amount above the threshold of 1000"
    assert "12,500" not in found[0].detail


def test_currency_aware_comparison() -> None:
    assert rules_of("$5,000", "USD") == ["money.over_threshold"]
    assert rules_of("5000 usd", "usd") == ["money.over_threshold"]
    assert rules_of("5000", "USD") == ["money.over_threshold"]  # no currency: the given one
    assert rules_of("$500", "USD") == []
    assert rules_of("CHF 999.99", "CHF") == []
    assert rules_of("¥150000", "JPY") == ["money.over_threshold"]
    assert rules_of("$5,000", "CAD") == ["money.over_threshold"]  # $ may be CAD
    assert rules_of("US$ 5,000", "CAD") == ["money.currency_mismatch"]
    assert rules_of("kr 5000", "NOK") == ["money.over_threshold"]


def test_other_currencies_fail_closed_whatever_their_size() -> None:
    found = find_money_over("EUR 5 and ¥10 and 999 USD", LIMIT, "USD")
    assert [f.rule for f in found] == ["money.currency_mismatch", "money.currency_mismatch"]
    assert found[0].detail == "amount in 'EUR' cannot be compared with a USD threshold"


def test_without_a_currency_every_amount_is_compared() -> None:
    assert rules_of("EUR 1250 and ¥1500 and $5", None) == [
        "money.over_threshold",
        "money.over_threshold",
    ]


def test_structured_payment_arguments() -> None:
    payment = {"amount": 5000, "currency": "eur", "customer_id": 123456789, "memo": "n/a"}
    found = find_money_over(payment, LIMIT, "EUR")
    assert [(f.rule, f.detail) for f in found] == [
        ("money.over_threshold", "amount: amount above the threshold of 1000 EUR")
    ]
    assert rules_of(payment, "USD") == ["money.currency_mismatch"]
    nested = {"order": {"items": [{"unitPrice": "$2,000"}, {"unit_price": 10}]}}
    found = find_money_over(nested, LIMIT, None)
    assert [f.detail for f in found] == [
        "order.items[0].unitPrice: amount above the threshold of 1000"
    ]
    assert rules_of({"note": "refund $5,000"}) == ["money.over_threshold"]
    assert rules_of({"note": "ticket 5000"}) == []
    assert rules_of({"amount_cents": 500000}) == ["money.over_threshold"]  # minor units
    assert rules_of([100, "2,000"]) == ["money.over_threshold"]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), "Infinity", "-inf", "NaN"])
def test_non_finite_amounts_are_invalid(value: Any) -> None:
    assert rules_of(value) == ["money.invalid"]


def test_threshold_must_be_finite() -> None:
    with pytest.raises(ValueError, match="finite"):
        find_money_over(5, Decimal("NaN"), None)


@PROPERTY
@given(st.integers(min_value=0, max_value=10**12), st.sampled_from(["en", "de", "fr", "ch"]))
def test_formatted_amounts_round_trip(cents: int, style: str) -> None:
    amount = Decimal(cents) / 100
    en = f"{amount:,.2f}"
    text = {
        "en": f"${en}",
        "de": en.replace(",", "_").replace(".", ",").replace("_", ".") + " €",
        "fr": en.replace(",", "\u202f").replace(".", ",") + " €",
        "ch": "CHF " + en.replace(",", "'"),
    }[style]
    assert rules_of(text) == (["money.over_threshold"] if amount > LIMIT else [])


@PROPERTY
@given(st.integers(min_value=-(10**15), max_value=10**15))
def test_integers_compare_exactly(value: int) -> None:
    assert rules_of(value) == (["money.over_threshold"] if abs(value) > LIMIT else [])
    assert rules_of(str(value)) == rules_of(value)


@PROPERTY
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
        max_leaves=10,
    ),
    st.sampled_from([None, "USD", "eur", "JPY"]),
)
def test_any_value_never_raises(value: Any, currency: str | None) -> None:
    for finding in find_money_over(value, LIMIT, currency):
        assert finding.rule.startswith("money.")
        assert finding.start == -1 or isinstance(value, str)
