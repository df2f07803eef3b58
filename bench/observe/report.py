"""Tables and verdicts for ``bench.observe``."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = ["TARGET_ADDED_P50_US", "print_report", "verdicts"]

TARGET_ADDED_P50_US = 200.0
"""Issue 11: tracing + metrics + logs add at most 0.2 ms p50 per gateway call."""

# Issue 2's gateway targets, with everything observed.
ISSUE2_ADDED_P50_US = 1000.0
ISSUE2_ADDED_P99_US = 2500.0
ISSUE2_RPS = 1500.0


def _us(v: float | None) -> str:
    return "—" if v is None else f"{v:+,.0f}" if v < 0 else f"{v:,.0f}"


def _plus(v: float | None) -> str:
    return "—" if v is None else f"{v:+,.0f} µs"


def verdicts(summary: dict[str, Any]) -> dict[str, Any]:
    """Each target as measured, with met / not met."""
    added = summary["added_us"]
    out: dict[str, Any] = {}
    on = added.get("ef-on", {})
    if "vs ef-off" in on:
        p50 = on["vs ef-off"]["plain"]["p50"]
        out["observability_added_p50_us"] = {
            "value": p50,
            "target": TARGET_ADDED_P50_US,
            "met": p50 <= TARGET_ADDED_P50_US,
        }
    if "vs direct" in on:
        p50 = on["vs direct"]["plain"]["p50"]
        p99 = on["vs direct"]["plain"]["p99"]
        out["issue2_added_p50_us"] = {
            "value": p50,
            "target": ISSUE2_ADDED_P50_US,
            "met": p50 <= ISSUE2_ADDED_P50_US,
        }
        out["issue2_added_p99_us"] = {
            "value": p99,
            "target": ISSUE2_ADDED_P99_US,
            "met": p99 <= ISSUE2_ADDED_P99_US,
        }
    rps = summary["load"].get("ef-on", {}).get("rps")
    if rps is not None:
        out["issue2_rps_16_in_flight"] = {
            "value": rps,
            "target": ISSUE2_RPS,
            "met": rps >= ISSUE2_RPS,
        }
    return out


def print_report(console: Console, results: dict[str, Any]) -> None:
    """The latency table, the added-cost table, the load table, the checks and the verdicts."""
    summary = results["summary"]
    lat = Table(title="Latency per request, one at a time (µs, medians over rounds)")
    for col in ("target", "plain p50", "plain p99", "stream p50", "stream p99"):
        lat.add_column(col, justify="right" if col != "target" else "left")
    for name, modes in summary["latency_us"].items():
        lat.add_row(
            name,
            _us(modes["plain"]["p50"]),
            _us(modes["plain"]["p99"]),
            _us(modes["stream"]["p50"]),
            _us(modes["stream"]["p99"]),
        )
    console.print(lat)
    add = Table(title="Added per request (median over rounds of the per-round difference)")
    for col in ("target", "against", "plain p50", "plain p99", "stream p50", "stream p99"):
        add.add_column(col, justify="right" if col not in ("target", "against") else "left")
    for name, against in summary["added_us"].items():
        for base, modes in against.items():
            add.add_row(
                name,
                base,
                _plus(modes["plain"]["p50"]),
                _plus(modes["plain"]["p99"]),
                _plus(modes["stream"]["p50"]),
                _plus(modes["stream"]["p99"]),
            )
    console.print(add)
    load = Table(title="16 connections (wrk), plain answers")
    for col in ("target", "req/s", "server CPU per request (µs)", "errors"):
        load.add_column(col, justify="right" if col != "target" else "left")
    for name, row in summary["load"].items():
        cpu = row["cpu_us_per_request"]
        load.add_row(
            name, f"{row['rps']:,.0f}", "—" if cpu is None else f"{cpu:,.0f}", str(row["errors"])
        )
    console.print(load)
    checks = results.get("checks", {})
    console.print(f"receiver: {checks.get('receiver')}")
    console.print(f"ef-on /metrics: {checks.get('ef_on_metrics')}")
    ver = Table(title="Targets")
    for col in ("target", "measured", "goal", "met"):
        ver.add_column(col)
    for name, v in results.get("verdicts", {}).items():
        goal = f"≥ {v['target']:,.0f}" if "rps" in name else f"≤ {v['target']:,.0f}"
        ver.add_row(name, f"{v['value']:,.0f}", goal, "met" if v["met"] else "NOT met")
    console.print(ver)
