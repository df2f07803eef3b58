"""The dashboard's template filters (``server.ui._render``): counts, money and durations as
the pages print them."""

from __future__ import annotations

import pytest

from elevenfactor.server.ui._render import environment


def render(text: str, **values: object) -> str:
    return environment().from_string(text).render(**values)


@pytest.mark.parametrize(
    ("n", "want"),
    [(0, "0 events"), (1, "1 event"), (2, "2 events"), (1204, "1,204 events"), (None, "0 events")],
)
def test_a_count_agrees_with_its_number(n: int | None, want: str) -> None:
    assert render('{{ n | count("event") }}', n=n) == want


def test_a_count_with_an_irregular_plural() -> None:
    assert render('{{ n | count("policy", "policies") }}', n=3) == "3 policies"
    assert render('{{ n | count("policy", "policies") }}', n=1) == "1 policy"


@pytest.mark.parametrize(
    ("value", "want"),
    [(None, "—"), (0, "$0"), (0.00042, "$0.000420"), (0.5, "$0.50"), (12.5, "$12.50"),
     (-0.5, "-$0.50"), (1234.4, "$1,234")],
)  # fmt: skip
def test_money(value: float | None, want: str) -> None:
    assert render("{{ v | money }}", v=value) == want


@pytest.mark.parametrize(
    ("seconds", "want"),
    [(None, "—"), (0.84, "840 ms"), (12.4, "12.4 s"), (185, "3 min 05 s"), (7620, "2 h 07 min"),
     (273600, "3 d 4 h")],
)  # fmt: skip
def test_duration(seconds: float | None, want: str) -> None:
    assert render("{{ s | duration }}", s=seconds) == want
