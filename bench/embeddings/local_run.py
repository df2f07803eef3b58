"""One measurement of the local embedder, in a process of its own so that the BLAS thread
setting (read by OpenBLAS when numpy loads) can differ between runs. Reads
``{"sets": {name: [texts]}, "rounds": n}`` on stdin; prints JSON: per set the tokenizer's and
the embedder's seconds per round and the mean tokens, and the float32 matrix-product speed."""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np

from elevenfactor.context._embed_local import LocalEmbedder, blas_single_threaded

_HIDDEN, _FF = 384, 1536


def _seconds(fn: Callable[[], object], rounds: int) -> list[float]:
    fn()  # warm-up (the first call also loads the model)
    out = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def blas_gflops(rounds: int) -> float:
    """float32 matrix-product speed on the model's largest product: 4096 tokens x 384 -> 1536."""
    a = np.random.default_rng(0).standard_normal((4096, _HIDDEN), dtype=np.float32)
    b = np.random.default_rng(1).standard_normal((_HIDDEN, _FF), dtype=np.float32)
    out = np.empty((4096, _FF), np.float32)
    seconds = _seconds(lambda: [np.matmul(a, b, out=out) for _ in range(10)], rounds)
    return 10 * 2 * 4096 * _HIDDEN * _FF / statistics.median(seconds) / 1e9


def main() -> None:
    """Measure every set of texts given on stdin."""
    job = json.load(sys.stdin)
    embedder = LocalEmbedder()
    result: dict[str, object] = {
        "blas_single_threaded": blas_single_threaded(),
        "blas_gflops": blas_gflops(job["rounds"]),
    }
    sets: dict[str, object] = {}
    for name, texts in job["sets"].items():
        tokens = embedder.count_tokens(texts)
        sets[name] = {
            "mean_tokens": statistics.fmean(tokens),
            "tokenizer_seconds": _seconds(lambda t=texts: embedder.count_tokens(t), job["rounds"]),
            "local_seconds": _seconds(lambda t=texts: embedder.embed_sync(t), job["rounds"]),
        }
    result["sets"] = sets
    print(json.dumps(result))


if __name__ == "__main__":
    main()
