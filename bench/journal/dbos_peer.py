# mypy: disable-error-code="import-not-found,untyped-decorator"
"""The same workflow on DBOS, run in the peers venv: ``bench/.peers-venv-journal/bin/python -m
bench.journal.dbos_peer ...`` from the repository root. Prints one JSON object.

Two variants in one DBOS process, alternating run by run: an ``async`` workflow awaiting an
``async`` step (the shape of elevenfactor's API) and a plain ``sync`` workflow calling a sync step.
Each step call is timed inside the workflow. SQLite system databases run either with DBOS's own
defaults (rollback journal, ``synchronous=FULL``: an fsync per commit) or ``--sqlite-pragmas
matched``: WAL and ``synchronous=NORMAL``, like elevenfactor's store. Only the standard library,
DBOS and this package's stdlib-only helpers are imported here.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import logging
import sqlite3
import sys
import time
from typing import Any

from bench.journal.workload import payload
from bench.stats import summarize

APP_VERSION = "bench-journal-1"  # pinned: a changed codebase must not orphan workflows
_timings: dict[str, list[list[float]]] = {"async": [], "sync": []}


def _matched_pragmas(path: str) -> None:
    """WAL on the file (persistent), ``synchronous=NORMAL`` on every SQLAlchemy connection."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.close()

    @event.listens_for(Engine, "connect")
    def _normal(dbapi_conn: Any, _record: Any) -> None:
        if isinstance(dbapi_conn, sqlite3.Connection):
            dbapi_conn.execute("PRAGMA synchronous=NORMAL")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Launch DBOS, execute the runs, return per-step figures per variant."""
    from dbos import DBOS, DBOSConfig

    if args.db.startswith("sqlite") and args.sqlite_pragmas == "matched":
        _matched_pragmas(args.db.split(":///", 1)[1])
    config: DBOSConfig = {
        "name": "bench-journal",
        "system_database_url": args.db,
        "application_version": APP_VERSION,
        "log_level": "WARNING",
        "executor_id": "bench-journal",
    }
    if args.schema:
        config["dbos_system_schema"] = args.schema
    DBOS(config=config)

    @DBOS.step()
    def work_sync(tag: str, i: int) -> dict[str, Any]:
        return payload(tag, i)

    @DBOS.step()
    async def work_async(tag: str, i: int) -> dict[str, Any]:
        return payload(tag, i)

    @DBOS.workflow()
    def wf_sync(steps: int, record: bool) -> int:
        tag = DBOS.workflow_id or ""
        clock = time.perf_counter_ns
        mine: list[float] = []
        for i in range(steps):
            t0 = clock()
            work_sync(tag, i)
            mine.append((clock() - t0) / 1000)
        if record:
            _timings["sync"].append(mine)
        return steps

    @DBOS.workflow()
    async def wf_async(steps: int, record: bool) -> int:
        tag = DBOS.workflow_id or ""
        clock = time.perf_counter_ns
        mine: list[float] = []
        for i in range(steps):
            t0 = clock()
            await work_async(tag, i)
            mine.append((clock() - t0) / 1000)
        if record:
            _timings["async"].append(mine)
        return steps

    DBOS.launch()
    variants = [v for v in ("async", "sync") if v in args.variants.split(",")]

    async def drive() -> None:
        for v in variants:  # warm-up
            if v == "async":
                await wf_async(args.steps, False)
            else:
                await asyncio.to_thread(wf_sync, args.steps, False)
        for r in range(args.runs):
            order = variants if r % 2 == 0 else variants[::-1]
            for v in order:
                if v == "async":
                    await wf_async(args.steps, True)
                else:
                    await asyncio.to_thread(wf_sync, args.steps, True)

    t0 = time.monotonic()
    try:
        asyncio.run(drive())
    finally:
        DBOS.destroy(destroy_registry=True)
    return {
        "version": importlib.metadata.version("dbos"),
        "sqlite_pragmas": args.sqlite_pragmas if args.db.startswith("sqlite") else None,
        "runs": args.runs,
        "steps_per_run": args.steps,
        "seconds": round(time.monotonic() - t0, 3),
        "variants": {
            v: {"latency_us": summarize([t for run in _timings[v] for t in run])} for v in variants
        },
    }


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, measure, print JSON."""
    ap = argparse.ArgumentParser(prog="python -m bench.journal.dbos_peer")
    ap.add_argument("--db", required=True, help="sqlite:///path or postgresql://... URL")
    ap.add_argument("--schema", help="DBOS system schema (PostgreSQL)")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--variants", default="async,sync")
    ap.add_argument("--sqlite-pragmas", choices=("matched", "default"), default="matched")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    json.dump(run(args), sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
