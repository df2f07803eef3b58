"""BM25 in the retrieval benchmark: the lists' recall@10 against exact BM25."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from bench.stats import summarize
from elevenfactor.context._index_sql import SqlBackend

__all__ = ["bench_bm25", "bm25_recall"]

ORG = "org_default"


def _ms(values: list[float]) -> dict[str, float]:
    return {k: (v * 1000 if k != "n" else v) for k, v in summarize(values).items()}


def bm25_recall(found: list[tuple[int, float]], exact: list[tuple[int, float]]) -> float:
    """Recall@10 of ``found`` against ``exact`` (the exact top 10), counting ties: a chunk found
    counts if it is in the exact top 10 or its score (never above its exact score) reaches the
    exact 10th (within float32 rounding), since the order among equal scores is arbitrary."""
    if not exact:
        return 1.0
    top = {k for k, _ in exact}
    floor = exact[-1][1] * (1 - 1e-6)
    return sum(1 for k, s in found[:10] if k in top or s >= floor) / len(exact)


async def bench_bm25(
    backend: SqlBackend,
    index_id: str,
    version: int,
    texts: list[str],
    n: int,
    counts: dict[str, int],
) -> dict[str, Any]:
    """BM25 top 10 from the lists (what ``search`` runs) against exact BM25 (the postings
    scored in SQL, what a version without lists runs; timed as such)."""
    common: dict[str, Any] = {"total": n, "total_terms": counts["total_terms"]}
    recall: list[float] = []
    exact_s: list[float] = []
    for text in texts:
        found = await backend.bm25_search(index_id, version, ORG, text, 10, {}, **common)
        t0 = time.perf_counter()
        exact = await backend.bm25_search(
            index_id, version, ORG, text, 10, {}, lists=False, **common
        )
        exact_s.append(time.perf_counter() - t0)
        recall.append(bm25_recall(found, exact))
    return {"bm25_recall_at_10": float(np.mean(recall)), "bm25_postings_sql_ms": _ms(exact_s)}
