"""Summaries and the rich tables of ``python -m bench.guards``."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from bench.stats import median

__all__ = ["GATEWAY_TARGET_US", "STAGE_TARGET_US", "print_report", "summarize_cases"]

STAGE_TARGET_US = 1000.0
"""Rule-based guards: at most 1 ms p50 per stage."""
GATEWAY_TARGET_US = 3000.0
"""The default policy adds at most 3 ms to a gateway call."""


def summarize_cases(rounds: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per case: the median over rounds of its p50 and p99 (µs), in first-round order."""
    by: dict[tuple[str, str, str, str], list[dict[str, Any]]] = {}
    for rows in rounds:
        for row in rows:
            by.setdefault((row["kind"], row["policy"], row["what"], row["input"]), []).append(row)
    out = []
    for (kind, policy, what, inp), rows in sorted(by.items(), key=lambda kv: _order(kv[0])):
        out.append(
            {
                "kind": kind,
                "policy": policy,
                "what": what,
                "input": inp,
                "classifier": rows[0]["classifier"],
                "p50_us": median([r["us"]["p50"] for r in rows]),
                "p99_us": median([r["us"]["p99"] for r in rows]),
                "rounds": len(rows),
            }
        )
    return out


_STAGES = ("input", "retrieved", "tool_result", "output")
_POLICIES = ("none", "default", "strict")


def _order(key: tuple[str, str, str, str]) -> tuple[Any, ...]:
    kind, policy, what, inp = key
    stage = _STAGES.index(what) if what in _STAGES else 9
    return (inp, ("stage", "stream", "rule").index(kind), stage, _POLICIES.index(policy), what)


def _us(v: float | None, signed: bool = False) -> str:
    if v is None:
        return "—"
    return f"{v:+,.0f} µs" if signed else f"{v:,.0f} µs"


def _goal(value: float | None, limit: float) -> str:
    if value is None:
        return "[yellow]?[/]"
    return "[green]met[/]" if value <= limit else "[red]NOT met[/]"


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{v:.1%}"


def _cases(console: Console, cases: list[dict[str, Any]], rounds: int) -> None:
    t = Table(
        title=f"Per-stage cost in process: check(stage, 2 KB), medians of {rounds} "
        "interleaved round(s); floor = no policy (has(stage) is false)"
    )
    for col in ("input", "policy", "stage", "p50", "p99", "≤ 1 ms p50"):
        t.add_column(col, justify="right" if col in ("p50", "p99") else "left")
    for c in cases:
        if c["kind"] != "stage":
            continue
        note = " (incl. classifier)" if c["classifier"] else ""
        goal = "floor" if c["policy"] == "none" else _goal(c["p50_us"], STAGE_TARGET_US) + note
        t.add_row(c["input"], c["policy"], c["what"], _us(c["p50_us"]), _us(c["p99_us"]), goal)
    console.print(t)
    t = Table(
        title="A 2 KB answer streamed through StreamGuard in 50 chunks (whole stream), "
        "and each rule of `strict` alone on 2 KB (TextViews built per call)"
    )
    for col in ("input", "what", "policy", "p50", "p99", "≤ 1 ms p50"):
        t.add_column(col, justify="right" if col in ("p50", "p99") else "left")
    for c in cases:
        if c["kind"] == "stage":
            continue
        what = "stream (output)" if c["kind"] == "stream" else f"rule: {c['what']}"
        goal = "floor" if c["policy"] == "none" else _goal(c["p50_us"], STAGE_TARGET_US)
        goal = "(not rule-based)" if c["kind"] == "rule" and c["classifier"] else goal
        goal = "—" if c["kind"] == "stream" and c["policy"] != "none" else goal
        t.add_row(c["input"], what, c["policy"], _us(c["p50_us"]), _us(c["p99_us"]), goal)
    console.print(t)


def _gateway(console: Console, gw: dict[str, Any]) -> None:
    if "skipped" in gw or "error" in gw:
        console.print(f"[yellow]gateway: {gw.get('skipped') or gw.get('error')}[/]")
        return
    s = gw["summary"]
    t = Table(
        title=f"Gateway, 2 KB user message, one request at a time, medians of "
        f"{gw['rounds']} interleaved round(s); ef-default: shipped default policy, "
        "ef-none: guards.default null"
    )
    for col in ("target", "mode", "p50", "p99"):
        t.add_column(col, justify="right" if col in ("p50", "p99") else "left")
    for name in ("direct", "ef-none", "ef-default"):
        for mode, q in s.get(name, {}).items():
            t.add_row(name, mode, _us(q["p50"]), _us(q["p99"]))
    console.print(t)
    probe = gw["probe"]
    applies = probe["applies_guards"]
    t = Table(title="Added by the default policy (ef-default - ef-none, per round, median)")
    for col in ("mode", "added p50", "added p99", "≤ 3 ms"):
        t.add_column(col, justify="left" if col == "mode" else "right")
    for mode, q in s["added"].items():
        goal = _goal(q["p50"], GATEWAY_TARGET_US) if applies else "[yellow]?[/] not applied"
        t.add_row(mode, _us(q["p50"], True), _us(q["p99"], True), goal)
    console.print(t)
    if not applies:
        console.print(
            "[yellow]The gateway does not apply guard policies yet: a request with "
            f"a phrase the probe policy blocks was answered {probe['status']}. "
            "The added figures measure noise.[/]"
        )


def _peers(console: Console, peers: dict[str, Any]) -> None:
    t = Table(
        title="Detectors on the same inputs: time per 2 KB input (p50) and detection "
        "on tests/data/guard/pii_secrets.jsonl (rows with a kind of their family vs "
        "rows expecting nothing)"
    )
    for col in (
        "detector",
        "family",
        "version",
        "clean 2 KB",
        "findings 2 KB",
        "detected",
        "false positives",
        "precision",
    ):
        t.add_column(col, justify="left" if col in ("detector", "family", "version") else "right")
    for name, d in peers["detectors"].items():
        if "unavailable" in d:
            t.add_row(name, d["family"], "—", "—", "—", f"unavailable: {d['unavailable']}", "", "")
            continue
        det = d["detection"]
        t.add_row(
            name,
            d["family"],
            d["version"] or "(this)",
            _us(d["us"]["clean"]["p50"]),
            _us(d["us"]["findings"]["p50"]),
            f"{det['tp']}/{det['tp'] + det['fn']} {_pct(det['detection_rate'])}",
            f"{det['fp']}/{det['fp'] + det['tn']} {_pct(det['false_positive_rate'])}",
            _pct(det["precision"]),
        )
    console.print(t)
    for name, why in peers["unusable"].items():
        console.print(f"not usable here: {name}: {why}")


def _held_out(console: Console, d: dict[str, Any]) -> None:
    same = d["corpus_sha256"] == d["model_corpus_sha256"]
    t = Table(
        title=f"Injection, held-out fifth of tests/data/guard/injection ({d['held_out']} "
        f"of {d['rows']} rows, {d['positives']} positive); model trained on this corpus: "
        f"{'yes' if same else 'NO'}"
    )
    for col in ("detector", "detected", "false positives", "precision", "recorded at training"):
        t.add_column(col, justify="left" if col == "detector" else "right")
    for name in ("rules", "classifier", "both"):
        m, r = d["measured"][name], d["recorded"].get(name) or {}
        rec = (
            f"{_pct(r.get('detection_rate'))} / {_pct(r.get('false_positive_rate'))}" if r else "—"
        )
        t.add_row(
            name,
            f"{m['tp']}/{m['tp'] + m['fn']} {_pct(m['detection_rate'])}",
            f"{m['fp']}/{m['fp'] + m['tn']} {_pct(m['false_positive_rate'])}",
            _pct(m["precision"]),
            rec,
        )
    for pname, rep in d["policies"].items():
        for r in [*rep["rules"], rep["policy_total"]]:
            if r["tp"] + r["fp"] == 0 and r["rule"] != rep["policy_total"]["rule"]:
                continue
            t.add_row(
                f"{pname}: {r['rule']} ({r['action']})",
                f"{r['tp']}/{r['tp'] + r['fn']} {_pct(r['detection_rate'])}",
                f"{r['fp']}/{r['fp'] + r['tn']} {_pct(r['false_positive_rate'])}",
                _pct(r["precision"]),
                "",
            )
    console.print(t)


def print_report(console: Console, results: dict[str, Any]) -> None:
    """Every table of the run."""
    _cases(console, results["stages"]["summary"], results["plan"]["rounds"])
    _gateway(console, results["gateway"])
    if "detectors" in results["peers"]:
        _peers(console, results["peers"])
    _held_out(console, results["detection"])
