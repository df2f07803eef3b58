"""The rich tables of ``python -m bench.limits``."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from bench.gateway.report import GOAL_FORMATS, goal_cell
from bench.limits.summary import ISSUE2_GOALS

__all__ = ["print_report"]


def _us(v: float | None, signed: bool = True) -> str:
    if v is None:
        return "—"
    return f"{v:+,.0f} µs" if signed else f"{v:,.0f} µs"


def _ms(v: float | None) -> str:
    return "—" if v is None else f"{v:.2f} ms"


def _verdict(met: bool | None, why: str) -> str:
    if met is None:
        return f"[yellow]?[/] {why}".strip()
    tail = f" ({why})" if why else ""
    return f"[green]met[/]{tail}" if met else f"[red]NOT met[/]{tail}"


def _pairs(console: Console, results: dict[str, Any]) -> None:
    rounds = results["plan"]["rounds"]
    t = Table(
        title="What auth + budget + rate-limit checks add per request: everything on minus"
        f" nothing configured, same load, medians of {rounds} interleaved round(s)"
    )
    for col in (
        "backend",
        "on - none",
        "added p50 (1 at a time)",
        "added p99",
        "added wrk p50 (16 in flight)",
        "added server CPU / req",
        "req/s on ÷ none",
    ):
        t.add_column(col, justify="left" if col in ("backend", "on - none") else "right")
    for p in results["pairs"]:
        ratio = "—" if p["rps_ratio"] is None else f"{p['rps_ratio']:.2f}x"
        t.add_row(
            p["label"],
            f"{p['on']} - {p['none']}",
            _us(p["added_p50_us"]),
            _us(p["added_p99_us"]),
            _us(p["added_wrk_p50_us"]),
            _us(p["added_cpu_us_per_request"]),
            ratio + (f" [red]({p['errors']} errors)[/]" if p["errors"] else ""),
        )
    console.print(t)


def _targets(console: Console, results: dict[str, Any]) -> None:
    t = Table(title="Every target (medians over rounds; 'added' = through - direct)")
    for col in (
        "target",
        "1-at-a-time p50 / p99",
        "added p50 / p99",
        "req/s (16 in flight)",
        "wrk p50 / p99",
        "server CPU µs/req",
        "TTFT added p50 (256 streams)",
        "errors",
    ):
        t.add_column(col, justify="left" if col == "target" else "right")
    for name, s in results["summary"].items():
        errors = sum(int(s.get(k) or 0) for k in ("latency_errors", "wrk_errors", "stream_errors"))
        added = (
            "—"
            if name == "direct"
            else f"{_us(1e3 * (s.get('added_p50_ms') or 0))} / "
            f"{_us(1e3 * (s.get('added_p99_ms') or 0))}"
        )
        t.add_row(
            f"{name} {results['targets'][name].get('version', '')}",
            f"{_ms(s.get('latency_p50_ms'))} / {_ms(s.get('latency_p99_ms'))}",
            added,
            "—" if not s.get("rps") else f"{s['rps']:,.0f}",
            f"{_ms(s.get('wrk_p50_ms'))} / {_ms(s.get('wrk_p99_ms'))}",
            "—" if not s.get("cpu_us_per_request") else f"{s['cpu_us_per_request']:.0f}",
            "—" if s.get("ttft_added_p50_ms") is None else f"{s['ttft_added_p50_ms']:+.2f} ms",
            str(errors) if not errors else f"[red]{errors}[/]",
        )
    for name, info in results["targets"].items():
        if info.get("status") not in ("ok", "died"):
            t.add_row(name, f"[yellow]{info.get('status')}[/]", info.get("reason", "")[:110])
    console.print(t)


def _goals(console: Console, results: dict[str, Any]) -> None:
    names = [n for n in results["goals"] if results["goals"][n]]
    if not names:
        return
    t = Table(
        title="Issue 2's targets (floor: the relay, same rounds) with nothing and with all on"
    )
    t.add_column("goal")
    for n in names:
        t.add_column(n)
    for goal in ISSUE2_GOALS:
        cells = []
        for n in names:
            g = results["goals"][n].get(goal.key)
            cells.append("[dim]not run[/]" if g is None else goal_cell(g, GOAL_FORMATS[goal.key]))
        t.add_row(goal.label, *cells)
    console.print(t)


def _overshoot(console: Console, results: dict[str, Any]) -> None:
    t = Table(
        title="Overshoot under contention: a budget that allows 40 calls; two waves of"
        " concurrent requests, the second once the first has settled"
    )
    for col in (
        "scenario",
        "processes x concurrent",
        "admitted wave 1 / 2",
        "refused (codes)",
        "spend vs limit",
        "overshoot",
    ):
        t.add_column(col, justify="left" if col in ("scenario", "refused (codes)") else "right")
    for key, info in results["overshoot"].items():
        if "admitted" not in info:
            t.add_row(key, f"[yellow]{info.get('status', '?')}[/]", info.get("reason", "")[:120])
            continue
        codes: dict[str, int] = {}
        for w in info["waves"]:
            for code, n in w["codes"].items():
                if code != "ok":
                    codes[code] = codes.get(code, 0) + n
        if "committed_usd" in info:
            spend = f"committed ${info['committed_usd']:.6f} / ${info['budget_limit_usd']:.6f}"
        else:
            counter = info.get("litellm_spend_counter_usd")
            spend = f"let through ${info['let_through_usd']:.6f} / ${info['limit_usd']:.6f}" + (
                "" if counter is None else f" (its counter: ${counter:.6f})"
            )
        over = info["overshoot_usd"]
        over_cell = (
            f"{info['calls_over']:+d} calls, ${over:+.6f} ({100 * over / info['limit_usd']:+.0f} %)"
        )
        color = "red" if over > 1e-9 else "green"
        t.add_row(
            f"{key} ({info['backend']})",
            f"{info['processes']} x {info['per_process']}",
            " / ".join(str(a) for a in info["admitted_per_wave"]),
            ", ".join(f"{c}: {n}" for c, n in sorted(codes.items())) or "—",
            spend,
            f"[{color}]{over_cell}[/]",
        )
    console.print(t)


def _checks(console: Console, results: dict[str, Any]) -> None:
    t = Table(title="Targets from issue 8")
    for col in ("target", "measured", "verdict"):
        t.add_column(col)
    for c in results["checks"]:
        t.add_row(c["label"], c["value"], _verdict(c["met"], c["why"]))
    console.print(t)


def print_report(console: Console, results: dict[str, Any]) -> None:
    """Every table, then what was not measured and the targets' notes."""
    if results["pairs"]:
        _pairs(console, results)
    if results["summary"]:
        _targets(console, results)
    _goals(console, results)
    if results["overshoot"]:
        _overshoot(console, results)
    _checks(console, results)
    for note in results["not_measured"]:
        console.print(f"[yellow]not measured:[/] {note}", highlight=False)
    for name, info in results["targets"].items():
        for note in info.get("notes", []):
            console.print(f"[dim]{name}: {note}[/]", highlight=False)
