"""The dashboard's SVG charts (``server.ui._charts`` + ``templates/_charts.html``): geometry
that matches the numbers, an accessible name, title and data table for each chart, no inline
style (the CSP forbids it), and every label escaped — a series called ``<script>`` is text."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest

from elevenfactor.errors import RequestError
from elevenfactor.server.ui._charts import (
    PointSeries,
    Series,
    burn,
    lines,
    nice_ceiling,
    stacked_bars,
)
from elevenfactor.server.ui._ranges import RangeQuery, TimeRange, bucket_keys, resolve_range
from elevenfactor.server.ui._render import environment

EVIL = '<script>alert("x")</script>'
DAY = dt.datetime(2026, 12, 1, tzinfo=dt.UTC).timestamp()


def _render(macro: str, value: Any) -> str:
    template = environment().from_string(
        '{% import "_charts.html" as charts %}{{ charts.' + macro + "(value) }}"
    )
    return template.render(value=value)


def _attrs(html: str, tag: str) -> list[dict[str, str]]:
    return [
        dict(re.findall(r'([a-z-]+)="([^"]*)"', m)) for m in re.findall(f"<{tag} ([^>]*)>", html)
    ]


@pytest.mark.parametrize(
    ("value", "top"),
    [(0, 1.0), (-3, 1.0), (float("nan"), 1.0), (0.7, 1.0), (1.0, 1.0), (1.2, 2.0), (2.1, 2.5),
     (3, 5.0), (7.5, 10.0), (0.0042, 0.005), (123, 200.0), (2500, 2500.0)],
)  # fmt: skip
def test_nice_ceiling(value: float, top: float) -> None:
    assert nice_ceiling(value) == pytest.approx(top)


def test_stacked_bars_stack_in_order_and_scale_to_a_nice_ceiling() -> None:
    chart = stacked_bars(
        "Spend over time",
        ["2026-12-01", "2026-12-02", "2026-12-03"],
        [
            Series("a", (1.0, 3.0, 0.0)),
            Series("b", (1.0, 1.0, 0.0)),
            Series("rest", (0, 0, 0), True),
        ],
    )
    left, top, right, bottom = chart.plot
    height = bottom - top
    assert [(b.title, b.h) for b in chart.bars] == [
        ("a, 2026-12-01: 1", pytest.approx(height * 1 / 5)),
        ("b, 2026-12-01: 1", pytest.approx(height * 1 / 5)),
        ("a, 2026-12-02: 3", pytest.approx(height * 3 / 5)),  # the ceiling of 4 is 5
        ("b, 2026-12-02: 1", pytest.approx(height * 1 / 5)),
    ]
    a1, b1 = chart.bars[0], chart.bars[1]
    assert a1.y + a1.h == pytest.approx(bottom) and b1.y + b1.h == pytest.approx(a1.y)
    assert a1.x == b1.x and a1.colour != b1.colour
    assert chart.bars[2].x > a1.x and all(left <= b.x <= right for b in chart.bars)
    assert [t.text for _, t in chart.grid] == ["0", "1", "2", "3", "4", "5"]
    assert chart.table.columns == ("Bucket", "a", "b", "rest", "Total")
    assert chart.table.rows[1] == ("2026-12-02", "3", "1", "0", "4")
    assert [t.text for _, t in chart.legend] == ["a", "b", "rest"]
    assert chart.legend[2][0].colour == "#9aa3ad" and not chart.empty


def test_series_must_have_a_value_per_bucket() -> None:
    with pytest.raises(ValueError, match="2 values for 3 buckets"):
        stacked_bars("x", ["a", "b", "c"], [Series("s", (1.0, 2.0))])


def test_a_chart_renders_accessibly_without_inline_styles_and_escapes_labels() -> None:
    chart = stacked_bars(EVIL, ["2026-12-01", "2026-12-02"], [Series(EVIL, (1.0, 2.0))])
    html = _render("chart", chart)
    assert "<script" not in html and "&lt;script&gt;" in html
    assert (
        'role="img"' in html
        and 'aria-label="&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;"' in html
    )
    assert html.count("<title>") == 1 + 2 + 1  # the chart, each bar, the legend swatch
    assert "<details" in html and "<summary>Data: " in html and '<th scope="col">' in html
    assert "style=" not in html
    rects = _attrs(html, "rect")
    assert all(float(r["height"]) > 0 for r in rects)
    assert sorted(float(r["height"]) for r in rects)[-1] == pytest.approx(chart.bars[1].h)


def test_an_empty_chart_says_so() -> None:
    chart = stacked_bars("Spend over time", ["2026-12-01"], [])
    html = _render("chart", chart)
    assert chart.empty and "No data in this range" in html and "Nothing in this range." in html


def test_lines_place_points_in_time_and_value() -> None:
    since, until = DAY, DAY + 10 * 86400
    chart = lines(
        "Eval pass rate over time",
        [PointSeries(EVIL, ((DAY, 0.0), (DAY + 5 * 86400, 0.5), (until, 1.0)), ("a", "b", "c")),
         PointSeries("one", ((DAY + 86400, 0.25),))],
        since=since, until=until, fmt=lambda v: f"{v * 100:.0f}%", y_max=1.0,
    )  # fmt: skip
    left, top, right, bottom = chart.plot
    xs = [(d.x, d.y) for d in chart.points]
    assert xs[0] == (left, bottom) and xs[2] == (right, top)
    assert xs[1] == (pytest.approx((left + right) / 2), pytest.approx((top + bottom) / 2))
    assert len(chart.paths) == 1  # a single point draws no line
    assert chart.paths[0].points.split(" ")[0] == f"{left},{bottom}"
    assert [t.text for _, t in chart.grid] == ["0%", "20%", "40%", "60%", "80%", "100%"]
    assert chart.x_labels[0].text == "2026-12-01" and chart.x_labels[-1].text == "2026-12-11"
    assert [r[0] for r in chart.table.rows] == sorted(r[0] for r in chart.table.rows)
    assert ("12-02 00:00", "one", "25%", "") in chart.table.rows
    html = _render("chart", chart)
    assert "<script" not in html and "stroke-dasharray" not in html.split("<polyline", 1)[0]
    assert "style=" not in html


def test_lines_need_a_range() -> None:
    with pytest.raises(ValueError, match="after"):
        lines("x", [], since=DAY, until=DAY)


def test_burn_bars_show_spent_reserved_and_the_limit() -> None:
    under = burn("Budget org burn", 2.0, 1.0, 10.0, width=200)
    assert (under.spent_w, under.reserved_x, under.reserved_w, under.limit_x) == (40, 40, 20, 200)
    assert under.used == pytest.approx(0.3) and not under.over
    over = burn("Budget user:ann burn", 1.5, 0.5, 1.0, width=200)
    assert over.over and over.limit_x == 100 and over.spent_w + over.reserved_w == 200
    html = _render("burn", burn(EVIL, 1.0, 0.0, 4.0))
    assert "<script" not in html and 'role="img"' in html and "25%" in html
    assert "style=" not in html
    over_html = _render("burn", over)
    assert "over the limit" in over_html and 'fill="#b42318"' in over_html
    with pytest.raises(ValueError):
        burn("x", 1.0, 0.0, 0.0)


def test_ranges_and_buckets() -> None:
    now = DAY + 12 * 3600 + 1800  # 2026-12-01 12:30 UTC
    day = resolve_range(RangeQuery(range="24h"), now)
    assert (day.since, day.until, day.preset) == (now - 86400, now, "24h")
    hours = bucket_keys("hour", day)
    assert len(hours) == 25 and hours[0] == "2026-11-30T12:00" and hours[-1] == "2026-12-01T12:00"
    custom = resolve_range(RangeQuery(range="custom", since="2026-11-01", until="2026-11-03"), now)
    assert bucket_keys("day", custom) == ["2026-11-01", "2026-11-02"]
    assert resolve_range(RangeQuery(range="7d", since="", until=""), now).preset == "7d"
    with pytest.raises(RequestError) as err:
        bucket_keys("hour", TimeRange(now - 40 * 86400, now, "custom"))
    assert err.value.code == "ui_too_many_buckets"
    for since, until in (("2026-12-02", "2026-12-01"), ("not-a-date", None), (None, None)):
        with pytest.raises(RequestError) as err:
            resolve_range(RangeQuery(range="custom", since=since, until=until), now)
        assert err.value.code == "ui_bad_range"


@pytest.mark.parametrize(
    ("peak", "integer", "labels"),
    [
        (4, True, ["0", "1", "2", "3", "4", "5"]),
        (2, True, ["0", "1", "2"]),
        (1, True, ["0", "1"]),
        (0, True, ["0", "1"]),
        (7, True, ["0", "2", "4", "6", "8", "10"]),
        (18, True, ["0", "5", "10", "15", "20"]),
        (0.9, False, ["0", "0.2", "0.4", "0.6", "0.8", "1"]),
        (2, False, ["0", "0.5", "1", "1.5", "2"]),
    ],
)
def test_gridlines_fall_on_round_values(peak: float, integer: bool, labels: list[str]) -> None:
    chart = stacked_bars("x", ["b"], [Series("s", (float(peak),))], integer=integer)
    assert [t.text for _, t in chart.grid] == labels
    ys = [y for y, _ in chart.grid]
    assert ys[0] == chart.plot[3] and ys[-1] == chart.plot[1]
