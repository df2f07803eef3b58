"""A self-contained HTML page of a replay report (one run, deterministic or what-if, or a
many-runs batch): inline CSS, no script, no external asset, in the style of the eval report.
Every text from a run is escaped: outputs are untrusted (a model may answer ``<script>``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from html import escape
from typing import Any

import orjson

__all__ = ["html_replay"]

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;margin:24px;color:#1d2330}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:24px 0 8px}
.pass{color:#137333;font-weight:600}.fail{color:#b3261e;font-weight:600}
table{border-collapse:collapse;width:100%}th,td{border-bottom:1px solid #e3e6ec;
padding:6px 8px;text-align:left;vertical-align:top}th{background:#f5f7fa}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.meta td{border:none;padding:2px 12px 2px 0}
pre{white-space:pre-wrap;word-break:break-word;margin:0;font:12px/1.4 ui-monospace,monospace;
max-height:24em;overflow:auto;background:#f8f9fb;padding:6px}
"""


def _e(value: Any) -> str:
    if value is not None and not isinstance(value, str):
        value = orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()
    return escape("" if value is None else value, quote=True)


def _meta(rows: Iterable[tuple[str, Any]]) -> str:
    cells = "".join(f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>" for k, v in rows)
    return f'<table class="meta">{cells}</table>'


def _verdict(ok: bool, yes: str, no: str) -> str:
    return f'<span class="pass">{_e(yes)}</span>' if ok else f'<span class="fail">{_e(no)}</span>'


def _divergence(d: Mapping[str, Any] | None, diff: str) -> str:
    if d is None:
        return "<p>No divergence.</p>"
    rows = [
        ("reason", d.get("reason")),
        ("step", d.get("step_id")),
        ("position", d.get("n")),
        ("issued", f"{d.get('kind') or ''} {d.get('name') or ''}".strip()),
        ("recorded", f"{d.get('expected_kind') or ''} {d.get('expected_name') or ''}".strip()),
        ("message", d.get("message")),
    ]
    out = _meta(rows)
    if diff:
        out += f"<h2>Diff</h2><pre>{_e(diff)}</pre>"
    elif d.get("expected") is not None or d.get("got") is not None:
        out += f"<h2>Recorded</h2><pre>{_e(d.get('expected'))}</pre>"
        out += f"<h2>Replay</h2><pre>{_e(d.get('got'))}</pre>"
    return out


def _single(r: Mapping[str, Any]) -> str:
    if r.get("mode") == "deterministic":
        head = _verdict(bool(r.get("identical")), "identical", "diverged (a defect)")
        meta = _meta(
            [
                ("run", r.get("run_id")),
                ("program", r.get("program")),
                ("status", r.get("status")),
                ("steps", f"{r.get('replayed')} of {r.get('steps')} replayed"),
                ("recomputed", f"{r.get('recomputed_identical')} of {r.get('recomputed')} same"),
                (
                    "model requests",
                    f"{r.get('requests_verified')} verified, "
                    f"{r.get('requests_unverified')} unverified",
                ),
                ("result identical", r.get("result_identical")),
                ("seconds", r.get("seconds")),
            ]
        )
        return f"<p>{head}</p>{meta}<h2>First divergence</h2>" + _divergence(
            r.get("divergence"), str(r.get("diff") or "")
        )
    head = _verdict(not r.get("diverged"), "no divergence", "diverged")
    cost, rcost = r.get("cost") or {}, r.get("replay_cost") or {}
    meta = _meta(
        [
            ("run", r.get("run_id")),
            ("what-if run", r.get("replay_run_id")),
            ("change", r.get("options")),
            ("status", f"{r.get('status')} -> {r.get('replay_status')}"),
            ("error", r.get("error")),
            ("steps", f"{r.get('steps')} -> {r.get('replay_steps')}"),
            ("cost", f"{cost.get('cost')} -> {rcost.get('cost')} (delta {r.get('cost_delta')})"),
            (
                "model latency ms",
                f"{cost.get('latency_ms')} -> {rcost.get('latency_ms')}"
                f" (delta {r.get('latency_delta_ms')})",
            ),
        ]
    )
    d = r.get("divergence")
    step = _divergence(d, "") if d is not None else "<p>No step differs.</p>"
    diff = str(r.get("output_diff") or "")
    out = f"<h2>Output diff</h2><pre>{_e(diff)}</pre>" if diff else "<p>Same output.</p>"
    return f"<p>{head}</p>{meta}<h2>First diverging step</h2>{step}{out}"


def _batch(summary: Mapping[str, Any], reports: Sequence[Mapping[str, Any]]) -> str:
    keys = [k for k in summary if k not in ("worst", "skipped", "object")]
    meta = _meta((k, summary[k]) for k in keys)
    rows = []
    for r in reports:
        d = r.get("divergence") or {}
        if r.get("mode") == "deterministic":
            ok = bool(r.get("identical"))
            cells = [r.get("run_id"), r.get("status"), r.get("steps"), d.get("step_id"),
                     d.get("reason"), d.get("message"), ""]  # fmt: skip
        else:
            ok = not r.get("diverged")
            cells = [r.get("run_id"), f"{r.get('status')} -> {r.get('replay_status')}",
                     f"{r.get('steps')} -> {r.get('replay_steps')}", d.get("step_id"),
                     d.get("reason"), d.get("message"), r.get("cost_delta")]  # fmt: skip
        tds = "".join(f"<td>{_e(c)}</td>" for c in cells)
        rows.append(f"<tr><td>{_verdict(ok, 'same', 'diverged')}</td>{tds}</tr>")
    head = "".join(
        f"<th>{h}</th>"
        for h in ("", "run", "status", "steps", "step", "reason", "divergence", "cost delta")
    )
    skipped = "".join(
        f"<li>{_e(s.get('run_id'))}: {_e(s.get('message'))}</li>"
        for s in summary.get("skipped") or ()
    )
    table = f"<table><tr>{head}</tr>{''.join(rows)}</table>"
    return (
        meta + "<h2>Runs</h2>" + table + (f"<h2>Skipped</h2><ul>{skipped}</ul>" if skipped else "")
    )


def html_replay(
    report: Mapping[str, Any], reports: Sequence[Mapping[str, Any]] | None = None
) -> str:
    """The page of ``report`` (a replay's ``to_dict``), or of a batch (its ``summary`` and
    every run's report)."""
    if reports is not None:
        title, body = (
            f"Replay of {len(reports)} runs ({report.get('mode')})",
            _batch(report, reports),
        )
    else:
        title, body = (
            f"Replay of run {report.get('run_id')} ({report.get('mode')})",
            _single(report),
        )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head>"
        f"<body><h1>{_e(title)}</h1>{body}</body></html>\n"
    )
