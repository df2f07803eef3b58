"""``python -m bench.journal``: what one journaled step costs, against the bare commit on the same
store and against DBOS; runs/s with one, two and three worker processes, each confined to a
fixed CPU share; database round trips per run; latency from submission to first step.

Everything runs in interleaved rounds (the order of the measurements rotates every round) and
is reported as medians over rounds. Each measurement runs in its own process on a fresh store
(a new SQLite file, or a scratch schema in PostgreSQL dropped right after).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import json
import os
import platform
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from bench.journal.dbs import (
    PG_BASE,
    create_schema,
    drop_schema,
    pg_available,
    pg_url,
    remove_sqlite,
)
from bench.journal.peers import PEERS_VENV, PeerUnavailable, ensure_dbos
from bench.journal.report import print_report, summarize, write_json
from bench.journal.throughput import (
    ThroughputSpec,
    measure_latency,
    measure_round_trips,
    measure_throughput,
)
from bench.journal.workload import PAYLOAD_BYTES, STEP_ROW_BYTES

REPO = Path(__file__).resolve().parents[2]
RESULTS_DIR = REPO / "bench" / "results"


@dataclass(frozen=True)
class Plan:
    """How much to measure."""

    rounds: int = 3
    floor_n: int = 3000
    floor_warmup: int = 300
    steps: int = 100
    step_runs: int = 30
    dbos_runs: int = 15
    dbos_default_runs: int = 3
    tp_runs: int = 3000
    tp_steps: int = 5
    tp_workers: tuple[int, ...] = (1, 2, 3)
    cpu_quota: float | None = 0.25
    rt_runs: int = 300
    lat_runs: int = 200
    lat_interval: float = 0.02
    measure_timeout: float = 600.0

    @classmethod
    def quick(cls) -> Plan:
        """A smoke run (about a minute)."""
        return cls(
            rounds=1,
            floor_n=500,
            floor_warmup=50,
            step_runs=5,
            dbos_runs=3,
            dbos_default_runs=1,
            tp_runs=400,
            rt_runs=100,
            lat_runs=100,
        )

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {
            "payload_bytes": PAYLOAD_BYTES,
            "floor_bytes": PAYLOAD_BYTES + STEP_ROW_BYTES,
        }


@dataclass(frozen=True)
class Item:
    """One measurement, repeated every round."""

    key: str
    label: str
    run: Callable[[Path, str], dict[str, Any]]


def _args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.journal", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="one short round (smoke run, ~1 min)")
    ap.add_argument("--rounds", type=int, help="interleaved rounds (default 3)")
    ap.add_argument("--skip-dbos", action="store_true", help="leave the DBOS peer out")
    ap.add_argument("--skip-postgres", action="store_true", help="SQLite only")
    ap.add_argument("--skip-throughput", action="store_true", help="no runs/s phase")
    ap.add_argument(
        "--scale-out-only",
        action="store_true",
        help="only runs/s, round trips and latency (no step-cost or DBOS measurements)",
    )
    ap.add_argument(
        "--cpu-quota",
        type=float,
        help="CPU cores per worker process in the runs/s phase (default 0.25; 0: unconfined)",
    )
    ap.add_argument("--pg", default=PG_BASE, help=f"PostgreSQL database (default {PG_BASE})")
    ap.add_argument("--keep-workdir", action="store_true", help="keep logs and SQLite files")
    return ap.parse_args(argv)


def _run_json(cmd: list[str], timeout: float, log: Path, cwd: Path = REPO) -> dict[str, Any]:
    """Run a measuring process; its stdout is one JSON object, its stderr goes to ``log``."""
    with log.open("ab") as err:
        done = subprocess.run(
            cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=err, timeout=timeout, check=False
        )
    if done.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-8:])
        raise RuntimeError(f"exit {done.returncode}: {tail}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


class Bench:
    """Builds the measurements and runs them in rotating order, round after round."""

    def __init__(self, args: argparse.Namespace, plan: Plan, workdir: Path, stamp: str) -> None:
        self.args = args
        self.plan = plan
        self.workdir = workdir
        self.prefix = f"bench_journal_{stamp.replace('-', '_')}"
        self.schemas: set[str] = set()
        self.unavailable: dict[str, str] = {}
        self.dbos_python: Path | None = None
        self.dbos_version: str | None = None
        self.seq = 0
        self.others: list[str] = []

    # -- stores -------------------------------------------------------------------------------

    def _sqlite(self, name: str) -> Path:
        self.seq += 1
        path = self.workdir / f"{name.replace('/', '-')}-{self.seq}.db"
        remove_sqlite(path)
        return path

    @contextlib.contextmanager
    def _schema(self, name: str) -> Any:
        self.seq += 1
        schema = f"{self.prefix}_{name.replace('/', '_').replace('-', '_')}_{self.seq}"
        self.schemas.add(schema)
        create_schema(schema, self.args.pg)
        try:
            yield schema
        finally:
            drop_schema(schema, self.args.pg)
            self.schemas.discard(schema)

    def _log(self, key: str) -> Path:
        return self.workdir / f"{key.replace('/', '-')}.log"

    # -- measurements ---------------------------------------------------------------------------

    def _floor(self, store: str, kind: str) -> Callable[[Path, str], dict[str, Any]]:
        def run(_: Path, key: str) -> dict[str, Any]:
            base = [sys.executable, "-m", "bench.journal.floor", "--store", store, "--kind", kind]
            base += ["--n", str(self.plan.floor_n), "--warmup", str(self.plan.floor_warmup)]
            if store == "sqlite":
                path = self._sqlite(key)
                try:
                    return _run_json([*base, "--target", str(path)], 600, self._log(key))
                finally:
                    remove_sqlite(path)
            with self._schema(key) as schema:
                url = pg_url(schema, self.args.pg)
                return _run_json([*base, "--target", url], 600, self._log(key))

        return run

    def _ours(self, store: str) -> Callable[[Path, str], dict[str, Any]]:
        def run(_: Path, key: str) -> dict[str, Any]:
            base = [sys.executable, "-m", "bench.journal.steps"]
            base += ["--steps", str(self.plan.steps), "--runs", str(self.plan.step_runs)]
            if store == "sqlite":
                path = self._sqlite(key)
                try:
                    cmd = [*base, "--url", f"sqlite:///{path}"]
                    return _run_json(cmd, self.plan.measure_timeout, self._log(key))
                finally:
                    remove_sqlite(path)
            with self._schema(key) as schema:
                cmd = [*base, "--url", pg_url(schema, self.args.pg)]
                return _run_json(cmd, self.plan.measure_timeout, self._log(key))

        return run

    def _dbos(self, store: str, pragmas: str, runs: int) -> Callable[[Path, str], dict[str, Any]]:
        def run(_: Path, key: str) -> dict[str, Any]:
            assert self.dbos_python is not None
            base = [str(self.dbos_python), "-m", "bench.journal.dbos_peer"]
            base += ["--steps", str(self.plan.steps), "--runs", str(runs)]
            if store == "sqlite":
                path = self._sqlite(key)
                try:
                    cmd = [*base, "--db", f"sqlite:///{path}", "--sqlite-pragmas", pragmas]
                    return _run_json(cmd, self.plan.measure_timeout, self._log(key))
                finally:
                    remove_sqlite(path)
            self.seq += 1
            schema = f"{self.prefix}_dbos_{self.seq}"  # DBOS creates it; dropped after
            self.schemas.add(schema)
            try:
                cmd = [*base, "--db", self.args.pg, "--schema", schema]
                return _run_json(cmd, self.plan.measure_timeout, self._log(key))
            finally:
                drop_schema(schema, self.args.pg)
                self.schemas.discard(schema)

        return run

    def _throughput(self, store: str, workers: int) -> Callable[[Path, str], dict[str, Any]]:
        def run(workdir: Path, key: str) -> dict[str, Any]:
            def spec(url: str) -> ThroughputSpec:
                return ThroughputSpec(
                    url,
                    workers,
                    self.plan.tp_runs,
                    self.plan.tp_steps,
                    timeout=300.0,
                    cpu_quota=self.plan.cpu_quota,
                )

            label = key.replace("/", "-")
            if store == "sqlite":
                path = self._sqlite(key)
                try:
                    return measure_throughput(spec(f"sqlite:///{path}"), workdir, label)
                finally:
                    remove_sqlite(path)
            with self._schema(key) as schema:
                return measure_throughput(spec(pg_url(schema, self.args.pg)), workdir, label)

        return run

    def _on_store(
        self, store: str, measure: Callable[[str, Path, str], dict[str, Any]]
    ) -> Callable[[Path, str], dict[str, Any]]:
        """``measure(url, workdir, label)`` on a fresh store of kind ``store``."""

        def run(workdir: Path, key: str) -> dict[str, Any]:
            label = key.replace("/", "-")
            if store == "sqlite":
                path = self._sqlite(key)
                try:
                    return measure(f"sqlite:///{path}", workdir, label)
                finally:
                    remove_sqlite(path)
            with self._schema(key) as schema:
                return measure(pg_url(schema, self.args.pg), workdir, label)

        return run

    def _round_trips(self, store: str) -> Callable[[Path, str], dict[str, Any]]:
        plan = self.plan
        return self._on_store(
            store,
            lambda url, wd, label: measure_round_trips(url, wd, label, plan.rt_runs, plan.tp_steps),
        )

    def _latency(self, store: str) -> Callable[[Path, str], dict[str, Any]]:
        plan = self.plan
        return self._on_store(
            store,
            lambda url, wd, label: measure_latency(
                url, wd, label, plan.lat_runs, plan.lat_interval, plan.cpu_quota
            ),
        )

    def items(self) -> tuple[list[Item], list[Item]]:
        """(step-cost measurements, throughput measurements) for the stores available."""
        stores = ["sqlite"]
        if self.args.skip_postgres:
            self.unavailable["PostgreSQL"] = "skipped (--skip-postgres)"
        elif (why := pg_available(self.args.pg)) is not None:
            self.unavailable["PostgreSQL"] = why
        else:
            stores.append("postgresql")
        steps: list[Item] = []
        for s in [] if self.args.scale_out_only else stores:
            steps.append(Item(f"floor/{s}", f"floor {s}", self._floor(s, "floor")))
            steps.append(Item(f"sql/{s}", f"step SQL alone {s}", self._floor(s, "journal-sql")))
            steps.append(Item(f"ef/{s}", f"elevenfactor {s}", self._ours(s)))
            if self.dbos_python is not None:
                steps.append(
                    Item(f"dbos/{s}", f"DBOS {s}", self._dbos(s, "matched", self.plan.dbos_runs))
                )
                if s == "sqlite":
                    steps.append(
                        Item(
                            "dbos/sqlite-default",
                            "DBOS sqlite (its defaults)",
                            self._dbos(s, "default", self.plan.dbos_default_runs),
                        )
                    )
        tp: list[Item] = []
        if not self.args.skip_throughput:
            for s in reversed(stores):
                for w in self.plan.tp_workers:
                    tp.append(
                        Item(f"tp/{s}/{w}", f"runs/s {s}, {w} worker(s)", self._throughput(s, w))
                    )
                tp.append(Item(f"rt/{s}", f"round trips per run {s}", self._round_trips(s)))
                tp.append(Item(f"lat/{s}", f"submission to first step {s}", self._latency(s)))
        return steps, tp

    def cleanup(self) -> None:
        """Drop any scratch schema left behind (on an interrupt)."""
        for schema in list(self.schemas):
            drop_schema(schema, self.args.pg)


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)
    return done.stdout.strip()


def _other_benchmarks() -> list[str]:
    """Command lines of other benchmarks running now (they would disturb the figures); call it
    before this process starts children."""
    found = []
    me = (os.getpid(), os.getppid())  # this process and a wrapper such as `timeout`
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) in me:
            continue
        with contextlib.suppress(OSError):
            cmd = Path(entry.path, "cmdline").read_bytes().replace(b"\0", b" ").decode()
            if "bench.gateway" in cmd or "bench.journal" in cmd:
                found.append(cmd.strip()[:120])
    return found


def _pg_version(url: str) -> str | None:
    with contextlib.suppress(psycopg.Error), psycopg.connect(url, connect_timeout=3) as conn:
        row = conn.execute("SHOW server_version").fetchone()
        sync = conn.execute("SHOW synchronous_commit").fetchone()
        return f"{row[0] if row else '?'} (synchronous_commit={sync[0] if sync else '?'})"
    return None


def _meta(plan: Plan, stamp: str, workdir: Path, bench: Bench) -> dict[str, Any]:
    from elevenfactor._version import __version__

    return {
        "stamp": stamp,
        "command": " ".join(["python -m bench.journal", *sys.argv[1:]]),
        "git_commit": _git("rev-parse", "HEAD"),
        "src_uncommitted_changes": bool(_git("status", "--porcelain", "src")),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "sqlite": sqlite3.sqlite_version,
        "postgresql": _pg_version(bench.args.pg),
        "elevenfactor": __version__,
        "dbos": bench.dbos_version,
        "workdir": str(workdir),
        "other_benchmarks_running_at_start": bench.others,
        "method": (
            "floor: one INSERT + COMMIT per sample carrying the bytes a step writes "
            f"({PAYLOAD_BYTES + STEP_ROW_BYTES} B): SQLite BEGIN IMMEDIATE/INSERT/COMMIT inline "
            "with the store's pragmas (WAL, synchronous=NORMAL); PostgreSQL one autocommit INSERT "
            "on a psycopg AsyncConnection (one round trip). 'step SQL alone': the exact SQL of "
            "one journaled step, no runtime code. elevenfactor: a workflow of "
            f"{plan.steps} `await ctx.step(...)` of a function returning a {PAYLOAD_BYTES}-byte "
            "JSON object, executed by a real Worker (concurrency 1) over runs submitted ahead; "
            "each step timed inside the workflow. DBOS: the same workflow in its own process "
            "(async workflow + async step, and sync workflow + sync step, alternating), SQLite "
            "with WAL + synchronous=NORMAL like ours, plus DBOS's own SQLite defaults "
            "(rollback journal, synchronous=FULL). Runs/s: worker processes (Worker defaults, "
            "JSON logs to a file) drain pre-submitted runs; rate between 10 % and 90 % done. "
            "Each measurement in its own process on a fresh store; rounds interleaved "
            "(rotating order); medians over rounds. Scale-out: each worker process is confined "
            f"to {plan.cpu_quota or 'no'} CPU core(s) by a cgroup CPU quota (cpu.cfs_quota_us "
            "over a 100 ms period, or cpu.max on cgroup v2), applied once it is ready, so the "
            "workers, not the machine, are the bottleneck; each worker's CPU, all postgres "
            "processes' CPU and the machine's are recorded over the drain. Round trips: one "
            "unconfined worker drains runs with a libpq protocol trace (PQtrace) on every "
            "connection of its process; each Sync and each simple Query sent is one round trip "
            "(SQLite: statements counted with set_trace_callback). Latency: one idle worker "
            "(same quota) at its defaults; the harness submits runs one at a time, "
            f"{plan.lat_interval * 1000:.0f} ms apart, from its own process; first journal "
            "event created_at minus the run's created_at."
        ),
    }


def main(argv: list[str] | None = None) -> int:
    """Run everything, print the tables, write the JSON; 0 unless the run itself broke."""
    args = _args(argv)
    plan = Plan.quick() if args.quick else Plan()
    if args.rounds:
        plan = dataclasses.replace(plan, rounds=args.rounds)
    if args.cpu_quota is not None:
        plan = dataclasses.replace(plan, cpu_quota=args.cpu_quota or None)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    workdir = Path(tempfile.mkdtemp(prefix="bench-journal-"))
    others = _other_benchmarks()
    if others:
        console.print(
            f"[yellow]other benchmarks are running; figures will be disturbed:[/] {others}"
        )
    bench = Bench(args, plan, workdir, stamp)
    bench.others = others
    results: dict[str, Any] = {"plan": plan.as_dict(), "rounds": [], "failures": []}
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        try:
            if args.skip_dbos:
                bench.unavailable["DBOS"] = "skipped (--skip-dbos)"
            else:
                first = not (PEERS_VENV / "bin" / "python").exists()
                setup = progress.add_task(
                    f"installing DBOS into {PEERS_VENV.relative_to(REPO)} (first run only)"
                    if first
                    else "checking the DBOS peer",
                    total=1,
                )
                try:
                    bench.dbos_python, bench.dbos_version = ensure_dbos()
                except PeerUnavailable as exc:
                    bench.unavailable["DBOS"] = str(exc)
                progress.update(setup, advance=1, description=f"DBOS {bench.dbos_version or '-'}")
            step_items, tp_items = bench.items()
            results["meta"] = _meta(plan, stamp, workdir, bench)
            per_round = len(step_items) + len(tp_items)
            overall = progress.add_task("[bold]overall", total=plan.rounds * per_round)
            for rnd in range(plan.rounds):
                task = progress.add_task(f"round {rnd + 1}/{plan.rounds}", total=per_round)
                k = rnd % len(step_items) if step_items else 0
                order = step_items[k:] + step_items[:k]
                if tp_items:
                    j = rnd % len(tp_items)
                    order += tp_items[j:] + tp_items[:j]
                row: dict[str, Any] = {"order": [i.key for i in order]}
                for item in order:
                    progress.update(
                        task, description=f"round {rnd + 1}/{plan.rounds}: {item.label}"
                    )
                    t0 = time.monotonic()
                    try:
                        row[item.key] = item.run(workdir, item.key)
                        row[item.key]["measure_s"] = round(time.monotonic() - t0, 2)
                    except (RuntimeError, OSError, ValueError, subprocess.TimeoutExpired) as exc:
                        results["failures"].append(
                            {"round": rnd, "item": item.key, "error": str(exc)}
                        )
                        progress.console.print(f"[red]{item.key}:[/] {exc}")
                    progress.advance(task)
                    progress.advance(overall)
                progress.update(task, description=f"round {rnd + 1}/{plan.rounds}: done")
                results["rounds"].append(row)
        finally:
            bench.cleanup()
    results["unavailable"] = bench.unavailable
    results["summary"] = summarize(results)
    console.print()
    print_report(console, results)
    path = write_json(results, RESULTS_DIR, stamp)
    console.print(f"\nresults: {path.relative_to(REPO)}")
    if args.keep_workdir:
        console.print(f"workdir kept: {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
