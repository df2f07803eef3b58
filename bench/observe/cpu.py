"""``python -m bench.observe.cpu``: the CPU one gateway call costs per observability mode,
measured in-process, so a busy shared machine blurs the figures less than wall-clock latency.

For each mode of ``bench.observe`` (``ef-off``, ``ef-logs``, ``ef-metrics``, ``ef-trace``,
``ef-on``, ``ef-sampled``, ``ef-down``) a child process (``cpu_child``) builds the real
application and drives it through ASGI directly against the mock upstream, which runs in its
own process as does the OTLP receiver. By default it times ``time.process_time`` over N calls
(every thread: the span export thread too, flushed before the clock stops), modes interleaved
over rounds, each against ``ef-off``; ``--paired`` alternates blocks of calls with the mode off
and on inside one process (the figure to trust on a busy machine); ``--valgrind`` counts
instructions instead. See ``bench/observe/README.md``.

    .venv/bin/python -m bench.observe.cpu --paired --rounds 3 --stream-modes plain
    .venv/bin/python -m bench.observe.cpu --src before=/tmp/base/src --src after=src
    .venv/bin/python -m bench.observe.cpu --modes ef-on --rounds 1 --paired --profile

It prints its tables and writes nothing under ``bench/results``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.gateway.procs import free_port, stop, wait_http
from bench.gateway.targets import _EF_PROJECT, MODEL, REPO, clean_env, start_upstream
from bench.observe.run import EF_TARGETS, STREAM_CHUNKS, _env

__all__ = ["main"]


def _child_env(
    mode: str, home: Path, src: Path, upstream: int, receiver: int, closed: int
) -> dict[str, str]:
    home.mkdir(parents=True, exist_ok=True)
    (home / "data").mkdir(exist_ok=True)
    project = home / "elevenfactor.yaml"
    project.write_text(_EF_PROJECT.format(port=upstream, model=MODEL))
    mode_env = _env(mode, receiver, closed)
    env = {k: v for k, v in clean_env().items() if not k.startswith("OTEL_")}
    return (
        env
        | {
            "ELEVENFACTOR_DATA_DIR": str(home / "data"),
            "ELEVENFACTOR_CONFIG_FILE": str(project),
            "ELEVENFACTOR_LOG_LEVEL": "info",
            "ELEVENFACTOR_DEV": "true",
            # Work that runs by the clock, not per call, would blur the per-call figures.
            "ELEVENFACTOR_IN_PROCESS_WORKER": "false",
            "ELEVENFACTOR_LEDGER_SEAL_INTERVAL": "3600",
            "OTEL_BSP_SCHEDULE_DELAY": "3600000",  # spans go out in full batches (and at the end)
            "PYTHONHASHSEED": "0",  # the same dict and set layouts in every child
            "PYTHONPATH": f"{src}{os.pathsep}{REPO}",
            "BENCH_CLOSED": f":{closed}",
        }
        | mode_env
    )


def _run_child(
    mode: str, home: Path, env: dict[str, str], n: int, args: argparse.Namespace
) -> dict[str, Any]:
    cmd = [
        sys.executable, "-m", "bench.observe.cpu", "--child", mode,
        "--n", str(n), "--warmup", str(args.warmup), "--stream-modes", args.stream_modes,
        "--block", str(args.block),
    ]  # fmt: skip
    if args.paired:
        cmd.append("--paired")
    out_file = home / f"cachegrind-{n}.out"
    if args.valgrind:
        cmd = [
            "valgrind", "--tool=cachegrind", "--cache-sim=no", "--quiet",
            f"--cachegrind-out-file={out_file}", *cmd,
        ]  # fmt: skip
    if args.profile:
        cmd.append("--profile")
    done = subprocess.run(cmd, env=env, cwd=home, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{mode} failed: {done.stderr[-3000:]}")
    if args.profile:
        print(done.stderr)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    if args.valgrind:
        summary = next(
            line for line in out_file.read_text().splitlines() if line.startswith("summary:")
        )
        result["instructions"] = int(summary.split()[1])
    return result


def _measure(
    mode: str, home: Path, env: dict[str, str], args: argparse.Namespace
) -> dict[str, Any]:
    """One mode's figures: CPU time per call, or (``--valgrind``) instructions per call from
    two runs of different lengths (their difference cancels start-up and shutdown)."""
    if not args.valgrind:
        return _run_child(mode, home, env, args.n, args)
    short = _run_child(mode, home, env, args.n // 4, args)
    long = _run_child(mode, home, env, args.n, args)
    per_call = (long["instructions"] - short["instructions"]) / (args.n - args.n // 4)
    kinds = args.stream_modes.split(",")
    # With several kinds in one child the difference covers them all: report it per kind.
    return {k: {**long[k], "cpu_us": per_call / 1000 / len(kinds)} for k in kinds}


def _report(
    rows: list[dict[str, dict[str, Any]]], names: list[str], kinds: list[str], unit: str
) -> None:
    """Per target and kind: the median and the minimum over rounds (a busy machine only adds,
    so the minimum is the better estimate of the cost itself), each minus ``ef-off``'s of the
    same tree; the in-process p50 latency; spans exported per call."""
    print(f"\n{len(rows)} round(s); {unit} per call: median, min; + vs ef-off: median, min")
    head = f"{'target':<22}" + "".join(
        f"{k + ' median':>14}{'min':>9}{'+median':>9}{'+min':>9}{'p50 µs':>9}{'spans':>6}"
        for k in kinds
    )
    print(head)
    for name in names:
        line = f"{name:<22}"
        off_name = name.rsplit("/", 1)[0] + "/ef-off"
        for kind in kinds:
            cpu = [r[name][kind]["cpu_us"] for r in rows]
            plus_med = plus_min = float("nan")
            if off_name in rows[0]:
                off = [r[off_name][kind]["cpu_us"] for r in rows]
                plus_med = statistics.median(a - b for a, b in zip(cpu, off, strict=True))
                plus_min = min(cpu) - min(off)
            p50 = statistics.median(r[name][kind]["p50_us"] for r in rows)
            spans = statistics.median(r[name][kind]["spans_per_call"] for r in rows)
            line += (
                f"{statistics.median(cpu):>14.1f}{min(cpu):>9.1f}{plus_med:>+9.1f}"
                f"{plus_min:>+9.1f}{p50:>9.0f}{spans:>6.2f}"
            )
        print(line)


def _report_paired(
    rows: list[dict[str, dict[str, Any]]], names: list[str], kinds: list[str]
) -> None:
    """Per target and kind, medians over rounds: CPU µs per call of the main thread with the
    mode off and on, the export thread's, what the mode adds (on + export - off), the same
    without the garbage collector's time (a full collection of this heap takes tens of ms and
    lands in one block or the other), the collections per round off and on (by generation),
    the in-process p50 latency off and on."""
    print(f"\n{len(rows)} round(s), paired blocks; CPU µs per call (medians over rounds)")
    head = ("off", "on", "export", "added", "added-gc", "p50 off", "p50 on")
    for kind in kinds:
        print(f"{kind:<20}" + "".join(f"{c:>9}" for c in head) + f"{'gc off':>12}{'gc on':>12}")
        for name in names:
            cells = [r[name][kind] for r in rows]
            figures = [
                statistics.median(c[key] for c in cells)
                for key in (
                    "off_cpu_us", "on_cpu_us", "export_thread_cpu_us", "added_cpu_us",
                )
            ]  # fmt: skip
            figures.append(
                statistics.median(c["added_cpu_us"] - c["gc_on_us"] + c["gc_off_us"] for c in cells)
            )
            figures += [statistics.median(c[k] for c in cells) for k in ("off_p50_us", "on_p50_us")]
            gc = [
                "/".join(f"{sum(c[key][g] for c in cells) / len(cells):.0f}" for g in range(3))
                for key in ("gc_runs_off", "gc_runs_on")
            ]
            print(
                f"{name:<20}" + "".join(f"{v:>9.1f}" for v in figures) + f"{gc[0]:>12}{gc[1]:>12}"
            )


def main(argv: list[str] | None = None) -> int:
    """Parent: start the mock and the receiver, run the modes interleaved, print the tables."""
    ap = argparse.ArgumentParser(prog="python -m bench.observe.cpu", description=__doc__)
    ap.add_argument("--n", type=int, default=2000, help="measured calls per mode and kind")
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--modes", default=",".join(EF_TARGETS))
    ap.add_argument("--stream-modes", default="plain,stream")
    ap.add_argument(
        "--src",
        action="append",
        default=[],
        metavar="LABEL=PATH",
        help="a source tree to measure (repeatable, e.g. before=/tmp/base/src); default: this one",
    )
    ap.add_argument(
        "--valgrind",
        action="store_true",
        help="count instructions (cachegrind) instead of CPU time: slow, blind to a busy machine",
    )
    ap.add_argument(
        "--paired",
        action="store_true",
        help="in each mode's process, blocks of calls with it off and on in turn (ef-off not run)",
    )
    ap.add_argument("--block", type=int, default=50, help="calls per block with --paired")
    ap.add_argument("--profile", action="store_true", help="cProfile each child (printed)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        from bench.observe.cpu_child import child

        child(args)
        return 0
    trees = [(lbl, Path(p)) for lbl, _, p in (x.partition("=") for x in args.src)] or [
        ("now", REPO / "src")
    ]
    workdir = Path(tempfile.mkdtemp(prefix="bench-observe-cpu-"))
    receiver_port = free_port()
    receiver = subprocess.Popen(
        [sys.executable, "-m", "bench.observe.receiver", "--port", str(receiver_port)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    upstream = None
    try:
        wait_http(receiver_port, "/stats", receiver, 30)
        upstream = start_upstream(workdir, STREAM_CHUNKS, 0.0)
        closed = free_port()
        modes = args.modes.split(",")
        if args.paired:
            modes = [m for m in modes if m != "ef-off"]
        kinds = args.stream_modes.split(",")
        names = [f"{lbl}/{m}" for lbl, _ in trees for m in modes]
        rows: list[dict[str, dict[str, Any]]] = []
        for rnd in range(args.rounds):
            k = rnd % len(names)
            row = {}
            for name in names[k:] + names[:k]:
                lbl, _, mode = name.partition("/")
                src = dict(trees)[lbl]
                home = workdir / f"{lbl}-{mode}-{rnd}"
                env = _child_env(mode, home, src, upstream.port, receiver_port, closed)
                row[name] = _measure(mode, home, env, args)
                print(f"round {rnd} {name}: {json.dumps(row[name])}", flush=True)
            rows.append(row)
        if args.paired:
            _report_paired(rows, names, kinds)
        else:
            _report(rows, names, kinds, "k instr" if args.valgrind else "CPU µs")
    finally:
        if upstream is not None:
            upstream.stop()
        stop(receiver)
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
