"""Runs per second with one or more worker processes; round trips per run; latency from
submission to first step.

The harness migrates a fresh store, submits every run ahead of time, starts the worker processes
(``python -m bench.journal.throughput --url URL``: a real ``Worker`` with the defaults of
``elevenfactor worker`` — concurrency 8, 15 s leases, JSON logs at INFO to a file), waits until
all say they are ready, confines each to a fixed CPU share (a cgroup CPU quota, a quarter core
by default: the workers, not the machine, are then the bottleneck, so adding workers shows how
the design scales), releases them together and polls the count of succeeded runs every
``poll`` seconds until all are done. The rate is taken between 10 % and 90 % completed (ramp-up
and tail excluded); the rate over the whole drain is reported too.

``measure_round_trips``: one unconfined worker drains runs with a libpq protocol trace on every
PostgreSQL connection of its process (``PQtrace``); each ``Sync`` (the end of an
extended-protocol exchange) and each simple ``Query`` the client sends is one round trip. On
SQLite the statements the worker's connection runs are counted (``set_trace_callback``).

``measure_latency``: one worker (confined like the others) idles at its defaults while the
harness submits runs one at a time at a steady pace from its own process; latency is the first
journal event's ``created_at`` minus the run's ``created_at`` (one clock, one machine).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from bench.journal.cgroup import CpuBox
from bench.journal.steps import PROGRAM, programs

__all__ = ["ThroughputSpec", "measure_latency", "measure_round_trips", "measure_throughput"]

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True, slots=True)
class ThroughputSpec:
    """One throughput measurement."""

    url: str
    workers: int
    runs: int
    steps: int
    concurrency: int = 8
    poll: float = 0.05
    timeout: float = 300.0
    cpu_quota: float | None = 0.25
    """CPU cores each worker process may use (a cgroup quota); None: unconfined."""
    trace: bool = False
    """Count the worker's database round trips (slows it: for ``measure_round_trips``)."""


async def _prepare(url: str, runs: int, steps: int) -> None:
    from elevenfactor.runtime import submit_run
    from elevenfactor.store import migrate, open_store

    store = await open_store(url)
    try:
        await migrate(store)
        for _ in range(runs):
            await submit_run(store, PROGRAM, {"steps": steps, "time": False})
    finally:
        await store.close()


class _Counter:
    """Counts succeeded runs from the harness process with one light query."""

    def __init__(self, url: str) -> None:
        self.sqlite: sqlite3.Connection | None = None
        self.pg: psycopg.Connection[Any] | None = None
        if url.startswith("sqlite"):
            from elevenfactor.store._sqlite import sqlite_path

            self.sqlite = sqlite3.connect(sqlite_path(url), timeout=30.0)
        else:
            self.pg = psycopg.connect(url, autocommit=True)

    def succeeded(self) -> int:
        sql = "SELECT COUNT(*) FROM runs WHERE status = 'succeeded'"
        if self.sqlite is not None:
            row = self.sqlite.execute(sql).fetchone()
        else:
            assert self.pg is not None
            row = self.pg.execute(sql).fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        if self.sqlite is not None:
            self.sqlite.close()
        if self.pg is not None:
            self.pg.close()


def _crossing(samples: list[tuple[float, int]], level: float) -> float | None:
    """The time the count reached ``level``, interpolated between samples."""
    prev_t, prev_c = samples[0]
    for t, c in samples[1:]:
        if c >= level:
            if c == prev_c:
                return t
            return prev_t + (t - prev_t) * (level - prev_c) / (c - prev_c)
        prev_t, prev_c = t, c
    return None


def _cpu_ticks() -> tuple[int, int, int]:
    """(busy jiffies of the machine, all jiffies, jiffies of every ``postgres`` process)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    pg = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        if comm == "postgres":
            rest = stat.rsplit(")", 1)[1].split()
            pg += int(rest[11]) + int(rest[12])
    return sum(fields) - idle, sum(fields), pg


def _stop_all(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


class _Workers:
    """Worker processes, started and ready, each in its own CPU box."""

    def __init__(self, spec: ThroughputSpec, workdir: Path, label: str) -> None:
        self.spec = spec
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []
        self.boxes: list[CpuBox] = []
        self.trace_dir = workdir / f"{label}-trace"
        self.workdir = workdir
        self.label = label

    def start(self) -> None:
        """Start the processes, wait until each is ready, confine each to its CPU share."""
        spec, workdir, label = self.spec, self.workdir, self.label
        for w in range(spec.workers):
            log = workdir / f"{label}-worker{w}.log"
            self.logs.append(log)
            cmd = [
                sys.executable,
                "-m",
                "bench.journal.throughput",
                "--url",
                spec.url,
                "--concurrency",
                str(spec.concurrency),
            ]
            if spec.trace:
                self.trace_dir.mkdir(exist_ok=True)
                cmd += ["--trace", str(self.trace_dir / f"w{w}")]
            with log.open("wb") as out:
                self.procs.append(
                    subprocess.Popen(
                        cmd, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=out
                    )
                )
        for w, p in enumerate(self.procs):
            assert p.stdout is not None
            line = p.stdout.readline()
            if line.strip() != b"ready":
                raise RuntimeError(f"worker did not start: {line!r}; see {self.logs[w]}")
            # Confined once imported and connected: the quota shapes the work, not the start.
            box = CpuBox(f"ef-bench-{os.getpid()}-w{w}", spec.cpu_quota)
            box.add(p.pid)
            self.boxes.append(box)

    def go(self) -> None:
        for p in self.procs:
            assert p.stdin is not None
            p.stdin.write(b"go\n")
            p.stdin.flush()

    def check(self) -> None:
        if any(p.poll() is not None for p in self.procs):
            raise RuntimeError(f"a worker exited early; see {self.logs}")

    def stop(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Stop the workers; (their JSON reports, their CPU boxes' counters); boxes removed."""
        _stop_all(self.procs)
        boxes = [b.stats() for b in self.boxes]
        for b in self.boxes:
            b.remove()
        reports = []
        for p in self.procs:
            assert p.stdout is not None
            with contextlib.suppress(ValueError):
                reports.append(json.loads(p.stdout.read() or b"{}"))
        return reports, boxes


def measure_throughput(spec: ThroughputSpec, workdir: Path, label: str) -> dict[str, Any]:
    """Submit, drain with ``spec.workers`` processes, return rates."""
    asyncio.run(_prepare(spec.url, spec.runs, spec.steps))
    counter = _Counter(spec.url)
    workers: _Workers | None = None
    try:
        workers = _Workers(spec, workdir, label)
        workers.start()
        ticks0 = _cpu_ticks()
        t0 = time.monotonic()
        workers.go()
        samples: list[tuple[float, int]] = [(0.0, 0)]
        while True:
            time.sleep(spec.poll)
            done = counter.succeeded()
            now = time.monotonic() - t0
            samples.append((now, done))
            if done >= spec.runs:
                ticks1 = _cpu_ticks()
                break
            if now > spec.timeout:
                raise RuntimeError(f"{done}/{spec.runs} runs done after {spec.timeout:.0f} s")
            workers.check()
    finally:
        counter.close()
        per_worker, boxes = workers.stop() if workers is not None else ([], [])
    t10 = _crossing(samples, 0.1 * spec.runs)
    t90 = _crossing(samples, 0.9 * spec.runs)
    steady = 0.8 * spec.runs / (t90 - t10) if t10 is not None and t90 and t90 > t10 else None
    total = samples[-1][0]
    hz = os.sysconf("SC_CLK_TCK")
    busy, all_, pg = (b - a for a, b in zip(ticks0, ticks1, strict=True))
    out: dict[str, Any] = {
        "workers": spec.workers,
        "runs": spec.runs,
        "steps_per_run": spec.steps,
        "concurrency_per_worker": spec.concurrency,
        "cpu_quota_cores": spec.cpu_quota,
        "confined": bool(boxes) and all(b.get("cgroup") for b in boxes),
        "confinement_notes": sorted({b["note"] for b in boxes if b.get("note")}),
        "runs_per_s": steady,
        "runs_per_s_whole_drain": spec.runs / total if total > 0 else None,
        "steps_per_s": steady * spec.steps if steady else None,
        "drain_s": round(total, 3),
        "per_worker_completed": [w.get("completed") for w in per_worker],
        "per_worker_claims": [w.get("claims") for w in per_worker],
        "per_worker_cgroup": boxes,
        "cpu": {
            # 100 % = one core; the machine has os.cpu_count() of them
            "workers_pct": round(
                100 * sum(float(w.get("cpu_s") or 0) for w in per_worker) / total, 1
            )
            if total > 0
            else None,
            "per_worker_pct": [
                round(100 * float(w.get("cpu_s") or 0) / total, 1) if total > 0 else None
                for w in per_worker
            ],
            "postgres_pct": round(100 * pg / hz / total, 1) if total > 0 else None,
            "machine_busy_pct": round(100 * busy / all_, 1) if all_ else None,
        },
    }
    if spec.trace:
        rt = sum(int(w.get("round_trips") or 0) for w in per_worker)
        statements = sum(int(w.get("statements") or 0) for w in per_worker)
        out["round_trips"] = rt
        out["statements"] = statements
        out["round_trips_per_run"] = round(rt / spec.runs, 2) if rt else None
        out["statements_per_run"] = round(statements / spec.runs, 2) if statements else None
        out["messages"] = _sum_counts([w.get("messages") or {} for w in per_worker])
    return out


def measure_round_trips(
    url: str, workdir: Path, label: str, runs: int, steps: int
) -> dict[str, Any]:
    """Database round trips (PostgreSQL) or statements (SQLite) per run of ``steps`` steps,
    for one unconfined worker draining ``runs`` pre-submitted runs."""
    spec = ThroughputSpec(url, 1, runs, steps, cpu_quota=None, trace=True)
    result = measure_throughput(spec, workdir, label)
    keep = (
        "runs",
        "steps_per_run",
        "round_trips",
        "round_trips_per_run",
        "statements",
        "statements_per_run",
        "messages",
        "per_worker_claims",
    )
    return {k: result.get(k) for k in keep}


def _sum_counts(counts: list[dict[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for c in counts:
        for k, v in c.items():
            out[k] = out.get(k, 0) + int(v)
    return out


async def _submit_paced(url: str, n: int, interval: float) -> list[str]:
    from elevenfactor.runtime import submit_run
    from elevenfactor.store import open_store

    store = await open_store(url)
    ids = []
    try:
        for _ in range(n):
            ids.append(await submit_run(store, PROGRAM, {"steps": 1, "time": False}))
            await asyncio.sleep(interval)
    finally:
        await store.close()
    return ids


def _first_step_latencies(url: str) -> list[float]:
    sql = (
        "SELECT j.created_at - r.created_at FROM runs r JOIN journal j"
        " ON j.run_id = r.id AND j.n = 0 WHERE r.status = 'succeeded'"
    )
    counter = _Counter(url)
    try:
        if counter.sqlite is not None:
            rows = counter.sqlite.execute(sql).fetchall()
        else:
            assert counter.pg is not None
            rows = counter.pg.execute(sql).fetchall()
    finally:
        counter.close()
    return sorted(float(r[0]) for r in rows)


def measure_latency(
    url: str,
    workdir: Path,
    label: str,
    runs: int,
    interval: float = 0.02,
    cpu_quota: float | None = 0.25,
) -> dict[str, Any]:
    """Submission to first step (ms, p50/p99/max) with one idle worker at its defaults and runs
    submitted one every ``interval`` seconds from another process."""
    asyncio.run(_prepare(url, 0, 1))
    spec = ThroughputSpec(url, 1, runs, 1, cpu_quota=cpu_quota)
    counter = _Counter(url)
    workers: _Workers | None = None
    try:
        workers = _Workers(spec, workdir, label)
        workers.start()
        workers.go()
        time.sleep(0.5)  # idle: the worker has backed off to its slow poll (or LISTENs)
        asyncio.run(_submit_paced(url, runs, interval))
        deadline = time.monotonic() + spec.timeout
        while counter.succeeded() < runs:
            if time.monotonic() > deadline:
                raise RuntimeError("latency runs did not finish")
            workers.check()
            time.sleep(0.05)
    finally:
        counter.close()
        _, boxes = workers.stop() if workers is not None else ([], [])
    lat = _first_step_latencies(url)
    if not lat:
        raise RuntimeError("no latency samples")

    def pct(q: float) -> float:
        return round(1000 * lat[min(len(lat) - 1, int(q * len(lat)))], 2)

    return {
        "runs": len(lat),
        "interval_s": interval,
        "cpu_quota_cores": cpu_quota,
        "confined": bool(boxes) and all(b.get("cgroup") for b in boxes),
        "latency_ms": {"p50": pct(0.5), "p99": pct(0.99), "max": round(1000 * lat[-1], 2)},
    }


class _Tracer:
    """Counts what the worker process sends to the database.

    PostgreSQL: a libpq protocol trace (``PQtrace``) of every connection the process opens
    (its pool and its LISTEN connection), parsed at the end: each ``Sync`` and each simple
    ``Query`` the client sends is one round trip. SQLite: the statements of the store's
    connection (``set_trace_callback``)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.files: list[Any] = []
        self.sqlite_statements = 0
        self.started = False

    def install(self) -> None:
        from psycopg import AsyncConnection, pq

        original = AsyncConnection.connect.__func__  # type: ignore[attr-defined]
        tracer = self

        async def connect(cls: Any, *args: Any, **kwargs: Any) -> Any:
            conn = await original(cls, *args, **kwargs)
            conn.pgconn.trace(tracer.new_file())
            conn.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS)
            return conn

        AsyncConnection.connect = classmethod(connect)  # type: ignore[method-assign,assignment]

    def new_file(self) -> int:
        """A trace file for one more connection; its descriptor."""
        f = open(f"{self.prefix}-{len(self.files)}.trace", "w")  # noqa: SIM115
        self.files.append(f)
        return f.fileno()

    def on_sqlite(self, _sql: str) -> None:
        if self.started:
            self.sqlite_statements += 1

    def start(self) -> None:
        """Count from here (the ``go``): opening the store is not part of a run."""
        self.started = True
        for f in self.files:
            f.flush()
            f.write("-- go\n")
            f.flush()

    def counts(self) -> dict[str, Any]:
        messages: dict[str, int] = {}
        for f in self.files:
            f.flush()
            text = Path(f.name).read_text(errors="replace")
            text = text.split("-- go\n", 1)[1] if "-- go\n" in text else text
            for line in text.splitlines():
                parts = line.split("\t", 3)
                if len(parts) >= 3 and parts[0] == "F":
                    messages[parts[2]] = messages.get(parts[2], 0) + 1
        if self.sqlite_statements:
            return {"statements": self.sqlite_statements}
        return {
            "round_trips": messages.get("Sync", 0) + messages.get("Query", 0),
            "statements": messages.get("Execute", 0) + messages.get("Query", 0),
            "messages": messages,
        }


async def _worker_main(url: str, concurrency: int, trace: str | None) -> dict[str, Any]:
    from elevenfactor.observe import configure_logging
    from elevenfactor.runtime import Worker, WorkerOptions
    from elevenfactor.store import open_store

    configure_logging("info", stream=sys.stderr)  # to the log file, as `elevenfactor worker`
    tracer = _Tracer(trace) if trace else None
    if tracer is not None and not url.startswith("sqlite"):
        tracer.install()
    store = await open_store(url)
    if tracer is not None and url.startswith("sqlite"):
        store.conn.set_trace_callback(tracer.on_sqlite)  # type: ignore[attr-defined]
    worker = Worker(store, programs, WorkerOptions(concurrency=concurrency))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stop)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    await loop.run_in_executor(None, sys.stdin.readline)
    if tracer is not None:
        tracer.start()
    cpu0 = time.process_time()
    t0 = time.monotonic()
    try:
        await worker.serve()
    finally:
        await store.close()
    out: dict[str, Any] = {
        "completed": worker.completed,
        "claims": worker.claims,
        "cpu_s": round(time.process_time() - cpu0, 3),
        "wall_s": round(time.monotonic() - t0, 3),
        "pid": os.getpid(),
    }
    if tracer is not None:
        out |= tracer.counts()
    return out


def main(argv: list[str] | None = None) -> int:
    """A worker process: ready, wait for ``go`` on stdin, serve until SIGTERM, print JSON."""
    ap = argparse.ArgumentParser(prog="python -m bench.journal.throughput")
    ap.add_argument("--url", required=True)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--trace", help="count database round trips (trace files with this prefix)")
    args = ap.parse_args(argv)
    result = asyncio.run(_worker_main(args.url, args.concurrency, args.trace))
    sys.stdout.write(json.dumps(result))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
