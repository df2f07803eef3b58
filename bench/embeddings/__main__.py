"""``python -m bench.embeddings``: local embedder throughput, short sentences and ~200-token
passages, four ways side by side in one run: numpy with OpenBLAS's threads (the numpy runtime's
default), numpy with one pass per core (``OPENBLAS_NUM_THREADS=1``), onnxruntime float32 (the
default runtime) and onnxruntime int8; with the tokenizer alone as the floor, the per-core
matrix-product speeds as the ceiling, each variant's accuracy against numpy float32, and
sentence-transformers on CPU torch as a peer when a throwaway venv has it (``--peer-python``,
default ``/tmp/st/bin/python``).

Each round runs two processes (the BLAS thread setting is read when numpy loads): one with the
default BLAS threads, one with ``OPENBLAS_NUM_THREADS=1`` for the other three variants, which
take turns; the rounds alternate, so that a burst of load on a shared machine falls on every
variant alike. Rates are medians over ``--rounds``; ratios are medians of each round's ratio to
numpy (BLAS threads). Besides wall-clock rates, texts per CPU-second (every thread of the process)
say what one core does, less disturbed by other work. Writes
``bench/results/embeddings-<stamp>.json``.
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

from bench.embeddings.corpus import passages, sentences
from bench.embeddings.report import print_report
from elevenfactor.context._embed_bert import workers
from elevenfactor.context._embed_local import minilm_dir

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "bench" / "results"
PEER_SCRIPT = Path(__file__).with_name("peer_st.py")
COLUMNS = {
    "numpy, BLAS threads": ("blas-threads", "numpy"),
    "numpy, pass per core": ("pass-per-core", "numpy"),
    "onnx fp32": ("pass-per-core", "onnx-fp32"),
    "onnx int8": ("pass-per-core", "onnx-int8"),
}
"""Column -> (process, variant of ``local_run.VARIANTS``)."""
BASELINE = "numpy, BLAS threads"
PROCESSES: dict[str, dict[str, str]] = {
    "blas-threads": {},
    "pass-per-core": {"OPENBLAS_NUM_THREADS": "1"},
}


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


def _local(job: dict[str, Any], process: str) -> dict[str, Any]:
    variants = sorted({v for p, v in COLUMNS.values() if p == process})
    argv = [sys.executable, "-m", "bench.embeddings.local_run"]
    return _child(argv, {**job, "variants": variants}, PROCESSES[process])


def _rounds(sets: dict[str, list[str]], rounds: int) -> dict[str, Any]:
    """Per column and set: wall and CPU seconds of each round; per round the processes' data."""
    job = {"sets": sets}
    runs: list[dict[str, Any]] = []
    for r in range(rounds):
        order = list(PROCESSES) if r % 2 == 0 else list(reversed(PROCESSES))
        runs.append({process: _local(job, process) for process in order})
    columns: dict[str, Any] = {}
    for column, (process, variant) in COLUMNS.items():
        per_set: dict[str, Any] = {}
        for name in sets:
            rows = [run[process].get("variants", {}).get(variant, {}).get(name) for run in runs]
            per_set[name] = [row for row in rows if row]
        columns[column] = per_set
    first = next((run[p] for run in runs for p in run if "mean_tokens" in run[p]), {})
    return {"columns": columns, "runs": runs, "mean_tokens": first.get("mean_tokens", {})}


def _summary(measured: dict[str, Any], sets: dict[str, list[str]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for column, per_set in measured["columns"].items():
        out[column] = {}
        for name, rows in per_set.items():
            n = len(sets[name])
            base = measured["columns"][BASELINE][name]
            ratios = [
                b["wall_seconds"] / row["wall_seconds"] for row, b in zip(rows, base, strict=False)
            ]
            out[column][name] = {
                "texts_per_s": statistics.median(n / r["wall_seconds"] for r in rows)
                if rows
                else None,
                "texts_per_cpu_s": statistics.median(n / r["cpu_seconds"] for r in rows)
                if rows
                else None,
                "ratio_to_baseline": statistics.median(ratios) if ratios else None,
            }
    return out


def main() -> None:
    """Measure, print the tables, write the JSON."""
    parser = argparse.ArgumentParser(prog="python -m bench.embeddings")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sentences", type=int, default=1024)
    parser.add_argument("--passages", type=int, default=128)
    parser.add_argument("--peer-python", type=Path, default=Path("/tmp/st/bin/python"))
    parser.add_argument("--skip-peer", action="store_true")
    parser.add_argument("--skip-extras", action="store_true", help="No ceilings, no accuracy.")
    args = parser.parse_args()

    sets = {"sentences": sentences(args.sentences), "passages": passages(args.passages)}
    load_before = os.getloadavg()
    measured = _rounds(sets, args.rounds)
    results: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "cores_used": workers(),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
            "load_average_before": load_before,
        },
        "texts": {name: len(texts) for name, texts in sets.items()},
        "mean_tokens": measured["mean_tokens"],
        "summary": _summary(measured, sets),
        "rounds": measured["runs"],
    }
    if not args.skip_extras:
        extras = _child(
            [sys.executable, "-m", "bench.embeddings.local_run"],
            {"sets": {}, "variants": ["onnx-fp32", "onnx-int8"], "extras": True},
            {"OPENBLAS_NUM_THREADS": "1"},
        )
        results["ceilings"] = extras.get("ceilings", extras)
        results["accuracy"] = extras.get("accuracy", extras)
    if not args.skip_peer:
        if args.peer_python.exists():
            peer_job = {"sets": sets, "rounds": args.rounds, "model_dir": str(minilm_dir())}
            results["peer"] = _child([str(args.peer_python), str(PEER_SCRIPT)], peer_job, {})
        else:
            results["peer"] = {"unavailable": f"{args.peer_python} does not exist"}
    results["machine"]["load_average_after"] = os.getloadavg()
    print_report(results, sets)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    path = RESULTS / f"embeddings-{stamp}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {path.relative_to(REPO)}")


if __name__ == "__main__":
    main()
