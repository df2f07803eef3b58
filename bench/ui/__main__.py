"""``python -m bench.ui``: how long each dashboard page takes to render server-side with 100k
runs and ~1M journal events in the store, on SQLite and PostgreSQL, against its floors (the
SQL it ran, replayed alone; the JSON API request doing the same read) and the 100 ms target.
See ``bench/ui/README.md``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bench.gateway.report import write_json
from bench.journal.dbs import PG_BASE, pg_available
from bench.stats import percentile
from bench.ui._app import in_process
from bench.ui._measure import TARGET_MS, measure_page
from bench.ui._migrate import deferred, housekeep, run_deferred, ui_index_names
from bench.ui._pages import PAGES, PageSpec
from bench.ui._pg import load_from_sqlite, pg_database
from bench.ui._plan import SeedPlan
from bench.ui._report import print_report, summarize
from bench.ui.seed import REPO, Seeded, ensure_seeded
from elevenfactor.store import open_store

RESULTS_DIR = REPO / "bench" / "results"


@dataclass(frozen=True, slots=True)
class Plan:
    """Renders per page and store, after a warm-up."""

    n: int = 50
    warmup: int = 5

    @classmethod
    def quick(cls) -> Plan:
        """For iterating: 10 renders after 2."""
        return cls(n=10, warmup=2)


def _args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.ui", description=__doc__)
    ap.add_argument("--db", default=PG_BASE, help=f"PostgreSQL server (default {PG_BASE})")
    ap.add_argument("--store", choices=("sqlite", "postgresql", "both"), default="both")
    ap.add_argument("--quick", action="store_true", help="10 renders per page after 2")
    ap.add_argument("-n", type=int, help="renders per page (default 50)")
    ap.add_argument("--page", action="append", default=[], help="only pages whose name has this")
    ap.add_argument("--scale", type=float, default=1.0, help="store size (1.0: 100k runs)")
    ap.add_argument("--rebuild", action="store_true", help="seed the store again")
    ap.add_argument("--max-age-days", type=float, default=3.0, help="reseed when older")
    ap.add_argument("--no-write", action="store_true", help="print only, no result file")
    ap.add_argument("--out", type=Path, default=RESULTS_DIR, help="where the result file goes")
    ap.add_argument(
        "--explain", action="store_true", help="time each statement alone with its plan"
    )
    ap.add_argument(
        "--sqlite-analyze",
        action="store_true",
        help="run ANALYZE (analysis_limit=1000) on the SQLite copy: the plans with statistics",
    )
    return ap.parse_args(argv)


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)
    return done.stdout.strip()


@contextlib.asynccontextmanager
async def _sqlite(
    seeded: Seeded, workdir: Path, analyze: bool
) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """A working copy of the cached file with the deferred migrations run as they are now
    (and, with ``analyze``, planner statistics)."""
    t0 = time.perf_counter()
    path = workdir / "ui.db"
    shutil.copyfile(seeded.path, path)
    url = f"sqlite:///{path}"
    store = await open_store(url)
    try:
        ran = await run_deferred(store)
        upkeep = await housekeep(store)
        if analyze:
            await store.execute("PRAGMA analysis_limit=1000")
            await store.execute("ANALYZE")
    finally:
        await store.close()
    setup = {"ready_s": time.perf_counter() - t0, "migrated": ran, "analyzed": analyze}
    setup["housekeeping"] = upkeep
    yield url, setup | {"ui_indexes": ui_index_names()}


@contextlib.asynccontextmanager
async def _postgres(seeded: Seeded, server: str) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """A dedicated database loaded from the cached file (dropped afterwards)."""
    t0 = time.perf_counter()
    with pg_database(server) as url:
        rows, upkeep = await load_from_sqlite(seeded.path, url)
        setup = {"ready_s": time.perf_counter() - t0, "ui_indexes": ui_index_names()}
        setup |= {"migrated": deferred(), "housekeeping": upkeep}
        yield url, setup | {"rows": sum(rows.values())}


async def _overhead(client: Any, n: int) -> float:
    times = []
    for _ in range(n + 3):
        t0 = time.perf_counter()
        await client.get("/healthz")
        times.append((time.perf_counter() - t0) * 1000.0)
    return percentile(sorted(times[3:]), 50)


async def _measure_store(
    name: str, url: str, setup: dict[str, Any], seeded: Seeded, pages: list[PageSpec],
    plan: Plan, workdir: Path, progress: Progress, explain: bool,
) -> dict[str, Any]:  # fmt: skip
    task = progress.add_task(f"{name}: rendering", total=len(pages) * plan.n)
    out: list[dict[str, Any]] = []
    async with in_process(url, workdir / f"data-{name}", seeded.meta["secrets"]) as ip:
        setup["client_overhead_ms"] = await _overhead(ip.client, plan.n)
        for spec in pages:
            progress.update(task, description=f"{name}: {spec.name} ({spec.who})")
            res = await measure_page(
                ip, spec, seeded.meta, n=plan.n, warmup=plan.warmup, explain=explain,
                tick=lambda: progress.advance(task),
            )  # fmt: skip
            out.append(res.summary())
    progress.update(task, completed=len(pages) * plan.n, description=f"{name}: done")
    return {"url": url.split("?")[0], "setup": setup, "pages": out}


async def _run(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    plan = Plan.quick() if args.quick else Plan()
    if args.n:
        plan = Plan(n=args.n, warmup=plan.warmup)
    seed_plan = SeedPlan.scaled(args.scale) if args.scale != 1.0 else SeedPlan()
    pages = [p for p in PAGES if not args.page or any(s in p.name for s in args.page)]
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    with console.status("seeding (or finding the cached store)..."):
        seeded = await ensure_seeded(
            seed_plan, rebuild=args.rebuild, max_age_days=args.max_age_days
        )
    meta = {k: v for k, v in seeded.meta.items() if k != "secrets"}
    results: dict[str, Any] = {
        "meta": {
            "stamp": stamp,
            "quick": args.quick,
            "command": " ".join(["python -m bench.ui", *sys.argv[1:]]),
            "git_commit": _git("rev-parse", "HEAD"),
            "src_uncommitted_changes": bool(_git("status", "--porcelain", "src")),
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "target_ms": TARGET_MS,
            "store_age_days": round(seeded.age_days, 3),
        },
        "plan": asdict(plan),
        "seed": meta,
        "stores": {},
    }
    stores = ["sqlite", "postgresql"] if args.store == "both" else [args.store]
    workdir = Path(tempfile.mkdtemp(prefix="bench-ui-"))
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())  # fmt: skip
    try:
        with Progress(*columns, console=console) as progress:
            for name in stores:
                if name == "postgresql" and (why := pg_available(args.db)):
                    results["stores"][name] = {"skipped": why, "pages": []}
                    continue
                ready = (
                    _sqlite(seeded, workdir, args.sqlite_analyze)
                    if name == "sqlite"
                    else _postgres(seeded, args.db)
                )
                async with ready as (url, setup):
                    results["stores"][name] = await _measure_store(
                        name, url, setup, seeded, pages, plan, workdir, progress, args.explain
                    )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    results["summary"] = summarize(results["stores"])
    return results


def main(argv: list[str] | None = None) -> int:
    """Seed or reuse the store, render every page on each store, print, write the JSON."""
    args = _args(argv)
    console = Console() if Console().is_terminal else Console(width=160)
    try:
        results = asyncio.run(_run(args, console))
    except (RuntimeError, OSError) as exc:
        console.print(f"[red]benchmark failed:[/] {exc}")
        return 1
    print_report(console, results)
    if not args.no_write:
        path = write_json(results, args.out, results["meta"]["stamp"], name="ui")
        console.print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
