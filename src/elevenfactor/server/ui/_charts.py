"""Server-side SVG charts for the dashboard: the geometry in Python, the markup in
``templates/_charts.html`` (autoescaped, so a label such as ``<script>`` comes out as text).

Three builders, each returning plain data for a Jinja macro:

- ``stacked_bars``: values per time bucket, one stacked series each (spend by model per day);
- ``lines``: points in time per series (an eval suite's pass rate);
- ``burn``: a horizontal bar of a budget — spent, reserved (calls in flight) and the limit.

The content security policy forbids inline styles, so every position and size is an SVG
attribute (``x``, ``y``, ``width``, ``height``, ``points``); colours are presentation
attributes from a palette that stays distinct for colour-blind readers (Okabe-Ito), and no
chart relies on colour alone: every chart has a legend, a ``<title>`` per mark and a data
table in a ``<details>`` element (``DataTable``).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = [
    "PALETTE",
    "Burn",
    "Chart",
    "DataTable",
    "PointSeries",
    "Series",
    "burn",
    "lines",
    "nice_ceiling",
    "stacked_bars",
]

PALETTE = (
    "#0072b2",
    "#e69f00",
    "#009e73",
    "#cc79a7",
    "#56b4e9",
    "#d55e00",
    "#7a6a00",
    "#000000",
)
"""Series colours (Okabe-Ito, with a darker yellow for contrast on white)."""
OTHER_COLOUR = "#9aa3ad"
"""The colour of the ``other`` series (what is not in the top N)."""
_DASHES = ("", "6 3", "2 3", "8 3 2 3")
"""Line dash patterns, so that lines differ by more than colour."""

WIDTH, HEIGHT = 720, 240
_LEFT, _RIGHT, _TOP, _BOTTOM = 70, 12, 12, 26
_LEGEND_ROW, _LEGEND_ITEM, _LEGEND_NAME = 18, 176, 24
MAX_LABEL = 200
"""Longest label kept (characters); longer ones end with an ellipsis."""


Format = Callable[[float], str]


def _clip(text: str, limit: int = MAX_LABEL) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _plain(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 10 or value == int(value) else f"{value:.2g}"


@dataclass(frozen=True, slots=True)
class Series:
    """One stacked series: its name and a value per bucket; ``other`` draws it grey."""

    name: str
    values: tuple[float, ...]
    other: bool = False


@dataclass(frozen=True, slots=True)
class PointSeries:
    """One line: its name and ``(epoch seconds, value)`` points, oldest first; ``notes``
    (one per point, optional) go into the point's tooltip and the data table."""

    name: str
    points: tuple[tuple[float, float], ...]
    notes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DataTable:
    """The chart's numbers as a table (the text alternative)."""

    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True, slots=True)
class Mark:
    """A rectangle (a bar, a legend swatch) or a circle (a point: ``w`` is its radius)."""

    x: float
    y: float
    w: float
    h: float
    colour: str
    title: str


@dataclass(frozen=True, slots=True)
class Path:
    """A polyline: ``points`` as the SVG attribute wants them."""

    points: str
    colour: str
    dash: str
    title: str


@dataclass(frozen=True, slots=True)
class Text:
    """A label at ``(x, y)``; ``anchor`` is ``start``, ``middle`` or ``end``."""

    x: float
    y: float
    text: str
    anchor: str = "middle"


@dataclass(frozen=True, slots=True)
class Chart:
    """Everything ``_charts.html``'s ``chart`` macro draws: the accessible name (``label``,
    also the ``<title>``), a one-line summary (``<desc>``), the axes' gridlines and labels,
    the marks, the legend and the data table."""

    label: str
    summary: str
    width: int
    height: int
    plot: tuple[float, float, float, float]
    """``(left, top, right, bottom)`` of the plotting area."""
    grid: tuple[tuple[float, Text], ...]
    """``(y, label)`` of each horizontal gridline."""
    x_labels: tuple[Text, ...]
    bars: tuple[Mark, ...]
    paths: tuple[Path, ...]
    points: tuple[Mark, ...]
    legend: tuple[tuple[Mark, Text], ...]
    table: DataTable
    empty: bool


@dataclass(frozen=True, slots=True)
class Burn:
    """A budget's burn bar: the spent part, the reserved part after it, the limit's mark, and
    ``used`` (spent and reserved over the limit, for the text)."""

    label: str
    summary: str
    width: int
    height: int
    spent_w: float
    reserved_x: float
    reserved_w: float
    limit_x: float
    used: float
    over: bool


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 times a power of ten at or above ``value`` (1 for
    nothing to show)."""
    if not math.isfinite(value) or value <= 0:
        return 1.0
    exp = math.floor(math.log10(value))
    for step in (1.0, 2.0, 2.5, 5.0, 10.0):
        top = step * 10.0**exp
        if top >= value * (1 - 1e-12):
            return top
    return 10.0 ** (exp + 1)  # pragma: no cover - the loop always returns


def _steps(top_value: float, integer: bool) -> int:
    """Gridline intervals for an axis up to ``top_value`` (a ``nice_ceiling``) that fall on
    round values: fifths of 1, 2.5 and 5 (0.2, 0.5, 1), quarters of 2; whole numbers only for
    counts below 5."""
    if integer and top_value < 5:
        return max(1, round(top_value))
    mantissa = top_value / 10.0 ** math.floor(math.log10(top_value))
    return 4 if abs(mantissa - 2.0) < 1e-9 else 5


def _grid(
    top_value: float, fmt: Format, plot: tuple[float, float, float, float], steps: int
) -> tuple[tuple[float, Text], ...]:
    left, top, _, bottom = plot
    out = []
    for i in range(steps + 1):
        value = top_value * i / steps
        y = bottom - (bottom - top) * i / steps
        out.append((round(y, 2), Text(left - 6, round(y + 4, 2), fmt(value), "end")))
    return tuple(out)


def _legend(
    names: Sequence[tuple[str, str]], top: float, width: int
) -> tuple[tuple[tuple[Mark, Text], ...], float]:
    """Swatches and names laid out in rows under the plot; returns them and the height used."""
    per_row = max(1, (width - _LEFT) // _LEGEND_ITEM)
    items = []
    for i, (name, colour) in enumerate(names):
        row, col = divmod(i, per_row)
        x, y = _LEFT + col * _LEGEND_ITEM, top + row * _LEGEND_ROW
        swatch = Mark(x, y, 10, 10, colour, name)
        items.append((swatch, Text(x + 14, y + 9, _clip(name, _LEGEND_NAME), "start")))
    rows = math.ceil(len(names) / per_row) if names else 0
    return tuple(items), rows * _LEGEND_ROW


def _colour(i: int, other: bool = False) -> str:
    return OTHER_COLOUR if other else PALETTE[i % len(PALETTE)]


def stacked_bars(
    label: str,
    buckets: Sequence[str],
    series: Sequence[Series],
    *,
    fmt: Format = _plain,
    bucket_label: Callable[[str], str] = str,
    bucket_column: str = "Bucket",
    integer: bool = False,
    width: int = WIDTH,
    height: int = HEIGHT,
) -> Chart:
    """A stacked bar per bucket (oldest left), a segment per series (first at the bottom),
    with ``fmt``-formatted gridlines, up to ~10 bucket labels (``bucket_label`` shortens
    them on the axis), a legend and the data table (a row per bucket: each series and the
    total). ``integer``: the values are counts (gridlines on whole numbers)."""
    label = _clip(label)
    n = len(buckets)
    for s in series:
        if len(s.values) != n:
            raise ValueError(f"series {s.name!r} has {len(s.values)} values for {n} buckets")
    totals = [sum(max(0.0, s.values[i]) for s in series) for i in range(n)]
    peak = max(totals, default=0.0)
    top_value = max(1.0, nice_ceiling(peak)) if integer else nice_ceiling(peak)
    legend_top = height - _BOTTOM + 22
    names = [(_clip(s.name), _colour(i, s.other)) for i, s in enumerate(series)]
    legend, legend_h = _legend(names, legend_top, width)
    plot = (float(_LEFT), float(_TOP), float(width - _RIGHT), float(height - _BOTTOM))
    left, top, right, bottom = plot
    slot = (right - left) / n if n else 0.0
    bar_w = max(1.0, slot * 0.8) if n else 0.0
    bars: list[Mark] = []
    for i, bucket in enumerate(buckets):
        y = bottom
        x = left + i * slot + (slot - bar_w) / 2
        for j, s in enumerate(series):
            value = max(0.0, s.values[i])
            if value <= 0:
                continue
            h = (bottom - top) * value / top_value
            y -= h
            title = f"{_clip(s.name)}, {bucket}: {fmt(value)}"
            bars.append(Mark(round(x, 2), round(y, 2), round(bar_w, 2), round(h, 2),
                             _colour(j, s.other), title))  # fmt: skip
    every = max(1, math.ceil(n / 10)) if n else 1
    x_labels = tuple(
        Text(round(left + i * slot + slot / 2, 2), bottom + 16, bucket_label(b))
        for i, b in enumerate(buckets)
        if i % every == 0
    )
    rows = tuple(
        (b, *(fmt(s.values[i]) for s in series), fmt(totals[i])) for i, b in enumerate(buckets)
    )
    table = DataTable((bucket_column, *(_clip(s.name) for s in series), "Total"), rows)
    summary = (
        f"{len(series)} series over {n} buckets; highest bucket {fmt(peak)}"
        if peak > 0
        else "Nothing in this range."
    )
    return Chart(label, summary, width, int(height + legend_h + 8), plot,
                 _grid(top_value, fmt, plot, _steps(top_value, integer)), x_labels, tuple(bars),
                 (), (), legend, table,
                 peak <= 0)  # fmt: skip


def _when(epoch: float, with_time: bool) -> str:
    moment = dt.datetime.fromtimestamp(epoch, dt.UTC)
    return moment.strftime("%m-%d %H:%M" if with_time else "%Y-%m-%d")


def lines(
    label: str,
    series: Sequence[PointSeries],
    *,
    since: float,
    until: float,
    fmt: Format = _plain,
    y_max: float | None = None,
    width: int = WIDTH,
    height: int = HEIGHT,
) -> Chart:
    """A line per series over time (``since`` .. ``until`` on the x axis, UTC), a dot per
    point, the y axis from 0 to ``y_max`` (default: a nice ceiling over the values); dash
    patterns as well as colours tell lines apart. The data table has a row per point."""
    label = _clip(label)
    if not until > since:
        raise ValueError("'until' must be after 'since'")
    peak = max((v for s in series for _, v in s.points), default=0.0)
    top_value = y_max if y_max is not None and y_max > 0 else nice_ceiling(peak)
    legend_top = height - _BOTTOM + 22
    names = [(_clip(s.name), _colour(i)) for i, s in enumerate(series)]
    legend, legend_h = _legend(names, legend_top, width)
    plot = (float(_LEFT), float(_TOP), float(width - _RIGHT), float(height - _BOTTOM))
    left, top, right, bottom = plot
    span = until - since
    with_time = span <= 3 * 86400

    def xy(t: float, v: float) -> tuple[float, float]:
        x = left + (right - left) * min(1.0, max(0.0, (t - since) / span))
        y = bottom - (bottom - top) * min(1.0, max(0.0, v / top_value))
        return round(x, 2), round(y, 2)

    paths: list[Path] = []
    dots: list[Mark] = []
    rows: list[tuple[str, ...]] = []
    for i, s in enumerate(series):
        colour, name = _colour(i), _clip(s.name)
        coords = [xy(t, v) for t, v in s.points]
        if len(coords) > 1:
            text = " ".join(f"{x},{y}" for x, y in coords)
            paths.append(Path(text, colour, _DASHES[i % len(_DASHES)], name))
        for k, ((t, v), (x, y)) in enumerate(zip(s.points, coords, strict=True)):
            note = _clip(s.notes[k]) if k < len(s.notes) else ""
            when = _when(t, True)
            extra = f" ({note})" if note else ""
            dots.append(Mark(x, y, 3.5, 0, colour, f"{name}, {when}: {fmt(v)}{extra}"))
            rows.append((when, name, fmt(v), note))
    rows.sort(key=lambda r: r[0])
    ticks = tuple(
        Text(round(left + (right - left) * i / 5, 2), bottom + 16,
             _when(since + span * i / 5, with_time),
             "start" if i == 0 else "end" if i == 5 else "middle")
        for i in range(6)
    )  # fmt: skip
    count = sum(len(s.points) for s in series)
    summary = (
        f"{len(series)} series, {count} points from {_when(since, with_time)} to"
        f" {_when(until, with_time)}"
        if count
        else "Nothing in this range."
    )
    table = DataTable(("When (UTC)", "Series", "Value", "Note"), tuple(rows))
    return Chart(label, summary, width, int(height + legend_h + 8), plot,
                 _grid(top_value, fmt, plot, _steps(top_value, False)), ticks, (), tuple(paths),
                 tuple(dots), legend,
                 table, count == 0)  # fmt: skip


def burn(
    label: str,
    spent: float,
    reserved: float,
    limit: float,
    *,
    fmt: Format = _plain,
    width: int = 200,
    height: int = 16,
) -> Burn:
    """A budget's burn bar. The bar spans the limit, or what is used when that is more (the
    limit's mark then sits inside the bar and ``over`` is set)."""
    spent, reserved = max(0.0, spent), max(0.0, reserved)
    if not (math.isfinite(limit) and limit > 0):
        raise ValueError("a budget's limit is a positive amount")
    scale = max(limit, spent + reserved)
    used = (spent + reserved) / limit
    w = float(width)
    spent_w = round(w * spent / scale, 2)
    reserved_w = round(w * reserved / scale, 2)
    limit_x = round(w * limit / scale, 2)
    summary = (
        f"spent {fmt(spent)}, reserved {fmt(reserved)} of {fmt(limit)} ({used * 100:.0f}% used)"
    )
    return Burn(_clip(label), summary, width, height, spent_w, spent_w, reserved_w, limit_x,
                used, used > 1.0)  # fmt: skip
