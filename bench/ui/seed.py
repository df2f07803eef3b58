"""``python -m bench.ui.seed``: the dashboard benchmark's store — 2 organisations, 20 users with
keys, teams, budgets and kill switches (made with the project's functions), 100k runs over 30
days with ~1M hash-chained journal events, their approvals, ledger entries (sealed into
blocks), child runs and ~300k model calls, eval results over time and feedback.

The SQLite file is cached under ``bench/.cache/`` (gitignored) by the seeder's version and the
plan's size, with a JSON file beside it (the users' key secrets, the ids the bench measures);
it is rebuilt when missing, older than ``--max-age-days`` (the 7-day and 24-hour windows of the
pages must hold data) or with ``--rebuild``. ``--db postgresql://...`` also loads it into a
dedicated database on that server, checks it there and drops it.

Every seeded store is checked before use: a sample of runs of every status (and the one the
run page is measured on) must pass ``verify_one_run`` — chain, payloads, ledger anchors,
approvals — as the run page's audit section checks them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from bench.ui._generate import generate
from bench.ui._pg import load_from_sqlite, pg_database
from bench.ui._plan import SEED_VERSION, SeedPlan
from elevenfactor.runtime import verify_one_run
from elevenfactor.store import open_store

__all__ = ["CACHE", "Seeded", "ensure_seeded", "main", "verify_sample"]

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / "bench" / ".cache"
_STATUSES = ("succeeded", "failed", "cancelled", "waiting", "running", "queued")


@dataclass(frozen=True, slots=True)
class Seeded:
    """A seeded SQLite file and what the bench needs to know about it."""

    path: Path
    meta: dict[str, Any]

    @property
    def age_days(self) -> float:
        """Days since the store's timestamps were anchored."""
        return (time.time() - float(self.meta["anchor"])) / 86400.0


def _load(plan: SeedPlan, cache: Path, max_age_days: float) -> Seeded | None:
    db, meta_file = cache / f"{plan.key}.db", cache / f"{plan.key}.json"
    if not (db.exists() and meta_file.exists()):
        return None
    meta = json.loads(meta_file.read_text())
    if meta.get("version") != SEED_VERSION:
        return None
    seeded = Seeded(db, meta)
    return seeded if seeded.age_days <= max_age_days else None


def _remove(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def _scratch(cache: Path, plan: SeedPlan) -> Path:
    cache.mkdir(parents=True, exist_ok=True)
    tmp = cache / f"{plan.key}.{os.getpid()}.tmp.db"
    _remove(tmp)
    return tmp


async def ensure_seeded(
    plan: SeedPlan,
    *,
    cache: Path = CACHE,
    rebuild: bool = False,
    max_age_days: float = 3.0,
    progress: Callable[[str, float], None] = lambda _what, _done: None,
) -> Seeded:
    """The cached store of ``plan``, made (and checked) first if needed."""
    if not rebuild and (found := _load(plan, cache, max_age_days)) is not None:
        return found
    tmp = _scratch(cache, plan)
    try:
        meta = await generate(tmp, plan, progress)
        meta |= {"version": SEED_VERSION, "plan": asdict(plan), "key": plan.key}
        bad = await verify_sample(f"sqlite:///{tmp}", meta)
        if bad:
            raise RuntimeError(f"the seeded store does not verify: {bad[:3]}")
        meta["verified"] = "sample"
        db = cache / f"{plan.key}.db"
        tmp.replace(db)
        (cache / f"{plan.key}.json").write_text(json.dumps(meta, indent=2) + "\n")
    finally:
        _remove(tmp)
    return Seeded(db, meta)


def sample_runs(path: Path, meta: dict[str, Any], per_status: int = 6) -> list[str]:
    """Run ids to check: the long run, the pending approval's run, child runs, and
    ``per_status`` of each status (spread over the whole period)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        ids = [meta["long_run"]]
        if meta.get("pending_approval"):
            row = conn.execute(
                "SELECT run_id FROM approvals WHERE id = ?", (meta["pending_approval"],)
            ).fetchone()
            ids += [row[0]] if row else []
        for status in _STATUSES:
            rows = conn.execute(
                "SELECT id FROM runs WHERE status = ? ORDER BY id LIMIT ?", (status, per_status)
            ).fetchall()
            ids += [r[0] for r in rows]
        children = conn.execute("SELECT id FROM runs WHERE parent_id IS NOT NULL LIMIT 3")
        ids += [r[0] for r in children]
        ids += [
            r[0]
            for r in conn.execute(
                "SELECT DISTINCT run_id FROM approvals WHERE status != 'pending' LIMIT 6"
            )
        ]
    finally:
        conn.close()
    return list(dict.fromkeys(i for i in ids if i))


async def verify_sample(url: str, meta: dict[str, Any], path: Path | None = None) -> list[str]:
    """``verify_one_run`` on the sample of runs; the findings (empty: all verify)."""
    lite = path or Path(url.removeprefix("sqlite:///"))
    ids = sample_runs(lite, meta)
    store = await open_store(url)
    try:
        found = []
        for rid in ids:
            report = await verify_one_run(store, rid)
            found += [f"{rid}: {f.message}" for f in report.findings]
        return found
    finally:
        await store.close()


async def _main(args: argparse.Namespace) -> int:
    console = Console()
    plan = SeedPlan.scaled(args.scale) if args.scale != 1.0 else SeedPlan()

    def progress(what: str, done: float) -> None:
        console.print(f"  {what}: {done:4.0%}", highlight=False)

    t0 = time.perf_counter()
    seeded = await ensure_seeded(
        plan, rebuild=args.rebuild, max_age_days=args.max_age_days, progress=progress
    )
    console.print(f"SQLite store: {seeded.path} ({seeded.age_days:.2f} days old)")
    console.print(json.dumps(seeded.meta.get("counts", {}), indent=None))
    if args.db:
        with pg_database(args.db) as url:
            counts, _ = await load_from_sqlite(seeded.path, url, progress)
            bad = await verify_sample(url, seeded.meta, seeded.path)
            console.print(f"PostgreSQL: {sum(counts.values()):,} rows copied; sample verifies:"
                          f" {not bad}")  # fmt: skip
            if bad:
                console.print(bad[:5])
                return 1
    console.print(f"done in {time.perf_counter() - t0:.1f} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Seed (or find) the cached store; optionally load it into PostgreSQL and check it."""
    ap = argparse.ArgumentParser(prog="python -m bench.ui.seed", description=__doc__)
    ap.add_argument("--db", help="also load into a dedicated database on this PostgreSQL server")
    ap.add_argument("--scale", type=float, default=1.0, help="plan size (1.0: 100k runs)")
    ap.add_argument("--rebuild", action="store_true", help="seed again even if cached")
    ap.add_argument("--max-age-days", type=float, default=3.0)
    return asyncio.run(_main(ap.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
