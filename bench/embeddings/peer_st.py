"""sentence-transformers on CPU torch, timed like the local embedder: run by ``bench.embeddings``
with the Python of a throwaway venv (stdlib + sentence-transformers only; never imported by the
project). Reads ``{"model_dir", "sets": {name: [texts]}, "rounds"}`` on stdin and prints
``{name: [seconds per round]}`` plus versions as JSON."""

from __future__ import annotations

import json
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def main() -> None:
    """Time ``model.encode`` over each set of texts, ``rounds`` times after a warm-up."""
    job = json.load(sys.stdin)
    import sentence_transformers
    import torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(job["model_dir"], device="cpu", local_files_only=True)
    out: dict[str, object] = {
        "versions": {
            "sentence-transformers": sentence_transformers.__version__,
            "torch": torch.__version__,
        },
        "torch_threads": torch.get_num_threads(),
        "seconds": {},
    }
    seconds: dict[str, list[float]] = {}
    for name, texts in job["sets"].items():
        model.encode(texts[:64], normalize_embeddings=True)  # warm-up
        seconds[name] = []
        for _ in range(job["rounds"]):
            start = time.perf_counter()
            model.encode(texts, normalize_embeddings=True)
            seconds[name].append(time.perf_counter() - start)
    out["seconds"] = seconds
    print(json.dumps(out))


if __name__ == "__main__":
    main()
