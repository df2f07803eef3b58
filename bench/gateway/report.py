"""Turning per-round results into medians, goal checks, rich tables and a JSON file."""

from __future__ import annotations

import json
import operator
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.stats import median

__all__ = ["GOALS", "Goal", "evaluate", "print_report", "summarize_results", "write_json"]

Rounds = list[dict[str, dict[str, Any]]]


@dataclass(frozen=True, slots=True)
class Goal:
    """One target from the issue."""

    key: str
    label: str
    limit: float
    cmp: Callable[[float, float], bool]
    errors_key: str | None = None


GOALS = [
    Goal(
        "added_p50_ms",
        "added p50 <= 1 ms, one request at a time",
        1.0,
        operator.le,
        "latency_errors",
    ),
    Goal(
        "added_p99_ms",
        "added p99 <= 2.5 ms, one request at a time",
        2.5,
        operator.le,
        "latency_errors",
    ),
    Goal("rps", ">= 1,500 req/s at 16 in flight", 1500, operator.ge, "wrk_errors"),
    Goal(
        "ttft_added_p50_ms",
        "256 concurrent streams: added TTFT p50 <= 10 ms",
        10.0,
        operator.le,
        "stream_errors",
    ),
    Goal("rss_max_mb", "RSS <= 150 MB per process", 150, operator.le),
    Goal(
        "rss_growth_pct",
        "RSS flat over 100,000 requests (growth < 10 %)",
        10.0,
        operator.lt,
        "memory_errors",
    ),
]
_FLAT_REQUESTS = 100_000


def _get(d: dict[str, Any] | None, *path: str) -> Any:
    for key in path:
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d


def _added(rounds: Rounds, name: str, *path: str, scale: float = 1.0) -> float | None:
    """Median over rounds of (target - direct) for the value at ``path``, times ``scale``."""
    diffs = []
    for rnd in rounds:
        mine, base = _get(rnd.get(name), *path), _get(rnd.get("direct"), *path)
        if isinstance(mine, int | float) and isinstance(base, int | float):
            diffs.append((mine - base) * scale)
    return median(diffs)


def _med(rounds: Rounds, name: str, *path: str, scale: float = 1.0) -> float | None:
    vals = [v * scale for rnd in rounds if isinstance(v := _get(rnd.get(name), *path), int | float)]
    return median(vals)


def _sum(rounds: Rounds, name: str, *keys: str) -> int:
    return sum(int(_get(rnd.get(name), k) or 0) for rnd in rounds for k in keys)


def summarize_results(results: dict[str, Any], name: str) -> dict[str, Any]:
    """Medians over rounds for one target; "added" figures are relative to direct, per round."""
    lat, thr, st = (results["rounds"][k] for k in ("latency", "throughput", "streams"))
    out: dict[str, Any] = {
        "latency_p50_ms": _med(lat, name, "latency_us", "p50", scale=1e-3),
        "latency_p99_ms": _med(lat, name, "latency_us", "p99", scale=1e-3),
        "latency_errors": _sum(lat, name, "errors"),
        "latency_client_cpu_pct": _med(lat, name, "client_cpu_pct"),
        "rps": _med(thr, name, "rps"),
        "wrk_p50_ms": _med(thr, name, "p50_us", scale=1e-3),
        "wrk_p99_ms": _med(thr, name, "p99_us", scale=1e-3),
        "wrk_errors": _sum(thr, name, "errors"),
        "ttft_p50_ms": _med(st, name, "ttft_ms", "p50"),
        "ttft_p99_ms": _med(st, name, "ttft_ms", "p99"),
        "stream_p50_ms": _med(st, name, "stream_ms", "p50"),
        "streams_measured": _sum(st, name, "streams_measured"),
        "stream_errors": _sum(st, name, "errors", "incomplete"),
        "stream_client_cpu_pct": _med(st, name, "client_cpu_pct"),
    }
    if name != "direct":
        out |= {
            "added_p50_ms": _added(lat, name, "latency_us", "p50", scale=1e-3),
            "added_p99_ms": _added(lat, name, "latency_us", "p99", scale=1e-3),
            "ttft_added_p50_ms": _added(st, name, "ttft_ms", "p50"),
            "ttft_added_p99_ms": _added(st, name, "ttft_ms", "p99"),
        }
    mem = results["memory"].get(name)
    if mem and len(mem["samples"]) >= 2:
        first, last = mem["samples"][0], mem["samples"][-1]
        per_proc = [kib for s in mem["samples"] for kib in s["rss_kib"].values()]
        out |= {
            "rss_warm_mb": first["total_kib"] / 1024,
            "rss_final_mb": last["total_kib"] / 1024,
            "rss_max_mb": max(per_proc) / 1024,
            "rss_processes": len(last["rss_kib"]),
            "rss_growth_pct": 100 * (last["total_kib"] - first["total_kib"]) / first["total_kib"],
            "memory_requests": mem["requests"],
            "memory_time_capped": mem["time_capped"],
            "memory_errors": mem["errors"],
        }
    return out


def evaluate(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each goal: the value, and met (True/False) or None when it could not be measured."""
    out = {}
    for goal in GOALS:
        value = summary.get(goal.key)
        errors = int(summary.get(goal.errors_key) or 0) if goal.errors_key else 0
        met: bool | None
        why = ""
        if value is None:
            met, why = None, "not measured"
        elif errors:
            met, why = False, f"{errors} failed requests"
        else:
            met = bool(goal.cmp(value, goal.limit))
        if goal.key == "rss_growth_pct" and value is not None and not errors:
            done = int(summary.get("memory_requests") or 0)
            if done < _FLAT_REQUESTS:
                capped = " (time cap)" if summary.get("memory_time_capped") else ""
                met, why = None, f"only {done:,} requests{capped}"
        out[goal.key] = {
            "label": goal.label,
            "value": value,
            "limit": goal.limit,
            "met": met,
            "why": why,
        }
    return out


def _ms(v: float | None, signed: bool = True) -> str:
    if v is None:
        return "—"
    return f"{v:+.2f} ms" if signed else f"{v:.2f} ms"


def _count(n: int) -> str:
    return f"{n:,}" if n < 10_000 else f"{n / 1000:,.1f}k"


def _pair(a: float | None, b: float | None) -> str:
    if a is None or b is None:
        return "—"
    return f"{a:.2f} / {b:.2f} ms"


def _rss_cell(s: dict[str, Any]) -> str:
    if "rss_warm_mb" not in s:
        return "—"
    return (
        f"{s['rss_warm_mb']:.0f} → {s['rss_final_mb']:.0f} MB "
        f"({s['rss_growth_pct']:+.1f} % over {_count(s['memory_requests'])} req)"
    )


def _goal_cell(g: dict[str, Any], fmt: Callable[[float], str]) -> str:
    value = "—" if g["value"] is None else fmt(g["value"])
    if g["met"] is None:
        return f"[yellow]? {value}[/] ({g['why']})"
    why = f" ({g['why']})" if g["why"] else ""
    return f"[green]met[/] {value}" if g["met"] else f"[red]NOT met[/] {value}{why}"


_FMT: dict[str, Callable[[float], str]] = {
    "added_p50_ms": lambda v: f"{v:+.2f} ms",
    "added_p99_ms": lambda v: f"{v:+.2f} ms",
    "rps": lambda v: f"{v:,.0f} req/s",
    "ttft_added_p50_ms": lambda v: f"{v:+.2f} ms",
    "rss_max_mb": lambda v: f"{v:.0f} MB",
    "rss_growth_pct": lambda v: f"{v:+.1f} %",
}


def print_report(console: Console, results: dict[str, Any]) -> None:
    """The side-by-side table, the goals, the details and the RSS samples."""
    names = [n for n in ("direct", "elevenfactor", "litellm") if n in results["summary"]]
    summ = results["summary"]
    plan = results["plan"]

    main = Table(
        title=f"Gateway overhead vs a mock upstream — medians of {plan['rounds']} "
        "interleaved round(s); 'added' = through - direct"
    )
    for col in (
        "target",
        "added p50",
        "added p99",
        "req/s (16 in flight)",
        f"stream TTFT added p50 ({plan['streams']} streams)",
        "RSS (warm → end)",
    ):
        main.add_column(col, justify="left" if col in ("target", "RSS (warm → end)") else "right")
    for name in names:
        s = summ[name]
        label = f"{name} {results['targets'][name]['version']}"
        if name == "direct":
            main.add_row(
                label + " (baseline)",
                f"[dim]abs {_ms(s['latency_p50_ms'], False)}[/]",
                f"[dim]abs {_ms(s['latency_p99_ms'], False)}[/]",
                f"{s['rps']:,.0f}" if s["rps"] else "—",
                f"[dim]abs {_ms(s['ttft_p50_ms'], False)}[/]",
                "—",
            )
            continue
        main.add_row(
            label,
            _ms(s.get("added_p50_ms")),
            _ms(s.get("added_p99_ms")),
            f"{s['rps']:,.0f}" if s.get("rps") else "—",
            _ms(s.get("ttft_added_p50_ms")),
            _rss_cell(s),
        )
    for name, info in results["targets"].items():
        if info.get("status") != "ok":
            status = "skipped" if info.get("status") == "skipped" else "unavailable"
            main.add_row(name, f"[yellow]{status}[/]", "", "", "", info.get("reason", "")[:100])
    main.add_row(
        "[bold]goal[/]", "<= 1 ms", "<= 2.5 ms", ">= 1,500", "<= 10 ms", "<= 150 MB, flat over 100k"
    )
    console.print(main)

    proxies = [n for n in names if n != "direct"]
    if proxies:
        goals = Table(title="Targets from the issue")
        goals.add_column("goal")
        for name in proxies:
            goals.add_column(name)
        for goal in GOALS:
            goals.add_row(
                goal.label,
                *(_goal_cell(results["goals"][n][goal.key], _FMT[goal.key]) for n in proxies),
            )
        console.print(goals)

    det = Table(title="Details (medians over rounds; absolute figures)")
    for col in (
        "target",
        "1-at-a-time p50 / p99",
        "wrk p50 / p99",
        "wrk errors",
        "TTFT p50 / p99",
        "TTFT added p99",
        "stream p50",
        "streams measured / errors",
        "client CPU lat / streams",
    ):
        det.add_column(col, justify="left" if col == "target" else "right")
    for name in names:
        s = summ[name]
        det.add_row(
            name,
            _pair(s["latency_p50_ms"], s["latency_p99_ms"]),
            _pair(s["wrk_p50_ms"], s["wrk_p99_ms"]),
            str(s["wrk_errors"]),
            _pair(s["ttft_p50_ms"], s["ttft_p99_ms"]),
            _ms(s.get("ttft_added_p99_ms")) if name != "direct" else "—",
            _ms(s["stream_p50_ms"], False),
            f"{s['streams_measured']:,} / {s['stream_errors']}",
            f"{s['latency_client_cpu_pct'] or 0:.0f} % / {s['stream_client_cpu_pct'] or 0:.0f} %",
        )
    console.print(det)

    for name in proxies:
        mem = results["memory"].get(name)
        if not mem:
            continue
        start = results["startup_rss"].get(name, {})
        cells = [f"at start {start.get('total_kib', 0) / 1024:.0f}"] + [
            f"{_count(s['requests'])}: {s['total_kib'] / 1024:.0f}"
            if s["requests"]
            else f"warm {s['total_kib'] / 1024:.0f}"
            for s in mem["samples"]
        ]
        note = " (time cap reached)" if mem["time_capped"] else ""
        console.print(
            f"[bold]{name}[/] VmRSS samples, MB (requests since warm: MB){note}: "
            + ", ".join(cells),
            highlight=False,
        )
    for name, info in results["targets"].items():
        for note in info.get("notes", []):
            console.print(f"[dim]{name}: {note}[/]", highlight=False)


def write_json(results: dict[str, Any], out_dir: Path, stamp: str) -> Path:
    """Write ``gateway-<stamp>.json`` under ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"gateway-{stamp}.json"
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    return path
