"""The bench's tables (one per store: each page's p50/p95 against the 100 ms target, its SQL
replayed alone and its JSON API peer) and the summary kept in the result file."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from bench.ui._measure import TARGET_MS

__all__ = ["print_report", "summarize"]


def _ms(v: float | None) -> str:
    return "—" if v is None else f"{v:.1f}"


def _verdict(p: dict[str, Any]) -> str:
    if p["status"] != "ok":
        return f"[yellow]{p['status']}[/]"
    return "[red]OVER[/]" if p["over_target"] else "[green]ok[/]"


def print_report(console: Console, results: dict[str, Any]) -> None:
    """One table per store, then the pages that are over the target or did not render."""
    plan = results["plan"]
    for store, res in results["stores"].items():
        table = Table(
            title=f"{store}: server-side render, ms over {plan['n']} renders after"
            f" {plan['warmup']} (target p95 <= {TARGET_MS:.0f} ms)"
        )
        for col in ("page", "as", "p50", "p95", "target", "SQL p50", "reads", "peer p50", "peer"):
            table.add_column(col, justify="left" if col in ("page", "as", "peer") else "right")
        for p in res["pages"]:
            table.add_row(
                p["name"], p["who"], _ms(p["page_p50_ms"]), _ms(p["page_p95_ms"]), _verdict(p),
                _ms(p["sql_p50_ms"]), str(p["reads"]) if p["status"] == "ok" else "",
                _ms(p["peer_p50_ms"]), (p["peer"] or "") if p["status"] == "ok" else p["detail"],
            )  # fmt: skip
        console.print(table)
        setup = res.get("setup", {})
        stats = " + ANALYZE" if setup.get("analyzed") else ""
        console.print(
            f"[dim]{store}: store ready in {setup.get('ready_s', 0):.1f} s (then migrated:"
            f" {', '.join(setup.get('migrated', [])) or 'nothing'}{stats}; their indexes:"
            f" {', '.join(setup.get('ui_indexes', [])) or 'none'}); client overhead"
            f" (GET /healthz) p50 {_ms(setup.get('client_overhead_ms'))} ms[/]",
            highlight=False,
        )
    flagged = [
        (store, p)
        for store, res in results["stores"].items()
        for p in res["pages"]
        if p["status"] != "ok" or p["over_target"]
    ]
    if flagged:
        console.print("[bold]Over the target or not rendered:[/]")
        for store, p in flagged:
            why = p["detail"] or f"p95 {p['page_p95_ms']:.1f} ms, SQL p50 {_ms(p['sql_p50_ms'])}"
            console.print(f"  {store} {p['name']} ({p['who']}): {why}", highlight=False)
            for s in p.get("explain", [])[:2]:
                console.print(
                    f"    [dim]{s['ms']:.1f} ms, {s['rows']} rows: {s['sql'][:300]}[/]",
                    highlight=False,
                )
                for line in s["plan"][:12]:
                    console.print(f"      [dim]{line}[/]", highlight=False)
    else:
        console.print("[green]Every page renders within the target on every store.[/]")


def summarize(stores: dict[str, Any]) -> dict[str, Any]:
    """Per store: pages measured, over the target, not rendered, and the slowest p95."""
    out: dict[str, Any] = {}
    for store, res in stores.items():
        pages = res["pages"]
        ok = [p for p in pages if p["status"] == "ok"]
        worst = max(ok, key=lambda p: p["page_p95_ms"] or 0.0, default=None)
        slowest = None
        if worst is not None:
            slowest = {"page": f"{worst['name']} ({worst['who']})", "p95_ms": worst["page_p95_ms"]}
        out[store] = {
            "pages": len(pages),
            "rendered": len(ok),
            "over_target": [f"{p['name']} ({p['who']})" for p in ok if p["over_target"]],
            "not_rendered": [
                f"{p['name']} ({p['who']}): {p['detail']}" for p in pages if p["status"] != "ok"
            ],
            "slowest": slowest,
        }
    return out
