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

__all__ = [
    "GOALS",
    "GOAL_FORMATS",
    "Goal",
    "evaluate",
    "goal_cell",
    "print_report",
    "summarize_results",
    "write_json",
]

Rounds = list[dict[str, dict[str, Any]]]


@dataclass(frozen=True, slots=True)
class Goal:
    """One target from the issue: ``cmp(value, limit)``; ``key`` names the summary value."""

    key: str
    label: str
    limit: float
    cmp: Callable[[float, float], bool]
    errors_key: str | None = None
    column: str = ""  # short form for the summary table


GOALS = [
    Goal(
        "added_p50_vs_floor",
        "added p50 <= 1.5x the floor's added p50, one request at a time",
        1.5,
        operator.le,
        "latency_errors",
        "<= 1.5x floor",
    ),
    Goal(
        "added_p99_ms",
        "added p99 <= 1 ms, one request at a time",
        1.0,
        operator.le,
        "latency_errors",
        "<= 1 ms",
    ),
    Goal(
        "cpu_vs_floor",
        "server CPU per request <= 2x the floor's (wrk, 16 in flight)",
        2.0,
        operator.le,
        "wrk_errors",
        "<= 2x floor",
    ),
    Goal(
        "rps_vs_floor",
        "req/s at 16 in flight >= 0.5x the floor's",
        0.5,
        operator.ge,
        "wrk_errors",
        ">= 0.5x floor",
    ),
    Goal(
        "ttft_added_vs_floor",
        "256 concurrent streams: added TTFT p50 <= 2x the floor's added TTFT p50",
        2.0,
        operator.le,
        "stream_errors",
        "<= 2x floor",
    ),
    Goal(
        "ttft_added_p50_ms",
        "256 concurrent streams: added TTFT p50 <= 10 ms (where the machine allows it)",
        10.0,
        operator.le,
        "stream_errors",
        "<= 10 ms",
    ),
    Goal("rss_max_mb", "RSS <= 150 MB per process", 150, operator.le, None, "<= 150 MB"),
    Goal(
        "rss_growth_pct",
        "RSS flat over 100,000 requests (growth < 10 %)",
        10.0,
        operator.lt,
        "memory_errors",
        "flat",
    ),
]
_FLAT_REQUESTS = 100_000
FLOOR = "relay"


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


def _ratio(
    rounds: Rounds, name: str, *path: str, floor: str = FLOOR, added: bool = False
) -> float | None:
    """Median over rounds of target / floor for the value at ``path`` (``added``: of
    (target - direct) / (floor - direct)), each ratio taken within one round. Rounds where the
    floor's figure is not positive are left out."""
    ratios = []
    for rnd in rounds:
        mine, ref = _get(rnd.get(name), *path), _get(rnd.get(floor), *path)
        if not (isinstance(mine, int | float) and isinstance(ref, int | float)):
            continue
        if added:
            base = _get(rnd.get("direct"), *path)
            if not isinstance(base, int | float):
                continue
            mine, ref = mine - base, ref - base
        if ref > 0:
            ratios.append(mine / ref)
    return median(ratios)


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
        "latency_cpu_us": _med(lat, name, "server_cpu_us_per_request"),
        "rps": _med(thr, name, "rps"),
        "cpu_us_per_request": _med(thr, name, "server_cpu_us_per_request"),
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
    if name not in ("direct", FLOOR):
        out |= {
            "added_p50_vs_floor": _ratio(lat, name, "latency_us", "p50", added=True),
            "added_p99_vs_floor": _ratio(lat, name, "latency_us", "p99", added=True),
            "cpu_vs_floor": _ratio(thr, name, "server_cpu_us_per_request"),
            "latency_cpu_vs_floor": _ratio(lat, name, "server_cpu_us_per_request"),
            "rps_vs_floor": _ratio(thr, name, "rps"),
            "ttft_added_vs_floor": _ratio(st, name, "ttft_ms", "p50", added=True),
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


def evaluate(
    summary: dict[str, Any], floor: dict[str, Any] | None = None
) -> dict[str, dict[str, Any]]:
    """Each goal: the value, and met (True/False) or None when it could not be measured.

    Errors of the floor in the same phase make a comparison with it unmeasurable.
    """
    out = {}
    for goal in GOALS:
        value = summary.get(goal.key)
        errors = int(summary.get(goal.errors_key) or 0) if goal.errors_key else 0
        floor_errors = (
            int((floor or {}).get(goal.errors_key) or 0)
            if goal.errors_key and goal.key.endswith("_vs_floor")
            else 0
        )
        met: bool | None
        why = ""
        if value is None:
            met, why = None, "not measured"
            if goal.key.endswith("_vs_floor") and floor is None:
                why = "no floor"
        elif floor_errors:
            met, why = None, f"the floor had {floor_errors} failed requests"
        elif errors:
            met, why = False, f"{errors} failed requests"
        else:
            met = bool(goal.cmp(value, goal.limit))
        floor_ttft = (floor or {}).get("ttft_added_p50_ms")
        if (
            goal.key == "ttft_added_p50_ms"
            and met is False
            and isinstance(floor_ttft, int | float)
            and floor_ttft > goal.limit
        ):
            # "where the machine allows it": the bare relay alone is already over the limit.
            met, why = None, f"the floor itself adds {floor_ttft:+.1f} ms here"
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


def _num(v: float | None) -> str:
    return "—" if v is None else f"{v:.0f}"


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


def goal_cell(g: dict[str, Any], fmt: Callable[[float], str]) -> str:
    value = "—" if g["value"] is None else fmt(g["value"])
    if g["met"] is None:
        return f"[yellow]? {value}[/] ({g['why']})"
    why = f" ({g['why']})" if g["why"] else ""
    return f"[green]met[/] {value}" if g["met"] else f"[red]NOT met[/] {value}{why}"


GOAL_FORMATS: dict[str, Callable[[float], str]] = {
    "added_p50_vs_floor": lambda v: f"{v:.2f}x",
    "added_p99_ms": lambda v: f"{v:+.2f} ms",
    "cpu_vs_floor": lambda v: f"{v:.2f}x",
    "rps_vs_floor": lambda v: f"{v:.2f}x",
    "ttft_added_vs_floor": lambda v: f"{v:.2f}x",
    "ttft_added_p50_ms": lambda v: f"{v:+.2f} ms",
    "rss_max_mb": lambda v: f"{v:.0f} MB",
    "rss_growth_pct": lambda v: f"{v:+.1f} %",
}


def _x(v: float | None) -> str:
    return "" if v is None else f" [dim]({v:.2f}x)[/]"


def _order(results: dict[str, Any]) -> list[str]:
    fixed = ["direct", FLOOR, "elevenfactor"]
    rest = sorted(n for n in results["summary"] if n not in fixed and n != "litellm")
    return [n for n in [*fixed, *rest, "litellm"] if n in results["summary"]]


def print_report(console: Console, results: dict[str, Any]) -> None:
    """The side-by-side table, the goals, the details and the RSS samples."""
    names = _order(results)
    summ = results["summary"]
    plan = results["plan"]

    main = Table(
        title=f"Gateway overhead vs a mock upstream — medians of {plan['rounds']} "
        "interleaved round(s); 'added' = through - direct; (Nx) = vs the floor, same rounds"
    )
    for col in (
        "target",
        "added p50",
        "added p99",
        "req/s (16 in flight)",
        "CPU µs/req",
        f"stream TTFT added p50 ({plan['streams']} streams)",
        "RSS (warm → end)",
    ):
        main.add_column(col, justify="left" if col in ("target", "RSS (warm → end)") else "right")
    for name in names:
        s = summ[name]
        label = f"{name} {results['targets'][name]['version']}"
        rps = f"{s['rps']:,.0f}" if s.get("rps") else "—"
        cpu = f"{s['cpu_us_per_request']:.0f}" if s.get("cpu_us_per_request") else "—"
        if name == "direct":
            main.add_row(
                label + " (baseline)",
                f"[dim]abs {_ms(s['latency_p50_ms'], False)}[/]",
                f"[dim]abs {_ms(s['latency_p99_ms'], False)}[/]",
                rps,
                cpu,
                f"[dim]abs {_ms(s['ttft_p50_ms'], False)}[/]",
                "—",
            )
            continue
        main.add_row(
            label + (" (the floor)" if name == FLOOR else ""),
            _ms(s.get("added_p50_ms")) + _x(s.get("added_p50_vs_floor")),
            _ms(s.get("added_p99_ms")) + _x(s.get("added_p99_vs_floor")),
            rps + _x(s.get("rps_vs_floor")),
            cpu + _x(s.get("cpu_vs_floor")),
            _ms(s.get("ttft_added_p50_ms")) + _x(s.get("ttft_added_vs_floor")),
            _rss_cell(s),
        )
    for name, info in results["targets"].items():
        if info.get("status") != "ok":
            status = "skipped" if info.get("status") == "skipped" else "unavailable"
            main.add_row(name, f"[yellow]{status}[/]", "", "", "", "", info.get("reason", "")[:100])
    main.add_row(
        "[bold]goal[/]",
        "<= 1.5x floor",
        "<= 1 ms",
        ">= 0.5x floor",
        "<= 2x floor",
        "<= 2x floor, <= 10 ms",
        "<= 150 MB, flat over 100k",
    )
    console.print(main)

    proxies = [n for n in names if n not in ("direct", FLOOR)]
    if proxies:
        goals = Table(
            title=f"Targets from the issue (the floor: {FLOOR}, measured in the same run)"
        )
        goals.add_column("goal")
        for name in proxies:
            goals.add_column(name)
        for goal in GOALS:
            goals.add_row(
                goal.label,
                *(
                    goal_cell(results["goals"][n][goal.key], GOAL_FORMATS[goal.key])
                    for n in proxies
                ),
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
        "server CPU µs/req lat / wrk",
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
            f"{_num(s.get('latency_cpu_us'))} / {_num(s.get('cpu_us_per_request'))}",
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


def write_json(results: dict[str, Any], out_dir: Path, stamp: str, name: str = "gateway") -> Path:
    """Write ``<name>-<stamp>.json`` under ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}-{stamp}.json"
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    return path
