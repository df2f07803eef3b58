"""``python -m bench.limits``: what auth + budget + rate-limit checks add to a gateway request
(elevenfactor on SQLite, PostgreSQL and Redis; LiteLLM in memory and with Redis), and how far
each overshoots a budget under contention.

Latency, throughput and streams run with bench.gateway's machinery (mock upstream, relay floor,
interleaved rounds, medians); "added" compares each gateway with everything on to the same
gateway with nothing configured, within each round.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import functools
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
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

from bench.gateway import measure
from bench.gateway.__main__ import Bench
from bench.gateway.measure import Plan
from bench.gateway.peers import LiteLLMInstall, PeerUnavailable, ensure_litellm
from bench.gateway.report import write_json
from bench.gateway.targets import REPO, Target, start_relay, start_upstream
from bench.gateway.wrk import ensure_wrk
from bench.limits.overshoot import ef_burst, litellm_burst
from bench.limits.report import print_report
from bench.limits.stores import Services
from bench.limits.summary import summarize
from bench.limits.targets import ef_specs, litellm_specs

RESULTS_DIR = REPO / "bench" / "results"
_ALL = frozenset({"latency", "throughput", "streams"})
LITELLM_DB_NOTE = (
    "LiteLLM's virtual-key, user and team budgets (max_budget on a key) and per-key rpm/tpm"
    " limits: they live in its database (PostgreSQL through Prisma). prisma-client-py needs the"
    " Prisma query engine, downloaded at first use from binaries.prisma.sh, which this machine"
    " cannot reach (checked 2026-12-01: `prisma --version` fails with getaddrinfo ENOTFOUND"
    " binaries.prisma.sh). Measured instead: what LiteLLM enforces without a database, a"
    " deployment max_budget (router budget limiter) and deployment rpm/tpm limits"
    " (enforce_model_rate_limits), in memory and synced through Redis."
)


def _args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.limits", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="one short round (smoke run)")
    ap.add_argument("--skip-litellm", action="store_true", help="leave the LiteLLM peer out")
    ap.add_argument("--rounds", type=int, help="interleaved rounds per phase (default 3)")
    ap.add_argument("--burst-processes", type=int, default=3, help="servers in the overshoot run")
    ap.add_argument("--burst-per", type=int, default=100, help="concurrent requests per server")
    ap.add_argument("--skip-latency", action="store_true", help="only the overshoot run")
    ap.add_argument("--skip-overshoot", action="store_true", help="only the latency runs")
    ap.add_argument("--keep-workdir", action="store_true", help="keep logs and stores")
    return ap.parse_args(argv)


def _meta(plan: Plan, stamp: str, workdir: Path) -> dict[str, Any]:
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)
        return done.stdout.strip()

    return {
        "stamp": stamp,
        "command": " ".join(["python -m bench.limits", *sys.argv[1:]]),
        "git_commit": git("rev-parse", "HEAD"),
        "src_uncommitted_changes": bool(git("status", "--porcelain", "src")),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "workdir": str(workdir),
        "method": (
            "bench.gateway's phases against one mock upstream: sequential POSTs on one"
            f" keep-alive connection ({plan.latency_n} per round after {plan.latency_warmup}"
            f" warm-up), wrk -c{plan.wrk_connections} -d{plan.wrk_seconds}s with server CPU per"
            f" request, {plan.streams} concurrent streams (some targets); rounds interleaved;"
            " added = everything on minus nothing configured, per round, then the median"
        ),
    }


class Run:
    """The whole benchmark: the latency runs, then the overshoot runs."""

    def __init__(self, args: argparse.Namespace, plan: Plan, workdir: Path, progress: Progress):
        self.args, self.plan, self.workdir, self.progress = args, plan, workdir, progress
        self.bench = Bench(plan, workdir, progress)
        self.services = Services()
        self.missing = {
            "postgres": self.services.check_postgres(),
            "redis": self.services.check_redis(),
            "litellm": "skipped (--skip-litellm)" if args.skip_litellm else None,
        }
        self.results = self.bench.results
        self.results |= {"overshoot": {}, "not_measured": [LITELLM_DB_NOTE]}
        self.upstream: Target | None = None

    @functools.cached_property
    def litellm(self) -> LiteLLMInstall:
        """The LiteLLM proxy, installed into bench/.peers-venv on first use."""
        return ensure_litellm()

    def _why_not(self, needs: frozenset[str]) -> str | None:
        return next((self.missing[n] for n in sorted(needs) if self.missing.get(n)), None)

    def start(self) -> None:
        """The mock, the floor and every target whose services are there."""
        self.upstream = upstream = start_upstream(
            self.workdir, self.plan.chunks, self.plan.chunk_delay_ms
        )
        upstream.phases = _ALL
        up = upstream.port
        if self.args.skip_latency:
            return
        specs = ef_specs(self.workdir, up, self.services)
        if not self.args.skip_litellm:
            specs += litellm_specs(self.workdir, up, self.services, lambda: self.litellm)
        task = self.progress.add_task("starting targets", total=2 + len(specs))
        self.bench.add("direct", lambda: upstream)
        self.progress.update(task, advance=1, description="starting the relay (the floor)")
        self.bench.add("relay", lambda: _as(start_relay(self.workdir, up), _ALL))
        self.progress.advance(task)
        for spec in specs:
            self.progress.update(task, description=f"starting {spec.name}")
            why = self._why_not(spec.needs)
            if why:
                self.results["targets"][spec.name] = {
                    "status": "skipped" if "skipped" in why else "unavailable",
                    "reason": why,
                    "version": "",
                }
            else:
                self.bench.add(spec.name, spec.start)
            self.progress.advance(task)
        self.progress.update(task, description="targets started")

    def loads(self) -> None:
        """Interleaved rounds: one request at a time, wrk, 256 streams."""
        plan, b = self.plan, self.bench
        steps = sum(plan.rounds * sum(t.takes_part(k) for t in b.targets) for k in _ALL)
        overall = self.progress.add_task("[bold]latency runs", total=steps)
        b.phase("latency", "1 request at a time", lambda t: measure.latency(t, plan), overall)
        b.phase(
            "throughput",
            f"wrk, {plan.wrk_connections} in flight",
            lambda t: measure.throughput(t, plan, self.workdir),
            overall,
        )
        b.phase(
            "streams",
            f"{plan.streams} concurrent streams",
            lambda t: measure.streams(t, plan),
            overall,
        )
        for t in b.targets:  # free the cores for the overshoot runs; the mock stays
            if t is not self.upstream:
                t.stop()

    def overshoot(self) -> None:
        """The overshoot scenarios whose services are there."""
        assert self.upstream is not None
        a, up, wd, sv = self.args, self.upstream.port, self.workdir, self.services
        n, per = a.burst_processes, a.burst_per
        scenarios: list[tuple[str, frozenset[str], Callable[[], dict[str, Any]]]] = [
            (
                "ef-postgres",
                frozenset({"postgres"}),
                lambda: ef_burst(wd, up, sv, "postgres", n, per),
            ),
            (
                "ef-redis",
                frozenset({"postgres", "redis"}),
                lambda: ef_burst(wd, up, sv, "redis", n, per),
            ),
            ("ef-sqlite-1p", frozenset(), lambda: ef_burst(wd, up, sv, "sqlite", 1, n * per)),
            (
                "litellm-redis",
                frozenset({"litellm", "redis"}),
                lambda: litellm_burst(wd, up, sv, self.litellm, n, per, redis=True),
            ),
            (
                "litellm-1p",
                frozenset({"litellm"}),
                lambda: litellm_burst(wd, up, sv, self.litellm, 1, n * per, redis=False),
            ),
        ]
        task = self.progress.add_task("overshoot", total=len(scenarios))
        for key, needs, fn in scenarios:
            self.progress.update(task, description=f"overshoot: {key}")
            why = self._why_not(needs)
            if why:
                self.results["overshoot"][key] = {"status": "skipped", "reason": why}
            else:
                try:
                    self.results["overshoot"][key] = fn()
                except (PeerUnavailable, RuntimeError, OSError, ValueError) as exc:
                    self.results["overshoot"][key] = {"status": "failed", "reason": str(exc)}
                    self.progress.console.print(f"[red]overshoot {key}:[/] {exc}")
            self.progress.advance(task)
        self.progress.update(task, description="overshoot: done")

    def stop(self) -> None:
        """Stop every server; drop the schemas and Redis keys of this run."""
        self.bench.stop()
        if self.upstream is not None:  # not in bench.targets with --skip-latency
            self.upstream.stop()
        self.services.cleanup()


def _as(target: Target, phases: frozenset[str]) -> Target:
    target.phases = phases
    return target


def main(argv: list[str] | None = None) -> int:
    """Run everything, print the tables, write the JSON; 0 unless the run itself broke."""
    args = _args(argv)
    plan = Plan.quick() if args.quick else Plan()
    if args.rounds:
        plan = dataclasses.replace(plan, rounds=args.rounds)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    console = Console()
    if not console.is_terminal:
        console = Console(width=180)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    workdir = Path(tempfile.mkdtemp(prefix="bench-limits-"))
    ensure_wrk()
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        run = Run(args, plan, workdir, progress)
        run.results["meta"] = _meta(plan, stamp, workdir)
        try:
            run.start()
            if not args.skip_latency:
                run.loads()
            if not args.skip_overshoot:
                run.overshoot()
        finally:
            run.stop()
    results = run.results
    summarize(results)
    console.print()
    print_report(console, results)
    path = write_json(results, RESULTS_DIR, stamp, name="limits")
    console.print(f"\nresults: {path.relative_to(REPO)}")
    if args.keep_workdir:
        console.print(f"workdir kept: {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
