"""A self-contained HTML report of an eval result: inline CSS, no script, no external asset
(no ``src=``/``href=`` to anything), so it can be attached to a CI run and opened anywhere.

It shows the summary (suite, version, target, overrides, gate), a table of cases with the
reasons of failed scorers and a sample output, the regressions and drift against a baseline,
and an inline SVG chart of the suite's pass rate over its stored results. Every text from a
result is escaped: outputs are untrusted (a model may answer ``<script>``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from html import escape
from typing import Any

from elevenfactor.evals._report import Drift, case_rows, totals
from elevenfactor.evals._results import Comparison, SuiteResult

__all__ = ["html_report", "trend_svg"]

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;margin:24px;color:#1d2330}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:24px 0 8px}
.pass{color:#137333;font-weight:600}.fail{color:#b3261e;font-weight:600}
table{border-collapse:collapse;width:100%}th,td{border-bottom:1px solid #e3e6ec;
padding:6px 8px;text-align:left;vertical-align:top}th{background:#f5f7fa}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.meta td{border:none;padding:2px 12px 2px 0}
pre{white-space:pre-wrap;word-break:break-word;margin:0;font:12px/1.4 ui-monospace,monospace;
max-height:8em;overflow:auto}ul{margin:0;padding-left:18px}
svg text{font:11px system-ui,sans-serif;fill:#555}
"""


def _e(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)


def _when(ts: Any) -> str:
    if not isinstance(ts, int | float):
        return ""
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _money(value: float | None) -> str:
    return "" if value is None else f"${value:.6f}"


def _ms(value: float | None) -> str:
    return "" if value is None else f"{value:,.0f} ms"


def trend_svg(points: Sequence[tuple[float, float]], width: int = 560, height: int = 140) -> str:
    """An inline SVG line of ``(time, pass rate)`` points (oldest first), 0-100 % scale."""
    if not points:
        return "<p>No stored results of this suite yet.</p>"
    pad = 28
    xs = [t for t, _ in points]
    lo, hi = min(xs), max(xs)
    span = (hi - lo) or 1.0

    def at(t: float, rate: float) -> tuple[float, float]:
        x = pad + (t - lo) / span * (width - 2 * pad) if len(points) > 1 else width / 2
        y = height - pad - max(0.0, min(1.0, rate)) * (height - 2 * pad)
        return round(x, 1), round(y, 1)

    coords = [at(t, r) for t, r in points]
    line = " ".join(f"{x},{y}" for x, y in coords)
    dots = "".join(
        f'<circle cx="{x}" cy="{y}" r="3" fill="{"#137333" if r >= 1 else "#b3261e"}">'
        f"<title>{_e(_when(t))}: {r:.0%}</title></circle>"
        for (x, y), (t, r) in zip(coords, points, strict=True)
    )
    top, bottom = pad, height - pad
    return (
        f'<svg width="{width}" height="{height}" '
        f'role="img" aria-label="pass rate over time">'
        f'<line x1="{pad}" y1="{bottom}" x2="{width - pad}" y2="{bottom}" stroke="#ccc"/>'
        f'<line x1="{pad}" y1="{top}" x2="{width - pad}" y2="{top}" stroke="#eee"/>'
        f'<text x="2" y="{top + 4}">100%</text><text x="8" y="{bottom + 4}">0%</text>'
        f'<polyline points="{line}" fill="none" stroke="#3367d6" stroke-width="2"/>{dots}</svg>'
    )


def _summary(result: SuiteResult, status: str | None) -> str:
    t = totals(result)
    meta = result.metadata
    gate = status or ("passed" if result.passed else "failed")
    css = "pass" if gate == "passed" else "fail"
    rows = [
        ("gate", f'<span class="{css}">{_e(gate)}</span>'),
        ("suite", f"{_e(result.suite_id)} (version {_e(result.suite_version)})"),
        ("target", _e(meta.get("target"))),
        ("model override", _e(meta.get("model") or "—")),
        ("prompt", _e(meta.get("prompt") or "—")),
        ("release", _e(meta.get("release") or "—")),
        ("eval run", _e(meta.get("run_id"))),
        ("started", _e(_when(meta.get("started_at")))),
        (
            "cases",
            f"{t['cases_passed']} of {t['cases']} passed ({t['pass_rate']:.0%}), {t['runs']} runs",
        ),
        ("cost", _e(_money(t["cost_usd"]) or "not priced")),
        ("mean latency", _e(_ms(t["latency_ms"]))),
    ]
    if meta.get("error"):
        rows.append(("error", f'<span class="fail">{_e(meta["error"])}</span>'))
    body = "".join(f"<tr><td>{k}</td><td>{v}</td></tr>" for k, v in rows)
    return f'<table class="meta">{body}</table>'


def _cases(result: SuiteResult) -> str:
    head = (
        "<tr><th>case</th><th>passed</th><th>pass rate</th><th>failed scorers</th>"
        "<th>output (first run)</th><th>cost</th><th>latency</th></tr>"
    )
    body = []
    for row in case_rows(result):
        css = "pass" if row.passed else "fail"
        fails = "".join(f"<li>{_e(f)}</li>" for f in row.failures)
        body.append(
            f"<tr><td>{_e(row.case_id)}</td>"
            f'<td class="{css}">{row.passes}/{row.runs}</td>'
            f'<td class="num">{row.pass_rate:.0%} (≥ {row.threshold:.0%})</td>'
            f"<td><ul>{fails}</ul></td><td><pre>{_e(row.output)}</pre></td>"
            f'<td class="num">{_e(_money(row.cost_usd))}</td>'
            f'<td class="num">{_e(_ms(row.latency_ms))}</td></tr>'
        )
    return f"<table>{head}{''.join(body)}</table>"


def _comparison(comparison: Comparison | None, drifts: Sequence[Drift]) -> str:
    if comparison is None:
        return "<p>No baseline given.</p>"
    parts = []
    if comparison.regressions:
        items = "".join(
            f"<li><b>{_e(r.case_id)}</b>: {_e(r.kind.replace('_', ' '))} "
            f"({r.before:.0%} → {r.after:.0%})</li>"
            for r in comparison.regressions
        )
        parts.append(f'<p class="fail">Regressions</p><ul>{items}</ul>')
    else:
        parts.append('<p class="pass">No regression against the baseline.</p>')
    for label, ids in (
        ("Fixed", comparison.fixed),
        ("New cases", comparison.added),
        ("Removed", comparison.removed),
    ):
        if ids:
            parts.append(f"<p>{label}: {_e(', '.join(ids))}</p>")
    if drifts:
        items = "".join(
            f"<li>{_e(d.case_id)}: {_e(d.metric)} {d.before:.6g} → {d.after:.6g}</li>"
            for d in drifts
        )
        parts.append(f"<p>Cost or latency up (not gated)</p><ul>{items}</ul>")
    return "".join(parts)


def html_report(
    result: SuiteResult,
    *,
    status: str | None = None,
    comparison: Comparison | None = None,
    drifts: Sequence[Drift] = (),
    history: Sequence[tuple[float, float]] = (),
) -> str:
    """The report of ``result`` as one HTML document (see the module docstring);
    ``history`` is the suite's ``(finished_at, pass_rate)`` results, oldest first."""
    title = f"eval {result.suite_id}"
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{_e(title)}</h1>{_summary(result, status)}"
        f"<h2>Cases</h2>{_cases(result)}"
        f"<h2>Against the baseline</h2>{_comparison(comparison, drifts)}"
        f"<h2>Pass rate over time</h2>{trend_svg(history)}"
        "</body></html>\n"
    )
