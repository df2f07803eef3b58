"""Budget windows: which window a moment falls in, and when that window resets.

Windows are UTC calendar periods — ``day``, ``week`` (starting Monday), ``month`` — or ``total``
(never resets) or ``run`` (one window per run). A window is named by a key, so the charge of a
call lands in the window it was reserved in even if that window closes meanwhile:
``day:2026-12-01``, ``week:2026-11-30`` (its Monday), ``month:2026-12``, ``total``,
``run:<run id>``.
"""

from __future__ import annotations

import datetime as dt
import math

__all__ = ["WINDOWS", "iso", "resets_at", "usd", "window_key"]

WINDOWS = ("day", "week", "month", "total", "run")


def window_key(window: str, now: float, run_id: str | None = None) -> str | None:
    """The key of the ``window`` that ``now`` (epoch seconds) falls in; for ``run`` windows the
    run's, or None outside a run (such a call is not charged to run-window budgets)."""
    if window == "total":
        return "total"
    if window == "run":
        return None if run_id is None else f"run:{run_id}"
    day = dt.datetime.fromtimestamp(now, dt.UTC).date()
    if window == "day":
        return f"day:{day.isoformat()}"
    if window == "week":
        return f"week:{(day - dt.timedelta(days=day.weekday())).isoformat()}"
    if window == "month":
        return f"month:{day.year:04d}-{day.month:02d}"
    raise ValueError(f"unknown budget window {window!r}")


def resets_at(key: str) -> float | None:
    """When the window named ``key`` ends (epoch seconds); None for ``total`` and runs."""
    kind, _, rest = key.partition(":")
    if kind == "day":
        start = dt.date.fromisoformat(rest)
        end = start + dt.timedelta(days=1)
    elif kind == "week":
        end = dt.date.fromisoformat(rest) + dt.timedelta(days=7)
    elif kind == "month":
        year, month = (int(x) for x in rest.split("-"))
        end = dt.date(year + month // 12, month % 12 + 1, 1)
    else:
        return None
    return dt.datetime(end.year, end.month, end.day, tzinfo=dt.UTC).timestamp()


def iso(ts: float | None) -> str | None:
    """``2026-12-02T00:00:00Z`` for epoch seconds (None stays None)."""
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def usd(amount: float) -> str:
    """Money for people: cents, or more digits for amounts below a cent (``$0.00042``)."""
    if not math.isfinite(amount):
        return f"${amount}"
    if amount == 0 or abs(amount) >= 0.01:
        return f"${amount:,.2f}"
    return f"${amount:.2g}" if abs(amount) < 1e-6 else f"${amount:.6f}".rstrip("0")
