"""Budget definitions without a database: validation, windows and when they reset, the refusal
message, alert thresholds."""

from __future__ import annotations

import datetime as dt
import math

import pytest

from elevenfactor.errors import RequestError
from elevenfactor.governance._alerts import crossed
from elevenfactor.governance._budgets import (
    Budget,
    check_alerts,
    check_limit,
    check_on_exceed,
    check_webhook,
    check_window,
    parse_scope,
)
from elevenfactor.governance._gate_defs import check_money, exceeded, plan
from elevenfactor.governance._spend import Charge
from elevenfactor.governance._windows import iso, resets_at, usd, window_key


def _ts(*args: int) -> float:
    return dt.datetime(*args, tzinfo=dt.UTC).timestamp()


def _budget(window: str = "day", limit: float = 1.0, **kw: object) -> Budget:
    fields: dict[str, object] = {
        "id": "bud_1",
        "org_id": "org_default",
        "scope": "user:alice",
        "kind": "user",
        "target": "user_alice",
        "window": window,
        "limit": limit,
        "soft": False,
        "alerts": (),
        "on_exceed": "refuse",
        "webhook": None,
        "created_by": "root",
        "created_at": 0.0,
        "updated_at": 0.0,
    }
    fields.update(kw)
    return Budget(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("when", "window", "key", "resets"),
    [
        (_ts(2026, 12, 1, 13, 5), "day", "day:2026-12-01", _ts(2026, 12, 2)),
        (_ts(2026, 12, 31, 23, 59, 59), "day", "day:2026-12-31", _ts(2027, 1, 1)),
        (_ts(2028, 2, 28, 12), "day", "day:2028-02-28", _ts(2028, 2, 29)),  # a leap year
        # weeks start on Monday: Tuesday 1 Dec 2026 is in the week of Monday 30 Nov
        (_ts(2026, 12, 1), "week", "week:2026-11-30", _ts(2026, 12, 7)),
        (_ts(2026, 11, 30, 0, 0, 0), "week", "week:2026-11-30", _ts(2026, 12, 7)),
        (_ts(2026, 11, 29, 23, 59), "week", "week:2026-11-23", _ts(2026, 11, 30)),
        # a week across the new year
        (_ts(2027, 1, 2), "week", "week:2026-12-28", _ts(2027, 1, 4)),
        (_ts(2026, 12, 15), "month", "month:2026-12", _ts(2027, 1, 1)),
        (_ts(2027, 1, 31, 23), "month", "month:2027-01", _ts(2027, 2, 1)),
        (_ts(2026, 2, 1), "month", "month:2026-02", _ts(2026, 3, 1)),
        (_ts(2026, 12, 1), "total", "total", None),
    ],
)
def test_windows_and_when_they_reset(
    when: float, window: str, key: str, resets: float | None
) -> None:
    assert window_key(window, when) == key
    assert resets_at(key) == resets


def test_run_windows_exist_only_inside_a_run() -> None:
    assert window_key("run", 0.0) is None
    assert window_key("run", 0.0, "r-1") == "run:r-1"
    assert resets_at("run:r-1") is None
    with pytest.raises(ValueError, match="unknown budget window"):
        window_key("year", 0.0)


def test_usd_and_iso() -> None:
    assert usd(1) == "$1.00" and usd(0.98) == "$0.98" and usd(0) == "$0.00"
    assert usd(1234.5) == "$1,234.50"
    assert usd(0.00042) == "$0.00042"
    assert iso(_ts(2026, 12, 2)) == "2026-12-02T00:00:00Z" and iso(None) is None


@pytest.mark.parametrize(
    ("scope", "parsed"),
    [
        ("org", ("org", "")),
        ("run", ("run", "")),
        ("team:ops", ("team", "ops")),
        ("user:alice", ("user", "alice")),
        ("key:ci-bot", ("key", "ci-bot")),
        ("agent:writer", ("agent", "writer")),
        ("model:openai/gpt-4o", ("model", "openai/gpt-4o")),
    ],
)
def test_scopes(scope: str, parsed: tuple[str, str]) -> None:
    assert parse_scope(scope) == parsed


@pytest.mark.parametrize(
    "scope", ["", "galaxy", "galaxy:x", "user", "user:", "org:x", "run:r1", "user:a b", 5]
)
def test_bad_scopes_name_the_field(scope: object) -> None:
    with pytest.raises(RequestError) as caught:
        parse_scope(scope)  # type: ignore[arg-type]
    assert caught.value.param == "scope"
    assert caught.value.code in ("invalid_budget", "invalid_name", "invalid_id")


@pytest.mark.parametrize(
    ("check", "value", "field"),
    [
        (check_limit, 0, "limit"),
        (check_limit, -1.0, "limit"),
        (check_limit, math.nan, "limit"),
        (check_limit, math.inf, "limit"),
        (check_limit, True, "limit"),
        (check_limit, "5", "limit"),
        (check_window, "year", "window"),
        (check_window, None, "window"),
        (check_on_exceed, "retry", "on_exceed"),
        (check_on_exceed, "downgrade:", "on_exceed"),
        (check_on_exceed, "approve:a b", "on_exceed"),
        (check_webhook, "ftp://host/x", "webhook"),
        (check_webhook, "https://", "webhook"),
        (check_webhook, "https://h/a b", "webhook"),
    ],
)
def test_invalid_fields_are_named(check: object, value: object, field: str) -> None:
    with pytest.raises(RequestError) as caught:
        check(value)  # type: ignore[operator]
    assert caught.value.param == field and caught.value.http_status == 400
    assert caught.value.code in ("invalid_budget", "invalid_name")


def test_valid_fields() -> None:
    assert check_limit(2) == 2.0
    assert check_alerts([1, 0.5, 0.5, 0.8]) == (0.5, 0.8, 1.0)
    for bad in ([0], [1.5], [-0.1], [math.nan], [True], ["0.5"]):
        with pytest.raises(RequestError, match="alerts"):
            check_alerts(bad)
    assert check_on_exceed("downgrade:cheap") == "downgrade:cheap"
    assert check_on_exceed("approve:finance") == "approve:finance"
    assert check_webhook("http://127.0.0.1:9/x") == "http://127.0.0.1:9/x"
    assert check_webhook(None) is None


def test_amounts_must_be_finite() -> None:
    for bad in (math.nan, math.inf, -0.01, True):
        with pytest.raises(ValueError, match="amount"):
            check_money(bad, "amount")
    assert check_money(0, "amount") == 0.0


def test_the_refusal_names_the_budget_and_when_it_resets() -> None:
    key = window_key("day", _ts(2026, 12, 1, 10))
    assert key is not None
    err = exceeded(_budget("day"), key, 0.98, 0.01, 0.05)
    assert err.message == (
        "budget user:alice (day) cannot cover this call: limit $1.00, spent $0.98, reserved"
        " $0.01, this call needs up to $0.05; it resets at 2026-12-02T00:00:00Z"
    )
    assert err.hint is not None and "elevenfactor budgets set user:alice" in err.hint
    assert err.details == {
        "budget": "user:alice",
        "budget_id": "bud_1",
        "limit": 1.0,
        "spent": 0.98,
        "reserved": 0.01,
        "requested": 0.05,
        "window": "day",
        "resets_at": _ts(2026, 12, 2),
        "on_exceed": "refuse",
    }
    assert err.http_status == 429 and err.code == "budget_exceeded"
    assert "does not reset" in exceeded(_budget("total"), "total", 1, 0, 1).message


def test_plan_orders_windows_and_skips_runs_outside_a_run() -> None:
    b1 = _budget("run", id="bud_b")
    b2 = _budget("total", id="bud_a")
    charge = Charge(org_id="org_default")
    assert plan([b1, b2], charge, 0.0) == [(b2, "total")]
    in_run = Charge(org_id="org_default", run_id="r")
    assert [k for _, k in plan([b1, b2], in_run, 0.0)] == ["total", "run:r"]


def test_thresholds_cross_once() -> None:
    b = _budget(alerts=(0.5, 0.8))
    assert crossed(b, 0.0, 0.49) == []
    assert crossed(b, 0.4, 0.5) == [0.5]
    assert crossed(b, 0.5, 0.9) == [0.8]
    assert crossed(b, 0.0, 2.0) == [0.5, 0.8]
    soft = _budget(alerts=(0.5,), soft=True)
    assert soft.thresholds == (0.5, 1.0)  # a soft budget always alerts when reached
    assert crossed(soft, 0.9, 1.2) == [1.0]
