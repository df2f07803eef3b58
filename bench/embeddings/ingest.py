"""``python -m bench.embeddings.ingest``: ingestion throughput of ``elevenfactor index build``
with each way to run the local embedder, on the corpus of ``bench.retrieval`` (``--copies``
numbered variants of the 27 Q&A documents, 200-token chunks with 40 of overlap: the defaults).

Each build is the real command in a process of its own, on a fresh SQLite data folder (the
embedded backend), with a project file naming three local embedders: ``numpy``, ``onnx``
(float32, the default) and ``int8``. Reported: chunks per second by the build's own clock
(scan, chunking, embedding, writes, publishing; the model file is already cached) and by the
process's wall clock (Python's start and imports too). Rounds take turns between the variants.
Writes ``bench/results/embeddings-ingest-<stamp>.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.retrieval.data import make_markdown_corpus
from elevenfactor.context._chunk import chunk_document, token_counter
from elevenfactor.context._embed_local import LocalEmbedder
from elevenfactor.context._ingest import scan

REPO = Path(__file__).resolve().parents[2]
CLI = Path(sys.executable).with_name("elevenfactor")
VARIANTS = {
    "numpy": {"runtime": "numpy"},
    "onnx": {"runtime": "onnx"},
    "int8": {"runtime": "onnx", "quantize": "int8"},
}
PROJECT = "embeddings:\n  default: onnx\n  models:\n" + "".join(
    f"    {name}: {json.dumps(settings)}\n" for name, settings in VARIANTS.items()
)


def _mean_tokens(folder: Path) -> tuple[int, float]:
    embedder = LocalEmbedder()
    count = token_counter(embedder)
    docs = scan(folder, max_bytes=1 << 24).documents
    chunks = [c for d in docs for c in chunk_document(d, chunk_tokens=200, overlap_tokens=40,
                                                         count=count)]  # fmt: skip
    tokens = embedder.count_tokens([c.embed_text for c in chunks])
    return len(chunks), statistics.fmean(tokens)


def _build(work: Path, variant: str, env: dict[str, str]) -> dict[str, Any]:
    data = work / f"data-{variant}"
    shutil.rmtree(data, ignore_errors=True)
    env = {**env, "ELEVENFACTOR_DATA_DIR": str(data)}
    config = ["--config", str(work / "elevenfactor.yaml")]
    subprocess.run([str(CLI), "migrate", *config], env=env, check=True, capture_output=True)
    argv = [str(CLI), "index", "build", "bench", str(work / "corpus"), "--embedder", variant]
    start = time.perf_counter()
    done = subprocess.run([*argv, "--json", *config], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{variant}: {done.stderr.strip()[-500:]}")
    report = json.loads(done.stdout)
    return {"chunks": report["chunks"], "seconds": report["seconds"], "process_seconds": wall}


def main() -> None:
    """Build the index with each variant, ``--rounds`` times, and print chunks/s."""
    parser = argparse.ArgumentParser(prog="python -m bench.embeddings.ingest")
    parser.add_argument("--copies", type=int, default=10, help="Copies of the Q&A corpus.")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    try:
        files = make_markdown_corpus(work / "corpus", args.copies)
        (work / "elevenfactor.yaml").write_text(PROJECT)
        for settings in VARIANTS.values():  # the model files are built and cached beforehand
            LocalEmbedder(**settings).embed_sync(["warm the cache"])
        chunks, tokens = _mean_tokens(work / "corpus")
        env = {k: v for k, v in os.environ.items() if not k.startswith("ELEVENFACTOR_")}
        load_before = os.getloadavg()
        runs: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
        for r in range(args.rounds):
            order = list(VARIANTS) if r % 2 == 0 else list(reversed(VARIANTS))
            for variant in order:
                runs[variant].append(_build(work, variant, env))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results: dict[str, Any] = {
        "documents": files,
        "chunks": chunks,
        "mean_tokens_per_chunk": tokens,
        "load_average": [load_before, os.getloadavg()],
        "runs": runs,
        "summary": {
            v: {
                "chunks_per_s": statistics.median(r["chunks"] / r["seconds"] for r in rs),
                "chunks_per_process_s": statistics.median(
                    r["chunks"] / r["process_seconds"] for r in rs
                ),
            }
            for v, rs in runs.items()
        },
    }
    print(
        f"elevenfactor index build: {files} documents, {chunks} chunks of {tokens:.0f} tokens"
        f" on average (200-token chunks, 40 overlap), medians of {args.rounds} rounds"
    )
    base = results["summary"]["numpy"]["chunks_per_s"]
    for variant, row in results["summary"].items():
        print(
            f"  {variant:6s} {row['chunks_per_s']:7.1f} chunks/s (x{row['chunks_per_s'] / base:.2f}"
            f" numpy); {row['chunks_per_process_s']:.1f} chunks/s counting the process's start"
        )
    print(f"  load average before/after: {load_before[0]:.2f} / {os.getloadavg()[0]:.2f}")
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    path = REPO / "bench" / "results" / f"embeddings-ingest-{stamp}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {path.relative_to(REPO)}")


if __name__ == "__main__":
    main()
