"""``python -m bench.guards``: the cost of guard policies per stage (in process) and per
gateway request, and the detection of their detectors, side by side with a floor (no policy)
and open-source peers (detect-secrets, scrubadub), in one run."""

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
from bench.guards import detection, peers, stages
from bench.guards.gateway import MODES, GatewayRun
from bench.guards.inputs import REPO
from bench.guards.report import print_report, summarize_cases

RESULTS_DIR = REPO / "bench" / "results"


@dataclass(frozen=True, slots=True)
class Plan:
    """How long each part runs."""

    rounds: int = 3
    stage_n: int = 2000
    stage_warmup: int = 200
    gateway_n: int = 2000
    gateway_warmup: int = 200
    peer_n: int = 300
    peer_warmup: int = 20

    @classmethod
    def quick(cls) -> Plan:
        """A smoke run: one short round of everything."""
        return cls(
            rounds=1,
            stage_n=200,
            stage_warmup=20,
            gateway_n=200,
            gateway_warmup=30,
            peer_n=20,
            peer_warmup=2,
        )


def _args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.guards", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="one short round (smoke run, ~2 min)")
    ap.add_argument("--rounds", type=int, help="interleaved rounds (default 3)")
    ap.add_argument("--skip-gateway", action="store_true", help="leave the gateway part out")
    ap.add_argument("--skip-peers", action="store_true", help="leave detect-secrets/scrubadub out")
    ap.add_argument("--keep-workdir", action="store_true", help="keep server logs and stores")
    return ap.parse_args(argv)


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)
    return done.stdout.strip()


def _meta(plan: Plan, stamp: str, quick: bool) -> dict[str, Any]:
    return {
        "stamp": stamp,
        "quick": quick,
        "command": " ".join(["python -m bench.guards", *sys.argv[1:]]),
        "git_commit": _git("rev-parse", "HEAD"),
        "src_uncommitted_changes": bool(_git("status", "--porcelain", "src")),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "method": (
            f"in process: {plan.stage_n} timed calls (after {plan.stage_warmup}) per case and "
            "round, cases rotated each round; gateway: sequential POSTs on one keep-alive "
            f"connection from a client process, {plan.gateway_n} per target, mode and round "
            f"after {plan.gateway_warmup}; added = ef-default - ef-none per round; medians "
            f"over {plan.rounds} round(s)"
        ),
    }


def main(argv: list[str] | None = None) -> int:
    """Run every part, print the tables, write the JSON; 0 unless the run itself broke."""
    args = _args(argv)
    plan = Plan.quick() if args.quick else Plan()
    if args.rounds:
        plan = Plan(**{**asdict(plan), "rounds": args.rounds})
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    console = Console() if Console().is_terminal else Console(width=160)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    workdir = Path(tempfile.mkdtemp(prefix="bench-guards-"))
    results: dict[str, Any] = {"meta": _meta(plan, stamp, args.quick), "plan": asdict(plan)}
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        cases = stages.cases()
        task = progress.add_task("per-stage cost (in process)", total=plan.rounds * len(cases))
        rounds = [
            stages.run_round(
                cases, r, plan.stage_n, plan.stage_warmup, lambda: progress.advance(task)
            )
            for r in range(plan.rounds)
        ]
        results["stages"] = {"rounds": rounds, "summary": summarize_cases(rounds)}
        results["gateway"] = _gateway(args, plan, workdir, progress)
        if args.skip_peers:
            results["peers"] = {"skipped": "--skip-peers"}
        else:
            task = progress.add_task("detectors and peers", total=5)
            results["peers"] = peers.compare(
                plan.peer_n, plan.peer_warmup, lambda: progress.advance(task)
            )
        task = progress.add_task("injection, held-out split", total=3)
        results["detection"] = detection.held_out(lambda: progress.advance(task))
    console.print()
    print_report(console, results)
    path = write_json(results, RESULTS_DIR, stamp, name="guards")
    console.print(f"\nresults: {path.relative_to(REPO)}")
    if args.keep_workdir:
        console.print(f"workdir kept: {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def _gateway(args: argparse.Namespace, plan: Plan, workdir: Path, progress: Progress) -> Any:
    if args.skip_gateway:
        return {"skipped": "--skip-gateway"}
    run = GatewayRun(workdir)
    try:
        task = progress.add_task("gateway: starting the mock and 2 servers", total=None)
        probe = run.start()
        total = plan.rounds * len(run.targets) * len(MODES)
        progress.update(task, description="gateway: 2 KB requests", total=total, completed=0)
        for r in range(plan.rounds):
            run.round(r, plan.gateway_n, plan.gateway_warmup, lambda: progress.advance(task))
        return {"probe": probe, "rounds": plan.rounds, "raw": run.rounds, "summary": run.summary()}
    except (RuntimeError, OSError) as exc:
        progress.console.print(f"[red]gateway part failed:[/] {exc}")
        return {"error": str(exc)}
    finally:
        run.stop()


if __name__ == "__main__":
    sys.exit(main())
