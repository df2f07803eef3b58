"""Precision and recall of the PII and secret detectors on the labelled corpus in
``tests/data/guard/pii_secrets.jsonl`` (synthetic text: documented test card numbers, the
ISO/ECBS example IBANs, generated fake keys; no real personal data).

The corpus was written by the detectors' author, so these figures are an upper bound; they
guard against regressions, not a measurement of real-world quality."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from elevenfactor.governance._guard_pii import PII_KINDS, find_pii
from elevenfactor.governance._guard_secrets import SECRET_KINDS, find_secrets

CORPUS = Path(__file__).resolve().parents[1] / "data" / "guard" / "pii_secrets.jsonl"


def per_kind_scores() -> dict[str, tuple[float, float, int]]:
    """kind -> (precision, recall, expected count), counting kinds per line as multisets."""
    tp: Counter[str] = Counter()
    fp: Counter[str] = Counter()
    fn: Counter[str] = Counter()
    for line in CORPUS.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        text = row["text"]
        got = Counter(f.kind for f in [*find_pii(text), *find_secrets(text)])
        want = Counter(row["expect"])
        for kind in got | want:
            hit = min(got[kind], want[kind])
            tp[kind] += hit
            fp[kind] += got[kind] - hit
            fn[kind] += want[kind] - hit
    scores = {}
    for kind in tp | fp | fn:
        predicted, expected = tp[kind] + fp[kind], tp[kind] + fn[kind]
        precision = tp[kind] / predicted if predicted else 1.0
        recall = tp[kind] / expected if expected else 1.0
        scores[kind] = (precision, recall, expected)
    return scores


def test_corpus_covers_every_kind_with_negatives() -> None:
    rows = [json.loads(line) for line in CORPUS.read_text(encoding="utf-8").splitlines()]
    assert len(rows) >= 80
    assert sum(not row["expect"] for row in rows) >= 30  # tricky negatives
    kinds = {kind for row in rows for kind in row["expect"]}
    assert kinds == set(PII_KINDS) | set(SECRET_KINDS)


def test_precision_and_recall_per_kind() -> None:
    scores = per_kind_scores()
    table = "\n".join(
        f"{kind:24} P={p:.2f} R={r:.2f} n={n}" for kind, (p, r, n) in sorted(scores.items())
    )
    assert all(p >= 0.95 and r >= 0.95 for p, r, _ in scores.values()), table
