"""elevenfactor's cost per journaled step, through the real API.

A workflow does ``steps`` times ``await ctx.step("work", fn, i)`` where ``fn`` returns a ~200-byte
payload; a real ``Worker`` (concurrency 1, so steps of different runs never overlap) executes
``runs`` such runs (plus one warm-up run) submitted ahead of time. Each ``await ctx.step`` is
timed inside the workflow. Run as ``python -m bench.journal.steps --url URL ...``; prints JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from bench.journal.workload import payload
from bench.stats import summarize
from elevenfactor._version import __version__
from elevenfactor.runtime import Programs, RunContext, Worker, WorkerOptions, submit_run
from elevenfactor.store import migrate, open_store

__all__ = ["PROGRAM", "programs"]

PROGRAM = "bench_steps"
programs = Programs()
_timings: list[list[float]] = []


@programs.workflow(PROGRAM)
async def bench_steps(ctx: RunContext, spec: dict[str, Any]) -> int:
    """``spec["steps"]`` trivial steps; records each step's wall time when ``spec["time"]``."""
    tag = ctx.run_id
    clock = time.perf_counter_ns
    mine: list[float] = []
    for i in range(int(spec["steps"])):
        t0 = clock()
        await ctx.step("work", payload, tag, i)
        mine.append((clock() - t0) / 1000)
    if spec.get("time"):
        _timings.append(mine)
    return int(spec["steps"])


async def measure(url: str, steps: int, runs: int) -> dict[str, Any]:
    """Submit ``runs`` + 1 runs, execute them with one worker, return per-step figures."""
    store = await open_store(url)
    try:
        await migrate(store)
        await submit_run(store, PROGRAM, {"steps": steps, "time": False})  # warm-up
        for _ in range(runs):
            await submit_run(store, PROGRAM, {"steps": steps, "time": True})
        worker = Worker(store, programs, WorkerOptions(concurrency=1, poll_interval=0.01))
        serving = asyncio.create_task(worker.serve())
        t0 = time.perf_counter()
        while worker.completed < runs + 1:
            if serving.done():
                serving.result()
                raise RuntimeError("the worker stopped early")
            await asyncio.sleep(0.01)
        elapsed = time.perf_counter() - t0
        worker.stop()
        await serving
        failed = await store.fetchone("SELECT COUNT(*) FROM runs WHERE status <> 'succeeded'")
    finally:
        await store.close()
    per_step = [t for run in _timings for t in run]
    return {
        "version": __version__,
        "latency_us": summarize(per_step),
        "runs": runs,
        "steps_per_run": steps,
        "runs_not_succeeded": int(failed[0]) if failed else None,
        "wall_us_per_step_incl_run_overhead": elapsed / ((runs + 1) * steps) * 1e6,
    }


def main(argv: list[str] | None = None) -> int:
    """Measure and print the JSON result."""
    ap = argparse.ArgumentParser(prog="python -m bench.journal.steps")
    ap.add_argument("--url", required=True)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--runs", type=int, default=30)
    args = ap.parse_args(argv)
    json.dump(asyncio.run(measure(args.url, args.steps, args.runs)), sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
