"""Detection and false-positive rates on the held-out fifth of the injection corpus: the
injection rules, the classifier and both, through the function the training script measures
with (``scripts/train_injection.py``: ``is_test`` splits, ``evaluate`` scores), beside what it
recorded at training time (``metrics.json``); then each policy's verdicts on the same rows
(``guard eval``'s ``evaluate``)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from collections.abc import Callable
from types import ModuleType
from typing import Any

from bench.guards.inputs import CORPUS, REPO, policies
from elevenfactor.governance._guard_eval import Sample, evaluate
from elevenfactor.governance._guard_injection_model import model_info

__all__ = ["held_out"]


def _training_script() -> ModuleType:
    path = REPO / "scripts" / "train_injection.py"
    spec = importlib.util.spec_from_file_location("bench_train_injection", path)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def held_out(advance: Callable[[], None]) -> dict[str, Any]:
    """Rules / classifier / both on the held-out rows, the recorded figures, whether the
    shipped model was trained on this corpus, and each policy's verdicts there."""
    train = _training_script()
    rows = train.read_corpus()
    test_rows = [r for r in rows if train.is_test(r)]
    corpus_sha = hashlib.sha256(
        b"".join(json.dumps(r, sort_keys=True).encode() + b"\n" for r in rows)
    ).hexdigest()
    measured: dict[str, Any] = train.evaluate(test_rows)
    advance()
    recorded_file = CORPUS / "metrics.json"
    recorded = json.loads(recorded_file.read_text()) if recorded_file.exists() else {}
    samples = [Sample(r["text"], r["label"] != "benign") for r in test_rows]
    verdicts = {}
    for name, policy in policies().items():
        verdicts[name] = evaluate(policy, samples, "input")
        advance()
    return {
        "rows": len(rows),
        "held_out": len(test_rows),
        "positives": sum(s.positive for s in samples),
        "corpus_sha256": corpus_sha,
        "model_corpus_sha256": model_info().get("corpus_sha256"),
        "measured": measured,
        "recorded": {k: recorded.get(k) for k in ("threshold", "rules", "classifier", "both")},
        "policies": verdicts,
    }
