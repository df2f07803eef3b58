"""``python -m bench.observe``: what tracing + metrics + logs add to a gateway call, side by
side with all of them off in the same run (the floor) and LiteLLM without and with its
OpenTelemetry callback (the peer). See ``bench/observe/README.md``."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from bench.gateway.report import write_json
from bench.gateway.targets import REPO
from bench.observe.report import print_report, verdicts
from bench.observe.run import MODES, ObserveRun

RESULTS_DIR = REPO / "bench" / "results"


@dataclass(frozen=True, slots=True)
class Plan:
    """How long each part runs."""

    rounds: int = 3
    n: int = 2000
    warmup: int = 200
    peer_n: int = 300
    wrk_seconds: float = 8.0

    @classmethod
    def quick(cls) -> Plan:
        """A smoke run: one short round."""
        return cls(rounds=1, n=200, warmup=30, peer_n=30, wrk_seconds=2.0)


def _args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.observe", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="one short round (smoke run)")
    ap.add_argument("--rounds", type=int, help="interleaved rounds (default 3)")
    ap.add_argument("--skip-peer", action="store_true", help="leave LiteLLM out")
    ap.add_argument("--keep-workdir", action="store_true", help="keep server logs and stores")
    return ap.parse_args(argv)


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)
    return done.stdout.strip()


def _meta(plan: Plan, stamp: str, quick: bool) -> dict[str, Any]:
    return {
        "stamp": stamp,
        "quick": quick,
        "command": " ".join(["python -m bench.observe", *sys.argv[1:]]),
        "git_commit": _git("rev-parse", "HEAD"),
        "src_uncommitted_changes": bool(_git("status", "--porcelain", "src")),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "method": (
            f"sequential POSTs on one keep-alive connection from a client process, {plan.n} per "
            f"target, mode and round after {plan.warmup} ({plan.peer_n} for LiteLLM); wrk with "
            f"16 connections for {plan.wrk_seconds:g} s per target and round; added = target - "
            f"floor per round; medians over {plan.rounds} round(s), target order rotated"
        ),
    }


def main(argv: list[str] | None = None) -> int:
    """Start everything, measure, print the tables, write the JSON; 0 unless the run broke."""
    args = _args(argv)
    plan = Plan.quick() if args.quick else Plan()
    if args.rounds:
        plan = Plan(**{**asdict(plan), "rounds": args.rounds})
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    console = Console() if Console().is_terminal else Console(width=160)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    workdir = Path(tempfile.mkdtemp(prefix="bench-observe-"))
    results: dict[str, Any] = {"meta": _meta(plan, stamp, args.quick), "plan": asdict(plan)}
    run = ObserveRun(workdir, peer=not args.skip_peer)
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    code = 0
    try:
        with Progress(*columns, console=console) as progress:
            task = progress.add_task("starting the receiver, the mock and the servers", total=None)
            run.start()
            per_round = len(run.targets) * (len(MODES) + 1)
            progress.update(
                task, description="measuring", total=plan.rounds * per_round, completed=0
            )
            for r in range(plan.rounds):
                run.round(
                    r,
                    plan.n,
                    plan.warmup,
                    plan.peer_n,
                    plan.wrk_seconds,
                    lambda: progress.advance(task),
                )
            results["checks"] = run.checks()
        results["targets"] = [
            {"name": t.name, "version": t.version, "port": t.port} for t in run.targets
        ]
        results["notes"] = run.notes
        results["raw"] = {"latency": run.latency, "load": run.load}
        results["summary"] = run.summary()
        results["verdicts"] = verdicts(results["summary"])
        console.print()
        print_report(console, results)
        path = write_json(results, RESULTS_DIR, stamp, name="observe")
        console.print(f"\nresults: {path.relative_to(REPO)}")
    except (RuntimeError, OSError) as exc:
        console.print(f"[red]benchmark failed:[/] {exc}")
        code = 1
    finally:
        run.stop()
        if args.keep_workdir:
            console.print(f"workdir kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
