"""Runs per second with one or more worker processes.

The harness migrates a fresh store, submits every run ahead of time, starts the worker processes
(``python -m bench.journal.throughput --url URL``: a real ``Worker`` with the defaults of
``elevenfactor worker`` — concurrency 8, 15 s leases, JSON logs at INFO to a file), waits until
all say they are ready, releases them together and polls the count of succeeded runs every
``poll`` seconds until all are done. The rate is taken between 10 % and 90 % completed (ramp-up
and tail excluded); the rate over the whole drain is reported too.
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

from bench.journal.steps import PROGRAM, programs

__all__ = ["ThroughputSpec", "measure_throughput"]

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


def measure_throughput(spec: ThroughputSpec, workdir: Path, label: str) -> dict[str, Any]:
    """Submit, drain with ``spec.workers`` processes, return rates."""
    asyncio.run(_prepare(spec.url, spec.runs, spec.steps))
    procs: list[subprocess.Popen[bytes]] = []
    logs: list[Path] = []
    counter = _Counter(spec.url)
    try:
        for w in range(spec.workers):
            log = workdir / f"{label}-worker{w}.log"
            logs.append(log)
            with log.open("wb") as out:
                procs.append(
                    subprocess.Popen(
                        [
                            sys.executable,
                            "-m",
                            "bench.journal.throughput",
                            "--url",
                            spec.url,
                            "--concurrency",
                            str(spec.concurrency),
                        ],
                        cwd=REPO,
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        stderr=out,
                    )
                )
        for p in procs:
            assert p.stdout is not None
            line = p.stdout.readline()
            if line.strip() != b"ready":
                raise RuntimeError(f"worker did not start: {line!r}")
        ticks0 = _cpu_ticks()
        t0 = time.monotonic()
        for p in procs:
            assert p.stdin is not None
            p.stdin.write(b"go\n")
            p.stdin.flush()
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
            if any(p.poll() is not None for p in procs):
                raise RuntimeError(f"a worker exited early; see {logs}")
    finally:
        counter.close()
        _stop_all(procs)
    per_worker = []
    for p in procs:
        assert p.stdout is not None
        with contextlib.suppress(ValueError):
            per_worker.append(json.loads(p.stdout.read() or b"{}"))
    t10 = _crossing(samples, 0.1 * spec.runs)
    t90 = _crossing(samples, 0.9 * spec.runs)
    steady = 0.8 * spec.runs / (t90 - t10) if t10 is not None and t90 and t90 > t10 else None
    total = samples[-1][0]
    hz = os.sysconf("SC_CLK_TCK")
    busy, all_, pg = (b - a for a, b in zip(ticks0, ticks1, strict=True))
    return {
        "workers": spec.workers,
        "runs": spec.runs,
        "steps_per_run": spec.steps,
        "concurrency_per_worker": spec.concurrency,
        "runs_per_s": steady,
        "runs_per_s_whole_drain": spec.runs / total if total > 0 else None,
        "steps_per_s": steady * spec.steps if steady else None,
        "drain_s": round(total, 3),
        "per_worker_completed": [w.get("completed") for w in per_worker],
        "cpu": {
            # 100 % = one core; the machine has os.cpu_count() of them
            "workers_pct": round(
                100 * sum(float(w.get("cpu_s") or 0) for w in per_worker) / total, 1
            )
            if total > 0
            else None,
            "postgres_pct": round(100 * pg / hz / total, 1) if total > 0 else None,
            "machine_busy_pct": round(100 * busy / all_, 1) if all_ else None,
        },
    }


async def _worker_main(url: str, concurrency: int) -> dict[str, Any]:
    from elevenfactor.observe import configure_logging
    from elevenfactor.runtime import Worker, WorkerOptions
    from elevenfactor.store import open_store

    configure_logging("info", stream=sys.stderr)  # to the log file, as `elevenfactor worker`
    store = await open_store(url)
    worker = Worker(store, programs, WorkerOptions(concurrency=concurrency))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stop)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    await loop.run_in_executor(None, sys.stdin.readline)
    cpu0 = time.process_time()
    t0 = time.monotonic()
    try:
        await worker.serve()
    finally:
        await store.close()
    return {
        "completed": worker.completed,
        "cpu_s": round(time.process_time() - cpu0, 3),
        "wall_s": round(time.monotonic() - t0, 3),
        "pid": os.getpid(),
    }


def main(argv: list[str] | None = None) -> int:
    """A worker process: ready, wait for ``go`` on stdin, serve until SIGTERM, print JSON."""
    ap = argparse.ArgumentParser(prog="python -m bench.journal.throughput")
    ap.add_argument("--url", required=True)
    ap.add_argument("--concurrency", type=int, default=8)
    args = ap.parse_args(argv)
    result = asyncio.run(_worker_main(args.url, args.concurrency))
    sys.stdout.write(json.dumps(result))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
