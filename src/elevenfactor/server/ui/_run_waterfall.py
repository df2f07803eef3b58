"""The trace waterfall's geometry: one bar per step, placed by its start and end on a shared
time axis, in SVG user units (the template writes them as attributes: the page's content
security policy allows no inline style)."""

from __future__ import annotations

from dataclasses import dataclass

from elevenfactor.server.ui._render import _duration, _money
from elevenfactor.server.ui._run_steps import StepView

__all__ = ["WIDTH", "Bar", "Tick", "Waterfall", "waterfall"]

WIDTH = 1000
_LABEL = 230  # the step names' column
_RIGHT = 150  # the duration and cost column
_ROW = 20
_BAR = 12
_TOP = 22  # the axis labels
_LABEL_CHARS = 32


@dataclass(frozen=True, slots=True)
class Bar:
    """One step's row."""

    n: int
    label: str
    title: str
    css: str
    x: float
    y: float
    width: float
    text: str
    """Duration and cost, written at the row's end."""


@dataclass(frozen=True, slots=True)
class Tick:
    """A time mark on the axis."""

    x: float
    label: str


@dataclass(frozen=True, slots=True)
class Waterfall:
    """The chart: its bars, ticks and size."""

    bars: list[Bar]
    ticks: list[Tick]
    width: int
    height: int
    span: float
    """Seconds from the first start to the last end."""
    label_x: int = _LABEL - 6
    text_x: int = WIDTH - _RIGHT + 8
    bar_height: int = _BAR
    axis_y: int = _TOP - 8


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _tick_step(span: float) -> float:
    """A round interval giving 4 to 8 marks over ``span`` seconds."""
    for step in (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30,
                 60, 120, 300, 600, 1800, 3600, 7200, 21600, 43200, 86400):  # fmt: skip
        if span / step <= 8:
            return float(step)
    return span / 8


def waterfall(steps: list[StepView], origin: float) -> Waterfall:
    """The chart of ``steps``, its axis starting at ``origin`` (the run's creation)."""
    t0 = min([origin, *(s.start for s in steps)]) if steps else origin
    t1 = max([t0, *(s.end for s in steps)])
    span = max(t1 - t0, 0.001)
    area = WIDTH - _LABEL - _RIGHT
    scale = area / span
    bars = []
    for row, s in enumerate(steps):
        x = _LABEL + (s.start - t0) * scale
        width = max(s.duration * scale, 1.5)
        x = min(x, WIDTH - _RIGHT - width)
        cost = "" if s.cost is None else " · " + _money(s.cost)
        status = "" if s.status == "done" else f" ({s.status})"
        if s.status == "waiting":
            cost, status = "", " (waiting)"
        text = _duration(s.duration) + cost
        bars.append(
            Bar(
                n=s.n,
                label=_clip(f"{s.step_id} {s.name}", _LABEL_CHARS),
                title=f"step {s.step_id} {s.kind} {s.name}{status}: {text}",
                css=s.bar,
                x=round(x, 2),
                y=_TOP + row * _ROW + (_ROW - _BAR) / 2,
                width=round(width, 2),
                text=text + status,
            )
        )
    every = _tick_step(span)
    ticks = []
    k = 0
    while steps and k * every <= span + 1e-9 and k <= 10:
        ticks.append(Tick(round(_LABEL + k * every * scale, 2), _duration(k * every)))
        k += 1
    return Waterfall(bars, ticks, WIDTH, _TOP + max(len(steps), 1) * _ROW + 6, span)
