"""``python -m bench.audit``: how fast ``audit verify`` checks a store, against the floor.

For each store (SQLite; PostgreSQL unless ``--skip-postgres``) the harness fills a fresh
database once — ``--runs`` runs of ``--steps`` journaled steps with distinct 200-byte payloads,
executed by a real ``Worker``, so every run has its ledger entries — then, in interleaved rounds:

- **floor**: the bare minimum any payload audit must do — read every journal row and its output
  (inline, or the blob it references), recompute each event's SHA-256 over its columns and each
  payload's SHA-256, in one pass with no checks against anything else;
- **elevenfactor**: ``audit(store)``: the ledger blocks and entries, every run against its
  ledger entries, the chains with their position-exact diagnosis, every payload, approvals and
  call records, a page at a time.

It prints events/s for both and the ratio, and writes ``bench/results/audit-<stamp>.json``.
No peer offers an offline audit that re-hashes payloads (DBOS, Temporal and LangGraph keep
histories but do not verify them), so the floor is the comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import hashlib
import json
import platform
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from bench.journal.dbs import PG_BASE, create_schema, drop_schema, pg_available, pg_url
from bench.journal.workload import payload
from bench.stats import median
from elevenfactor.runtime import Programs, RunContext, Worker, WorkerOptions, audit, submit_run
from elevenfactor.store import Store, migrate, open_store

REPO = Path(__file__).resolve().parents[2]
console = Console()


def _programs(steps: int) -> Programs:
    programs = Programs()

    @programs.workflow("bench")
    async def bench(ctx: RunContext, tag: str) -> int:
        for i in range(steps):
            await ctx.step("work", payload, tag, i)
        return steps

    return programs


async def _fill(store: Store, runs: int, steps: int) -> None:
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("submitting", total=runs)
        for i in range(runs):
            await submit_run(store, "bench", f"r{i}-{uuid.uuid4().hex[:6]}")
            bar.advance(task)
        task = bar.add_task("executing", total=runs)
        worker = Worker(store, _programs(steps), WorkerOptions(concurrency=1))
        while await worker.run_once():
            bar.advance(task)


async def _floor(store: Store) -> dict[str, float]:
    """Read and re-hash every event and every payload it references, a page at a time."""
    started = time.perf_counter()
    events = payloads = 0
    after: tuple[str, int] = ("", -1)
    while True:
        rows = await store.fetchall(
            "SELECT j.run_id, j.n, j.step_id, j.kind, j.name, j.status, j.output_hash, j.error,"
            " j.fence, j.created_at, j.prev_hash, j.hash, COALESCE(j.output, b.content)"
            " FROM journal j LEFT JOIN blobs b ON b.hash = j.output_hash AND j.output IS NULL"
            " WHERE (j.run_id > ?) OR (j.run_id = ? AND j.n > ?)"
            " ORDER BY j.run_id, j.n LIMIT 5000",
            (after[0], after[0], after[1]),
        )
        if not rows:
            break
        for r in rows:
            hashlib.sha256(orjson.dumps(list(r[:11]))).hexdigest()
            events += 1
            if r[12] is not None:
                hashlib.sha256(bytes(r[12])).hexdigest()
                payloads += 1
        after = (rows[-1][0], rows[-1][1])
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "events": events, "payloads": payloads}


async def _ours(store: Store) -> dict[str, float]:
    report = await audit(store, seal_first=False)
    if not report.ok:
        raise RuntimeError(f"the benchmark store does not verify: {report.findings[:3]}")
    return {"seconds": report.seconds, "events": report.events, "payloads": report.payloads}


async def _measure(url: str, args: argparse.Namespace) -> dict[str, Any]:
    store = await open_store(url)
    try:
        await migrate(store)
        t0 = time.perf_counter()
        await _fill(store, args.runs, args.steps)
        fill = time.perf_counter() - t0
        await audit(store)  # seals the ledger, warms caches
        rounds: list[dict[str, Any]] = []
        for r in range(args.rounds):
            order = [("floor", _floor), ("elevenfactor", _ours)]
            if r % 2:
                order.reverse()
            rounds.append({name: await fn(store) for name, fn in order})
        return {"fill_seconds": fill, "rounds": rounds}
    finally:
        await store.close()


def _rate(rounds: list[dict[str, Any]], who: str) -> float | None:
    return median([r[who]["events"] / r[who]["seconds"] for r in rounds])


def _commit() -> str:
    done = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO
    )
    return done.stdout.strip()


async def main(args: argparse.Namespace) -> int:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    results: dict[str, Any] = {
        "bench": "audit",
        "stamp": stamp,
        "commit": _commit(),
        "machine": {"python": platform.python_version(), "cpus": __import__("os").cpu_count()},
        "plan": {"runs": args.runs, "steps": args.steps, "rounds": args.rounds},
        "stores": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        console.print(f"SQLite: {args.runs} runs x {args.steps} steps")
        results["stores"]["sqlite"] = await _measure(f"sqlite:///{tmp}/audit.db", args)
    if not args.skip_postgres:
        why = pg_available(args.pg)
        if why:
            console.print(f"[yellow]PostgreSQL skipped[/]: {why}")
        else:
            schema = f"bench_audit_{stamp.replace('-', '_')}"
            create_schema(schema, args.pg)
            try:
                console.print(f"PostgreSQL: {args.runs} runs x {args.steps} steps")
                results["stores"]["postgresql"] = await _measure(pg_url(schema, args.pg), args)
            finally:
                drop_schema(schema, args.pg)
    table = Table(title="audit verify throughput (median of rounds)")
    for col in ("store", "events", "floor events/s", "elevenfactor events/s", "x floor"):
        table.add_column(col, justify="right" if col != "store" else "left")
    summary = {}
    for name, res in results["stores"].items():
        floor, ours = _rate(res["rounds"], "floor"), _rate(res["rounds"], "elevenfactor")
        events = res["rounds"][0]["elevenfactor"]["events"]
        ratio = floor / ours if floor and ours else None
        summary[name] = {"events": events, "floor_eps": floor, "ours_eps": ours, "slower": ratio}
        table.add_row(
            name, f"{events:,}", f"{floor:,.0f}", f"{ours:,.0f}", f"{ratio:.2f}x" if ratio else "-"
        )
    console.print(table)
    results["summary"] = summary
    out = REPO / "bench" / "results" / f"audit-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    console.print(f"results: {out.relative_to(REPO)}")
    return 0


def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.audit", description=__doc__)
    ap.add_argument("--runs", type=int, default=2000)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--skip-postgres", action="store_true")
    ap.add_argument("--pg", default=PG_BASE)
    return ap.parse_args()


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main(_args())))
