"""``python -m bench.embeddings``: local embedder throughput, short sentences and ~200-token
passages side by side, with the tokenizer alone as the floor, the machine's float32
matrix-product speed as the ceiling, and sentence-transformers on CPU torch as a peer when a
throwaway venv has it (``--peer-python``, default ``/tmp/st/bin/python``).

The local embedder is measured twice, each in a process of its own: with OpenBLAS's default
threads (each product spread over the cores) and with ``OPENBLAS_NUM_THREADS=1`` (one forward
pass per core). Medians of ``--rounds`` rounds; writes ``bench/results/embeddings-<stamp>.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.embeddings.corpus import passages, sentences
from elevenfactor.context._embed_local import minilm_dir

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "bench" / "results"
PEER_SCRIPT = Path(__file__).with_name("peer_st.py")
GOAL_PASSAGES_PER_S = 300.0
MODES = {"blas-threads": {}, "pass-per-core": {"OPENBLAS_NUM_THREADS": "1"}}
"""The local embedder's two ways to use the cores, as environment overrides."""

# all-MiniLM-L6-v2: 6 layers, hidden 384, feed-forward 1536.
_LAYERS, _HIDDEN, _FF = 6, 384, 1536


def flops_per_token(length: float) -> float:
    """Floating-point operations per token of a ``length``-token text (a multiply-add is 2):
    the projections and feed-forward, plus attention's two ``length``-long products."""
    dense = _HIDDEN * 3 * _HIDDEN + _HIDDEN * _HIDDEN + 2 * _HIDDEN * _FF
    return 2.0 * _LAYERS * (dense + 2 * length * _HIDDEN)


def _child(argv: list[str], job: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    base = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_NUM_THREADS",)}
    done = subprocess.run(
        argv,
        input=json.dumps(job),
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
        env={**base, **env},
    )
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-3:]
        return {"unavailable": " | ".join(tail) or f"exit status {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    """Measure, print a table, write the JSON."""
    parser = argparse.ArgumentParser(prog="python -m bench.embeddings")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sentences", type=int, default=1024)
    parser.add_argument("--passages", type=int, default=128)
    parser.add_argument("--peer-python", type=Path, default=Path("/tmp/st/bin/python"))
    parser.add_argument("--skip-peer", action="store_true")
    args = parser.parse_args()

    sets = {"sentences": sentences(args.sentences), "passages": passages(args.passages)}
    job = {"sets": sets, "rounds": args.rounds}
    results: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
            "load_average_before": os.getloadavg(),
        },
        "texts": {name: len(texts) for name, texts in sets.items()},
        "goal_passages_per_s": GOAL_PASSAGES_PER_S,
        "local": {
            mode: _child([sys.executable, "-m", "bench.embeddings.local_run"], job, env)
            for mode, env in MODES.items()
        },
    }
    if not args.skip_peer:
        if args.peer_python.exists():
            peer_job = {**job, "model_dir": str(minilm_dir())}
            results["peer"] = _child([str(args.peer_python), str(PEER_SCRIPT)], peer_job, {})
        else:
            results["peer"] = {"unavailable": f"{args.peer_python} does not exist"}
    results["machine"]["load_average_after"] = os.getloadavg()
    _print(results, sets)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    path = RESULTS / f"embeddings-{stamp}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    Console().print(f"wrote {path.relative_to(REPO)}")


def _rate(count: int, seconds: list[float] | None) -> float | None:
    return count / statistics.median(seconds) if seconds else None


def _print(results: dict[str, Any], sets: dict[str, list[str]]) -> None:
    console = Console(width=150)
    table = Table(title="all-MiniLM-L6-v2: texts embedded per second (median of rounds)")
    columns = ["set", "tokens/text", "tokenizer (floor)"]
    columns += [f"local, {mode}" for mode in MODES] + ["sentence-transformers (torch)"]
    for column in columns:
        table.add_column(column, justify="right")
    peer = results.get("peer") or {}
    for name, texts in sets.items():
        local = {m: r.get("sets", {}).get(name, {}) for m, r in results["local"].items()}
        first = next((s for s in local.values() if s), {})
        cells = [f"{len(texts)} {name}", f"{first.get('mean_tokens', 0):.0f}"]
        floor = _rate(len(texts), first.get("tokenizer_seconds"))
        cells.append(f"{floor:,.0f}" if floor else "-")
        for stats in local.values():
            rate = _rate(len(texts), stats.get("local_seconds"))
            gflops = (rate or 0) * stats.get("mean_tokens", 0)
            gflops *= flops_per_token(stats.get("mean_tokens", 0)) / 1e9
            cells.append(f"{rate:,.1f} ({gflops:.0f} GFLOP/s)" if rate else "-")
        rate = _rate(len(texts), peer.get("seconds", {}).get(name))
        cells.append(f"{rate:,.1f}" if rate else "-")
        table.add_row(*cells)
    console.print(table)
    for mode, r in results["local"].items():
        if "unavailable" in r:
            console.print(f"local, {mode}: failed ({r['unavailable']})")
        else:
            console.print(f"float32 matrix products, {mode}: {r['blas_gflops']:.0f} GFLOP/s")
    need = GOAL_PASSAGES_PER_S * 200 * flops_per_token(200) / 1e9
    console.print(
        f"{GOAL_PASSAGES_PER_S:.0f} passages of 200 tokens/s would need {need:,.0f} GFLOP/s"
    )
    if "unavailable" in peer:
        console.print(f"sentence-transformers: unavailable ({peer['unavailable']})")
    load = results["machine"]
    console.print(f"load average before/after: {load['load_average_before'][0]:.2f} / "
                  f"{load['load_average_after'][0]:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
