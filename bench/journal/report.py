"""Medians over rounds, the targets, the rich tables and the JSON file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.stats import median

__all__ = ["print_report", "summarize", "write_json"]

Rounds = list[dict[str, Any]]
STORES = ("sqlite", "postgresql")
STORE_LABEL = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}


def _get(d: Any, *path: str) -> Any:
    for key in path:
        if isinstance(d, list) and key.isdigit() and int(key) < len(d):
            d = d[int(key)]
            continue
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d


def _med(rounds: Rounds, *path: str) -> float | None:
    return median([v for r in rounds if isinstance(v := _get(r, *path), int | float)])


def _ratio(rounds: Rounds, num: tuple[str, ...], den: tuple[str, ...]) -> float | None:
    """Median over rounds of num/den measured in the same round."""
    vals = []
    for r in rounds:
        a, b = _get(r, *num), _get(r, *den)
        if isinstance(a, int | float) and isinstance(b, int | float) and b > 0:
            vals.append(a / b)
    return median(vals)


def _latency_keys() -> list[tuple[str, str, tuple[str, ...]]]:
    """(store, row label, path to the latency summary in a round)."""
    out = []
    for s in STORES:
        out += [
            (s, "floor: bare INSERT + COMMIT", (f"floor/{s}", "latency_us")),
            (s, "elevenfactor's step SQL alone", (f"sql/{s}", "latency_us")),
            (s, "elevenfactor ctx.step (Worker)", (f"ef/{s}", "latency_us")),
            (s, "DBOS async step", (f"dbos/{s}", "variants", "async", "latency_us")),
            (s, "DBOS sync step", (f"dbos/{s}", "variants", "sync", "latency_us")),
        ]
        if s == "sqlite":
            out += [
                (
                    s,
                    "DBOS async step, DBOS's SQLite defaults",
                    ("dbos/sqlite-default", "variants", "async", "latency_us"),
                ),
                (
                    s,
                    "DBOS sync step, DBOS's SQLite defaults",
                    ("dbos/sqlite-default", "variants", "sync", "latency_us"),
                ),
            ]
    return out


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    """Medians over rounds and the targets."""
    rounds: Rounds = results["rounds"]
    latency = []
    for store, label, path in _latency_keys():
        p50 = _med(rounds, *path, "p50")
        if p50 is None:
            continue
        latency.append(
            {
                "store": store,
                "what": label,
                "key": path[0] + ("/" + path[2] if len(path) > 2 else ""),
                "p50_us": p50,
                "p99_us": _med(rounds, *path, "p99"),
                "mean_us": _med(rounds, *path, "mean"),
                "n_per_round": _med(rounds, *path, "n"),
                "p50_x_floor": _ratio(
                    rounds, (*path, "p50"), (f"floor/{store}", "latency_us", "p50")
                ),
                "p99_x_floor": _ratio(
                    rounds, (*path, "p99"), (f"floor/{store}", "latency_us", "p99")
                ),
            }
        )
    throughput = []
    for store in STORES:
        for w in (1, 2, 3, 4):
            key = f"tp/{store}/{w}"
            rps = _med(rounds, key, "runs_per_s")
            if rps is None:
                continue
            throughput.append(
                {
                    "store": store,
                    "workers": w,
                    "runs_per_s": rps,
                    "runs_per_s_whole_drain": _med(rounds, key, "runs_per_s_whole_drain"),
                    "steps_per_s": _med(rounds, key, "steps_per_s"),
                    "x_one_worker": _ratio(
                        rounds, (key, "runs_per_s"), (f"tp/{store}/1", "runs_per_s")
                    )
                    if w > 1
                    else None,
                    "workers_cpu_pct": _med(rounds, key, "cpu", "workers_pct"),
                    "postgres_cpu_pct": _med(rounds, key, "cpu", "postgres_pct"),
                    "machine_busy_pct": _med(rounds, key, "cpu", "machine_busy_pct"),
                    "per_worker_cpu_pct": _per_worker_cpu(rounds, key),
                    "cpu_quota_cores": _last(rounds, key, "cpu_quota_cores"),
                    "confined": all(
                        _get(r, key, "confined") for r in rounds if _get(r, key) is not None
                    ),
                    "confinement_notes": sorted(
                        {n for r in rounds for n in _get(r, key, "confinement_notes") or []}
                    ),
                }
            )
    round_trips = []
    startup = []
    for store in STORES:
        key = f"rt/{store}"
        if any(_get(r, key) is not None for r in rounds):
            round_trips.append(
                {
                    "store": store,
                    "round_trips_per_run": _med(rounds, key, "round_trips_per_run"),
                    "statements_per_run": _med(rounds, key, "statements_per_run"),
                    "steps_per_run": _last(rounds, key, "steps_per_run"),
                    "claims_per_run": _ratio(
                        rounds, (key, "per_worker_claims", "0"), (key, "runs")
                    ),
                }
            )
        key = f"lat/{store}"
        if any(_get(r, key) is not None for r in rounds):
            startup.append(
                {
                    "store": store,
                    "p50_ms": _med(rounds, key, "latency_ms", "p50"),
                    "p99_ms": _med(rounds, key, "latency_ms", "p99"),
                    "max_ms": _med(rounds, key, "latency_ms", "max"),
                    "runs": _last(rounds, key, "runs"),
                    "interval_s": _last(rounds, key, "interval_s"),
                }
            )
    return {
        "latency": latency,
        "throughput": throughput,
        "round_trips": round_trips,
        "first_step_latency": startup,
        "goals": _goals(rounds),
    }


def _last(rounds: Rounds, *path: str) -> Any:
    vals = [v for r in rounds if (v := _get(r, *path)) is not None]
    return vals[-1] if vals else None


def _per_worker_cpu(rounds: Rounds, key: str) -> list[float | None]:
    """Median over rounds of each worker's CPU (% of one core), in worker order."""
    lists = [v for r in rounds if isinstance(v := _get(r, key, "cpu", "per_worker_pct"), list)]
    if not lists:
        return []
    width = max(len(v) for v in lists)
    return [
        median([v[i] for v in lists if i < len(v) and isinstance(v[i], int | float)])
        for i in range(width)
    ]


def _best_dbos(rounds: Rounds, store: str) -> tuple[float | None, str]:
    best: tuple[float | None, str] = (None, "")
    for variant in ("async", "sync"):
        v = _med(rounds, f"dbos/{store}", "variants", variant, "latency_us", "p50")
        if v is not None and (best[0] is None or v < best[0]):
            best = (v, variant)
    return best


def _goals(rounds: Rounds) -> list[dict[str, Any]]:
    goals: list[dict[str, Any]] = []
    if not any(_get(r, f"ef/{s}") for r in rounds for s in STORES):
        return goals + _scale_goals(rounds)  # --scale-out-only
    for store in STORES:
        x = _ratio(
            rounds, (f"ef/{store}", "latency_us", "p50"), (f"floor/{store}", "latency_us", "p50")
        )
        goals.append(
            {
                "target": f"{STORE_LABEL[store]}: step p50 <= 2x bare commit p50",
                "measured": None if x is None else f"{x:.2f}x",
                "value": x,
                "met": None if x is None else x <= 2.0,
            }
        )
    for store in STORES:
        ours = _med(rounds, f"ef/{store}", "latency_us", "p50")
        theirs, variant = _best_dbos(rounds, store)
        ok = None if ours is None or theirs is None else ours < theirs
        goals.append(
            {
                "target": f"{STORE_LABEL[store]}: step p50 faster than DBOS (its faster variant)",
                "measured": None
                if ok is None
                else f"{ours:,.0f} vs {theirs:,.0f} µs ({variant}): {theirs / ours:.1f}x faster"
                if ours and theirs and ours < theirs
                else f"{ours:,.0f} vs {theirs:,.0f} µs ({variant})",
                "value": None if ok is None or not ours or not theirs else theirs / ours,
                "met": ok,
            }
        )
    return goals + _scale_goals(rounds)


def _scale_goals(rounds: Rounds) -> list[dict[str, Any]]:
    goals: list[dict[str, Any]] = []
    for w, target in ((2, 1.8), (3, 2.5)):
        x = _ratio(rounds, (f"tp/postgresql/{w}", "runs_per_s"), ("tp/postgresql/1", "runs_per_s"))
        goals.append(
            {
                "target": f"PostgreSQL: {w} workers >= {target}x the runs/s of 1 worker"
                " (each worker confined to a fixed CPU share)",
                "measured": None if x is None else f"{x:.2f}x",
                "value": x,
                "met": None if x is None else x >= target,
            }
        )
    return goals


def _us(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:,.1f}" if v < 100 else f"{v:,.0f}"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f} %"


def _x(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}x"


def print_report(console: Console, results: dict[str, Any]) -> None:
    """The three tables."""
    summary = results["summary"]
    rounds = len(results["rounds"])
    plan = results["plan"]
    t = Table(
        title=f"One journaled step, ~{plan['payload_bytes']}-byte result (µs; medians of "
        f"{rounds} interleaved round{'s' if rounds != 1 else ''})",
        title_justify="left",
    )
    for col in ("store", "what", "p50", "p99", "mean", "p50 / floor", "p99 / floor"):
        t.add_column(col, justify="left" if col in ("store", "what") else "right")
    last = None
    for row in summary["latency"]:
        if last is not None and row["store"] != last:
            t.add_section()
        last = row["store"]
        style = "bold" if row["what"].startswith("elevenfactor ctx") else None
        t.add_row(
            STORE_LABEL[row["store"]],
            row["what"],
            _us(row["p50_us"]),
            _us(row["p99_us"]),
            _us(row["mean_us"]),
            _x(row["p50_x_floor"]),
            _x(row["p99_x_floor"]),
            style=style,
        )
    if summary["latency"]:
        console.print(t)
    quota = plan.get("cpu_quota")
    t = Table(
        title=f"Runs/s draining {plan['tp_runs']} pre-submitted runs of {plan['tp_steps']} steps "
        f"(worker processes, concurrency 8 each, "
        + (f"each confined to {quota} CPU core" if quota else "unconfined")
        + "; rate between 10 % and 90 % done; CPU in % of one core)",
        title_justify="left",
    )
    for col in (
        "store",
        "workers",
        "runs/s",
        "runs/s whole drain",
        "steps/s",
        "vs 1 worker",
        "CPU workers",
        "CPU each worker",
        "CPU postgres",
        "machine busy",
    ):
        t.add_column(col, justify="left" if col == "store" else "right")
    for row in summary["throughput"]:
        t.add_row(
            STORE_LABEL[row["store"]],
            str(row["workers"]),
            f"{row['runs_per_s']:,.0f}",
            f"{row['runs_per_s_whole_drain']:,.0f}" if row["runs_per_s_whole_drain"] else "-",
            f"{row['steps_per_s']:,.0f}" if row["steps_per_s"] else "-",
            _x(row["x_one_worker"]),
            _pct(row["workers_cpu_pct"]),
            " / ".join(_pct(v) for v in row["per_worker_cpu_pct"]) or "-",
            _pct(row["postgres_cpu_pct"]) if row["store"] == "postgresql" else "-",
            _pct(row["machine_busy_pct"]),
        )
    console.print(t)
    for row in summary["throughput"]:
        if not row["confined"] and quota:
            notes = "; ".join(row["confinement_notes"]) or "not confined"
            console.print(
                f"[yellow]{STORE_LABEL[row['store']]}, {row['workers']} worker(s):[/] {notes}"
            )
    if summary.get("round_trips") or summary.get("first_step_latency"):
        t = Table(
            title="Per run: database round trips (one unconfined worker; PostgreSQL: libpq "
            "protocol trace, Sync + simple Query; SQLite: statements) and latency from "
            "submission to first step (one idle worker at its defaults, runs submitted one at "
            "a time from another process)",
            title_justify="left",
        )
        for col in (
            "store",
            "steps/run",
            "round trips/run",
            "statements/run",
            "claims/run",
            "first step p50 ms",
            "p99 ms",
            "max ms",
        ):
            t.add_column(col, justify="left" if col == "store" else "right")
        lat = {r["store"]: r for r in summary.get("first_step_latency", [])}
        rts = {r["store"]: r for r in summary.get("round_trips", [])}
        for store in STORES:
            rt, lt = rts.get(store, {}), lat.get(store, {})
            if not rt and not lt:
                continue

            def num(v: float | None, fmt: str = "{:.1f}") -> str:
                return "-" if v is None else fmt.format(v)

            t.add_row(
                STORE_LABEL[store],
                num(rt.get("steps_per_run"), "{:.0f}"),
                num(rt.get("round_trips_per_run")) if store == "postgresql" else "in process",
                num(rt.get("statements_per_run")),
                num(rt.get("claims_per_run"), "{:.2f}"),
                num(lt.get("p50_ms")),
                num(lt.get("p99_ms")),
                num(lt.get("max_ms")),
            )
        console.print(t)
    t = Table(title="Targets", title_justify="left")
    t.add_column("target")
    t.add_column("measured", justify="right")
    t.add_column("status")
    for g in summary["goals"]:
        status = (
            "[yellow]? not measured[/]"
            if g["met"] is None
            else "[green]met[/]"
            if g["met"]
            else "[red]NOT met[/]"
        )
        t.add_row(g["target"], g["measured"] or "-", status)
    console.print(t)
    if results["failures"]:
        console.print(f"[red]{len(results['failures'])} measurement(s) failed; see the JSON[/]")
    for name, info in results["unavailable"].items():
        console.print(f"[yellow]{name} unavailable:[/] {info}")


def write_json(results: dict[str, Any], directory: Path, stamp: str) -> Path:
    """``bench/results/journal-<stamp>.json``."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"journal-{stamp}.json"
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    return path
