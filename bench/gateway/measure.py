"""The four measurements, each run against one target at a time (the caller interleaves)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.gateway.targets import MODEL, REPO, Target
from bench.gateway.wrk import run_wrk

__all__ = [
    "BODY",
    "STREAM_BODY",
    "Plan",
    "latency",
    "memory",
    "rss_sample",
    "streams",
    "throughput",
]

BODY = json.dumps(
    {"model": MODEL, "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 16},
    separators=(",", ":"),
)
STREAM_BODY = json.dumps(
    {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Say hello."}],
        "max_tokens": 16,
        "stream": True,
    },
    separators=(",", ":"),
)


@dataclass(frozen=True, slots=True)
class Plan:
    """How long and how hard each measurement runs."""

    rounds: int = 3
    latency_n: int = 2000
    latency_warmup: int = 200
    wrk_seconds: int = 10
    wrk_connections: int = 16
    streams: int = 256
    stream_seconds: float = 6.0
    stream_ramp: float = 0.25
    stream_settle: float = 0.5
    chunks: int = 20
    chunk_delay_ms: float = 10.0
    memory_requests: int = 100_000
    memory_samples: int = 10
    memory_time_cap: float = 1500.0

    @classmethod
    def quick(cls) -> Plan:
        """A smoke run: one short round of everything."""
        return cls(
            rounds=1,
            latency_n=300,
            latency_warmup=50,
            wrk_seconds=2,
            stream_seconds=2.0,
            memory_requests=3_000,
            memory_samples=2,
            memory_time_cap=6.0,
        )

    def as_dict(self) -> dict[str, Any]:
        """For the results file."""
        return asdict(self)


def _client(args: list[str], timeout: float) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "bench.gateway.client", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"client failed (exit {done.returncode}): {done.stderr.strip()[-800:]}")
    out: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return out


def _header_args(target: Target) -> list[str]:
    out: list[str] = []
    for name, value in target.headers.items():
        out += ["--header", f"{name}: {value}"]
    return out


def _with_cpu(target: Target, run: Callable[[], dict[str, Any]], count_key: str) -> dict[str, Any]:
    """Run a load and add the server's CPU time over it (process tree, /proc), per request.

    The window includes the client's start-up and warm-up, when the server is idle or serving
    the warm-up requests, which are counted: ``count`` is every request the client sent.
    """
    cpu0 = target.cpu()
    out = run()
    cpu = target.cpu() - cpu0
    n = out.get(count_key) or 0
    out["server_cpu_s"] = round(cpu, 3)
    out["server_cpu_us_per_request"] = round(1e6 * cpu / n, 1) if n else None
    return out


def latency(target: Target, plan: Plan) -> dict[str, Any]:
    """Sequential requests on one keep-alive connection, from a client process."""
    return _with_cpu(target, lambda: _latency(target, plan), "requests_sent")


def _latency(target: Target, plan: Plan) -> dict[str, Any]:
    return _client(
        [
            "latency",
            "--url",
            target.url,
            "--body",
            BODY,
            *_header_args(target),
            "--n",
            str(plan.latency_n),
            "--warmup",
            str(plan.latency_warmup),
        ],
        timeout=600 + plan.latency_n * 0.5,
    )


def throughput(target: Target, plan: Plan, workdir: Path) -> dict[str, Any]:
    """``wrk`` at ``plan.wrk_connections`` in flight for ``plan.wrk_seconds``, with the
    server's CPU time per request."""
    return _with_cpu(
        target,
        lambda: run_wrk(
            target.url,
            BODY,
            target.headers,
            connections=plan.wrk_connections,
            seconds=plan.wrk_seconds,
            script_dir=workdir,
        ),
        "requests",
    )


def streams(target: Target, plan: Plan) -> dict[str, Any]:
    """``plan.streams`` concurrent streamed completions; time to first token."""
    return _client(
        [
            "streams",
            "--url",
            target.url,
            "--body",
            STREAM_BODY,
            *_header_args(target),
            "--concurrency",
            str(plan.streams),
            "--duration",
            str(plan.stream_seconds),
            "--ramp",
            str(plan.stream_ramp),
            "--settle",
            str(plan.stream_settle),
        ],
        timeout=600 + plan.stream_seconds,
    )


def rss_sample(target: Target, requests: int, t0: float) -> dict[str, Any]:
    """VmRSS of the target's processes now, in KiB, with the request count so far."""
    by_pid = target.rss()
    return {
        "requests": requests,
        "elapsed_s": round(time.monotonic() - t0, 2),
        "rss_kib": {str(pid): kib for pid, kib in by_pid.items()},
        "main_kib": by_pid.get(target.proc.pid),
        "total_kib": sum(by_pid.values()),
    }


def memory(
    target: Target,
    plan: Plan,
    workdir: Path,
    rps_hint: float,
    on_sample: Callable[[dict[str, Any]], None],
) -> dict[str, Any]:
    """RSS once warm, then after every ~1/``memory_samples`` of ``memory_requests`` (via wrk)."""
    t0 = time.monotonic()
    samples = [rss_sample(target, 0, t0)]
    on_sample(samples[0])
    total = errors = 0
    step = plan.memory_requests / plan.memory_samples
    capped = False
    while total < plan.memory_requests:
        left = plan.memory_time_cap - (time.monotonic() - t0)
        if left < 1:
            capped = True
            break
        want = min(step, plan.memory_requests - total)
        secs = max(1, min(60, math.ceil(want / max(rps_hint, 1.0)), int(left)))
        res = run_wrk(
            target.url,
            BODY,
            target.headers,
            connections=plan.wrk_connections,
            seconds=secs,
            script_dir=workdir,
        )
        total += res["requests"]
        errors += res["errors"]
        if res["rps"] > 0:
            rps_hint = res["rps"]
        sample = rss_sample(target, total, t0)
        samples.append(sample)
        on_sample(sample)
        if not target.alive():
            break
    return {
        "samples": samples,
        "requests": total,
        "errors": errors,
        "time_capped": capped,
        "seconds": round(time.monotonic() - t0, 1),
    }
