"""One round of measurements of the local embedder, in a process of its own so that the BLAS
thread setting (read by OpenBLAS when numpy loads) can differ between runs.

Reads ``{"sets": {name: [texts]}, "variants": [name], "extras": bool}`` on stdin, where each
variant is a key of ``VARIANTS``. Prints JSON: per variant and set, the wall-clock and CPU
seconds (every thread of the process) of one ``embed_sync`` after a warm-up, and the mean
tokens; per set the tokenizer's seconds; with ``extras``, the matrix-product ceilings
(``ceiling.py``) and the accuracy of each variant against numpy float32 (``accuracy.py``)."""

from __future__ import annotations

import json
import statistics
import sys
import time
from typing import Any

from elevenfactor.context._embed_local import LocalEmbedder, blas_single_threaded

VARIANTS: dict[str, dict[str, Any]] = {
    "numpy": {"runtime": "numpy"},
    "onnx-fp32": {"runtime": "onnx"},
    "onnx-int8": {"runtime": "onnx", "quantize": "int8"},
}


def _timed(embedder: LocalEmbedder, texts: list[str]) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    embedder.embed_sync(texts)
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    """Measure every variant on every set of texts given on stdin, interleaved."""
    job = json.load(sys.stdin)
    sets: dict[str, list[str]] = job["sets"]
    embedders = {name: LocalEmbedder(**VARIANTS[name]) for name in job["variants"]}
    load: dict[str, float] = {}
    for name, embedder in embedders.items():
        start = time.perf_counter()
        embedder.embed_sync(["warm up: loads the model"])
        load[name] = time.perf_counter() - start
    any_embedder = next(iter(embedders.values()))
    result: dict[str, Any] = {
        "blas_single_threaded": blas_single_threaded(),
        "load_seconds": load,
        "mean_tokens": {
            name: statistics.fmean(any_embedder.count_tokens(texts)) for name, texts in sets.items()
        },
        "tokenizer_seconds": {},
        "variants": {name: {} for name in embedders},
    }
    for set_name, texts in sets.items():
        start = time.perf_counter()
        any_embedder.count_tokens(texts)
        result["tokenizer_seconds"][set_name] = time.perf_counter() - start
        for name, embedder in embedders.items():
            embedder.embed_sync(texts[:8])  # warm-up on this set's shapes
            wall, cpu = _timed(embedder, texts)
            result["variants"][name][set_name] = {"wall_seconds": wall, "cpu_seconds": cpu}
    if job.get("extras"):
        from bench.embeddings.accuracy import accuracy
        from bench.embeddings.ceiling import ceilings

        result["ceilings"] = ceilings()
        result["accuracy"] = accuracy({n: VARIANTS[n] for n in embedders})
    print(json.dumps(result))


if __name__ == "__main__":
    main()
