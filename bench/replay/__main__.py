"""``python -m bench.replay``: how fast a deterministic replay re-executes recorded runs (steps/s,
against reading their journals alone), and what a 100-run what-if replay takes against running
the same 100 runs live — in the same run, on the same store, in interleaved rounds (medians).

See ``bench/replay/README.md`` for the method.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import platform
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from bench.replay.workload import question, runtime
from elevenfactor.governance import SYSTEM
from elevenfactor.runtime import Worker, WorkerOptions, submit_run
from elevenfactor.runtime._replay import load_replayable
from elevenfactor.runtime._replay_batch import count_finished, replay_many, what_if_many
from elevenfactor.runtime._replay_whatif import WhatIf
from elevenfactor.store import Store, migrate, open_store

REPO = Path(__file__).resolve().parents[2]
console = Console(stderr=True)


async def _record(store: Store, n: int, delay: float, concurrency: int) -> tuple[list[str], float]:
    """``n`` live runs of the teller, executed ``concurrency`` at a time: their ids and the
    wall time from submission to the last one finished."""
    rt = runtime(store, delay)
    start = time.perf_counter()
    ids = [await submit_run(store, "teller", question(i)) for i in range(n)]
    worker = Worker(store, rt.programs, WorkerOptions(concurrency=concurrency))
    task = asyncio.create_task(worker.serve())  # as what_if_many executes its runs
    done = 0
    while done < len(ids):
        await asyncio.sleep(0.05)  # polled as what_if_many polls its runs
        done = await count_finished(store, ids)
    wall = time.perf_counter() - start
    await worker.shutdown(5.0)
    await task
    await rt.recorder.aclose()
    return ids, wall


async def _floor(store: Store, ids: list[str]) -> tuple[float, int]:
    """Reading every run's journal, payloads and call hashes (what a replay reads): seconds,
    steps."""
    start = time.perf_counter()
    steps = 0
    for rid in ids:
        steps += len((await load_replayable(store, rid)).by_step)
    return time.perf_counter() - start, steps


async def _replay(store: Store, ids: list[str], delay: float) -> tuple[float, int]:
    rt = runtime(store, delay)
    start = time.perf_counter()
    out = await replay_many(store, rt.programs, SYSTEM, ids)
    seconds = time.perf_counter() - start
    await rt.recorder.aclose()
    bad = [r.run_id for r in out.deterministic if not r.identical] + out.skipped
    if bad:
        raise SystemExit(f"deterministic replay diverged: {bad[:3]}")
    return seconds, sum(r.steps for r in out.deterministic)


async def _what_if(store: Store, ids: list[str], delay: float, concurrency: int) -> float:
    rt = runtime(store, delay)
    start = time.perf_counter()
    out = await what_if_many(
        store, rt.programs, SYSTEM, ids, WhatIf(model="m2"), concurrency=concurrency
    )
    seconds = time.perf_counter() - start
    await rt.recorder.aclose()
    if out.skipped or any(r.replay_status != "succeeded" for r in out.what_if):
        raise SystemExit("a what-if run failed")
    return seconds


async def main(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="bench-replay-"))
    url = args.db or f"sqlite:///{work}/replay.db"
    store = await open_store(url)
    await migrate(store)
    ids, _ = await _record(store, args.runs, args.delay, args.concurrency)
    sample = ids[: args.what_if]
    measures: dict[str, Callable[[], Awaitable[Any]]] = {
        "floor": lambda: _floor(store, ids),
        "replay": lambda: _replay(store, ids, args.delay),
        "what_if": lambda: _what_if(store, sample, args.delay, args.concurrency),
        "live": lambda: _record(store, len(sample), args.delay, args.concurrency),
    }
    got: dict[str, list[Any]] = {k: [] for k in measures}
    order = list(measures)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console) as bar:  # fmt: skip
        task = bar.add_task("rounds", total=args.rounds * len(order))
        for r in range(args.rounds):
            for name in order[r % len(order) :] + order[: r % len(order)]:  # rotate the order
                bar.update(task, description=f"round {r + 1}: {name}")
                got[name].append(await measures[name]())
                bar.advance(task)
    await store.close()
    floor_s = statistics.median(s for s, _ in got["floor"])
    replay_s = statistics.median(s for s, _ in got["replay"])
    steps = got["replay"][0][1]
    return {
        "bench": "replay",
        "when": dt.datetime.now(dt.UTC).isoformat(),
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
        "store": url.split(":", 1)[0],
        "runs": len(ids),
        "steps": steps,
        "model_delay_s": args.delay,
        "rounds": args.rounds,
        "concurrency": args.concurrency,
        "deterministic": {
            "replay_s": replay_s,
            "replay_steps_per_s": steps / replay_s,
            "floor_read_s": floor_s,
            "floor_steps_per_s": steps / floor_s,
            "replay_over_floor": replay_s / floor_s,
        },
        "what_if": {
            "runs": len(sample),
            "what_if_wall_s": statistics.median(got["what_if"]),
            "live_wall_s": statistics.median(w for _, w in got["live"]),
            "all_rounds": {
                "what_if": got["what_if"],
                "live": [w for _, w in got["live"]],
                "replay": [s for s, _ in got["replay"]],
                "floor": [s for s, _ in got["floor"]],
            },
        },
    }


def report(results: dict[str, Any]) -> None:
    """Print the table."""
    d, w = results["deterministic"], results["what_if"]
    table = Table(title=f"replay ({results['store']}, {results['runs']} runs, "
                  f"{results['steps']} steps; medians of {results['rounds']} rounds)")  # fmt: skip
    for col in ("measure", "seconds", "steps/s", "note"):
        table.add_column(col)
    table.add_row("read journals (floor)", f"{d['floor_read_s']:.3f}",
                  f"{d['floor_steps_per_s']:,.0f}", "load_replayable for every run")  # fmt: skip
    table.add_row("deterministic replay", f"{d['replay_s']:.3f}",
                  f"{d['replay_steps_per_s']:,.0f}",
                  f"{d['replay_over_floor']:.2f}x the floor")  # fmt: skip
    table.add_row(f"what-if, {w['runs']} runs", f"{w['what_if_wall_s']:.3f}", "",
                  "model m -> m2, tools pinned, incl. its deterministic pass")  # fmt: skip
    table.add_row(f"live, {w['runs']} runs", f"{w['live_wall_s']:.3f}", "",
                  f"model delay {results['model_delay_s']}s per call")  # fmt: skip
    Console().print(table)


def cli() -> None:
    """Parse options, run, print, write ``bench/results/replay-<stamp>.json``."""
    p = argparse.ArgumentParser(prog="python -m bench.replay", description=__doc__)
    p.add_argument("--quick", action="store_true", help="10 runs, 2 rounds: a smoke run")
    p.add_argument("--runs", type=int, default=200, help="runs recorded (default 200)")
    p.add_argument("--what-if", type=int, default=100, help="runs replayed what-if (100)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--delay", type=float, default=0.05, help="model answer delay, seconds")
    p.add_argument("--concurrency", type=int, default=8, help="runs executed at once")
    p.add_argument("--db", default=None, help="a database URL (default: a fresh SQLite file)")
    args = p.parse_args()
    if args.quick:
        args.runs, args.what_if, args.rounds = 10, 10, 2
    results = asyncio.run(main(args))
    report(results)
    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    path = out / f"replay-{stamp}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    console.print(f"wrote {path.relative_to(REPO)}")


if __name__ == "__main__":
    cli()
