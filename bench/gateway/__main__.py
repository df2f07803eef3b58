"""``python -m bench.gateway``: elevenfactor vs a bare relay (the floor) vs LiteLLM vs direct,
against one mock upstream.

Every phase runs in interleaved rounds (the order of targets rotates each round) and reports
medians over rounds; "added" figures subtract the direct figure of the same round, and the
targets compare elevenfactor with the floor measured in the same rounds.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from bench.gateway import measure
from bench.gateway.measure import Plan
from bench.gateway.peers import PEERS_VENV, PeerUnavailable, ensure_litellm
from bench.gateway.procs import tail
from bench.gateway.report import evaluate, print_report, summarize_results, write_json
from bench.gateway.targets import (
    REPO,
    Target,
    start_elevenfactor,
    start_litellm,
    start_relay,
    start_upstream,
)
from bench.gateway.wrk import ensure_wrk

RESULTS_DIR = REPO / "bench" / "results"


def _args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.gateway", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="one short round (smoke run, about 1 min)")
    ap.add_argument("--skip-litellm", action="store_true", help="leave the LiteLLM peer out")
    ap.add_argument("--rounds", type=int, help="interleaved rounds per phase (default 3)")
    ap.add_argument(
        "--ef-processes",
        type=int,
        default=2,
        help="also measure elevenfactor with this many server processes sharing the port"
        " (elevenfactor serve --workers N) in the throughput and streams phases (default 2;"
        " 1 leaves it out); the targets compare the 1-process gateway with the 1-process floor",
    )
    ap.add_argument("--memory-requests", type=int, help="requests for the RSS check (100,000)")
    ap.add_argument(
        "--memory-time-cap",
        type=float,
        help="seconds at most per target for the RSS check (default 1500)",
    )
    ap.add_argument(
        "--keep-workdir",
        action="store_true",
        help="keep the temporary directory with logs and the SQLite store",
    )
    return ap.parse_args(argv)


def _plan(args: argparse.Namespace) -> Plan:
    plan = Plan.quick() if args.quick else Plan()
    overrides = {
        k: v
        for k, v in {
            "rounds": args.rounds,
            "memory_requests": args.memory_requests,
            "memory_time_cap": args.memory_time_cap,
        }.items()
        if v is not None
    }
    return dataclasses.replace(plan, **overrides)


class Bench:
    """Runs the phases over the live targets and collects raw results."""

    def __init__(self, plan: Plan, workdir: Path, progress: Progress) -> None:
        self.plan = plan
        self.workdir = workdir
        self.progress = progress
        self.targets: list[Target] = []
        self.results: dict[str, Any] = {
            "plan": plan.as_dict(),
            "targets": {},
            "startup_rss": {},
            "memory": {},
            "rounds": {"latency": [], "throughput": [], "streams": []},
            "phases": {},
            "failures": [],
        }

    def add(self, name: str, start: Callable[[], Target]) -> None:
        """Start a target, or record why it is unavailable."""
        try:
            target = start()
        except (PeerUnavailable, RuntimeError, OSError) as exc:
            self.results["targets"][name] = {
                "status": "unavailable",
                "reason": str(exc),
                "version": "?",
            }
            self.progress.console.print(f"[yellow]{name} unavailable:[/] {exc}")
            return
        self.targets.append(target)
        self.results["targets"][name] = {
            "status": "ok",
            "version": target.version,
            "port": target.port,
            "startup_s": round(target.startup_s, 2),
            "notes": target.notes,
            "log": str(target.log) if target.log else None,
            "phases": sorted(target.phases) if target.phases is not None else "all",
        }
        self.results["startup_rss"][name] = measure.rss_sample(target, 0, time.monotonic())

    def _live(self) -> list[Target]:
        live = []
        for t in self.targets:
            if t.alive():
                live.append(t)
            elif self.results["targets"][t.name]["status"] == "ok":
                self.results["targets"][t.name] |= {
                    "status": "died",
                    "reason": f"exited with {t.proc.returncode}: {tail(t.log)}",
                }
        return live

    def phase(
        self, key: str, label: str, fn: Callable[[Target], dict[str, Any]], overall: TaskID
    ) -> None:
        """Interleaved rounds of one measurement over every live target."""
        targets = [t for t in self.targets if t.takes_part(key)]
        n = len(targets)
        task = self.progress.add_task(label, total=self.plan.rounds * n)
        for rnd in range(self.plan.rounds):
            order = targets[rnd % n :] + targets[: rnd % n]
            row: dict[str, Any] = {}
            for target in order:
                self.progress.update(task, description=f"{label}: round {rnd + 1}, {target.name}")
                if target in self._live():
                    try:
                        row[target.name] = fn(target)
                    except (RuntimeError, OSError, ValueError) as exc:
                        self.results["failures"].append(
                            {"phase": key, "round": rnd, "target": target.name, "error": str(exc)}
                        )
                        self.progress.console.print(f"[red]{key} {target.name}:[/] {exc}")
                self.progress.advance(task)
                self.progress.advance(overall)
            self.results["rounds"][key].append(row)
        self.progress.update(task, description=f"{label}: done")

    def memory(self, overall: TaskID) -> None:
        """The RSS check, for each gateway (not for the mock)."""
        for target in self._live():
            if not target.takes_part("memory"):
                continue
            task = self.progress.add_task(
                f"RSS over {self.plan.memory_requests:,} requests: {target.name}",
                total=self.plan.memory_requests,
            )
            rps = [
                r[target.name]["rps"]
                for r in self.results["rounds"]["throughput"]
                if target.name in r
            ] or [100.0]

            def seen(sample: dict[str, Any], task: TaskID = task) -> None:
                self.progress.update(task, completed=sample["requests"])

            self.results["memory"][target.name] = measure.memory(
                target, self.plan, self.workdir, max(rps), seen
            )
            self.progress.update(task, completed=self.plan.memory_requests)
            self.progress.advance(overall)

    def stop(self) -> None:
        """Stop every target."""
        for target in self.targets:
            target.stop()


_LOADS = frozenset({"latency", "throughput", "streams"})  # every phase but the RSS check


def _as(target: Target, phases: frozenset[str]) -> Target:
    target.phases = phases
    return target


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)
    return done.stdout.strip()


def _meta(plan: Plan, stamp: str, workdir: Path) -> dict[str, Any]:
    return {
        "stamp": stamp,
        "command": " ".join(["python -m bench.gateway", *sys.argv[1:]]),
        "git_commit": _git("rev-parse", "HEAD"),
        "src_uncommitted_changes": bool(_git("status", "--porcelain", "src")),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "workdir": str(workdir),
        "method": (
            "mock upstream in its own process; latency: sequential POSTs on one keep-alive "
            f"connection (http.client) from a client process, {plan.latency_n} per round after "
            f"{plan.latency_warmup} warm-up; throughput: wrk -t1 -c{plan.wrk_connections} "
            f"-d{plan.wrk_seconds}s, server CPU time (utime + stime of the process tree from "
            "/proc/<pid>/stat) over the wrk run divided by its requests; streams: "
            f"{plan.streams} concurrent streams kept going "
            f"back to back (aiohttp client process), upstream sends {plan.chunks} chunks "
            f"{plan.chunk_delay_ms:g} ms apart, TTFT of streams started after ramp-up; RSS: "
            "VmRSS from /proc after all other phases (warm), then while wrk sends requests"
        ),
    }


def main(argv: list[str] | None = None) -> int:
    """Run everything, print the tables, write the JSON; 0 unless the run itself broke."""
    args = _args(argv)
    plan = _plan(args)
    # Stop the servers (own process groups) on SIGTERM too, not only on Ctrl-C.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    console = Console()
    if not console.is_terminal:  # piped or redirected: do not wrap the tables at 80 columns
        console = Console(width=160)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    workdir = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    ensure_wrk()
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        bench = Bench(plan, workdir, progress)
        bench.results["meta"] = _meta(plan, stamp, workdir)
        try:
            setup = progress.add_task("starting targets", total=5)
            upstream = start_upstream(workdir, plan.chunks, plan.chunk_delay_ms)
            upstream.phases = _LOADS
            bench.add("direct", lambda: upstream)
            progress.update(setup, advance=1, description="starting the relay (the floor)")
            bench.add("relay", lambda: _as(start_relay(workdir, upstream.port), _LOADS))
            progress.update(setup, advance=1, description="starting elevenfactor")
            bench.add("elevenfactor", lambda: start_elevenfactor(workdir, upstream.port, 1))
            progress.advance(setup)
            if args.ef_processes > 1:
                multi = f"elevenfactor-{args.ef_processes}p"
                progress.update(setup, description=f"starting {multi}")
                bench.add(
                    multi,
                    lambda: start_elevenfactor(
                        workdir,
                        upstream.port,
                        args.ef_processes,
                        name=multi,
                        phases=frozenset({"throughput", "streams"}),
                    ),
                )
            progress.advance(setup)
            if args.skip_litellm:
                bench.results["targets"]["litellm"] = {
                    "status": "skipped",
                    "version": "",
                    "reason": "skipped (--skip-litellm)",
                }
            else:
                first = not (PEERS_VENV / "bin" / "litellm").exists()
                progress.update(
                    setup,
                    description="installing litellm[proxy] into bench/.peers-venv (first run only)"
                    if first
                    else "starting the LiteLLM proxy",
                )
                bench.add(
                    "litellm", lambda: start_litellm(workdir, upstream.port, ensure_litellm())
                )
            progress.update(setup, advance=1, description="targets started")
            steps = sum(
                plan.rounds * sum(t.takes_part(k) for t in bench.targets)
                for k in ("latency", "throughput", "streams")
            ) + sum(t.takes_part("memory") for t in bench.targets)
            overall = progress.add_task("[bold]overall", total=steps)
            bench.phase(
                "latency", "1 request at a time", lambda t: measure.latency(t, plan), overall
            )
            bench.phase(
                "throughput",
                f"wrk, {plan.wrk_connections} in flight",
                lambda t: measure.throughput(t, plan, workdir),
                overall,
            )
            bench.phase(
                "streams",
                f"{plan.streams} concurrent streams",
                lambda t: measure.streams(t, plan),
                overall,
            )
            bench.memory(overall)
        finally:
            bench.stop()
    results = bench.results
    results["summary"] = {
        name: summarize_results(results, name)
        for name, info in results["targets"].items()
        if info.get("status") in ("ok", "died")
    }
    results["goals"] = {
        name: evaluate(s, results["summary"].get("relay"))
        for name, s in results["summary"].items()
        if name not in ("direct", "relay")
    }
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
