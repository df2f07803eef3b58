"""The packed BM25 lists (``_index_lists``, ``_index_bm25``): their layout, the scores added
from them, the ranking, and the impact a query recomputes for a cut list (the backends are
tested in ``tests/integration/test_retrieval_bm25_lists.py``)."""

from __future__ import annotations

import numpy as np
import pytest

from elevenfactor.context._bm25 import K1, B, idf, impact
from elevenfactor.context._index_bm25 import (
    PRUNE_MIN,
    _ranked,
    prune_limit,
    rescore_count,
    score_lists,
)
from elevenfactor.context._index_lists import LIST_CACHE_MIN, LIST_DTYPE, VersionCache, pack_lists


def test_each_list_is_packed_highest_impact_first_then_by_ord() -> None:
    ords = np.array([4, 1, 7, 2, 0, 3])
    impacts = np.array([0.5, 0.9, 0.5, 1.2, 0.1, 1.2])
    # Two terms: postings 0-2 and 3-5.
    first, second = pack_lists(ords, impacts, [0, 3])
    a = np.frombuffer(first, dtype=LIST_DTYPE)
    b = np.frombuffer(second, dtype=LIST_DTYPE)
    assert a["ord"].tolist() == [1, 4, 7]  # 0.9, then the 0.5 tie by ord
    assert b["ord"].tolist() == [2, 3, 0]
    assert b["impact"].tolist() == pytest.approx([1.2, 1.2, 0.1])
    assert LIST_DTYPE.itemsize == 8 and len(first) == 3 * 8


def test_scores_add_idf_times_impact_per_chunk() -> None:
    one = pack_lists(np.array([0, 2]), np.array([1.0, 2.0]), [0])[0]
    two = pack_lists(np.array([2, 3]), np.array([0.5, 1.5]), [0])[0]
    scores = score_lists([(2, one), (2, two)], total=5)
    w = idf(5, 2)
    assert scores.tolist() == pytest.approx([w * 1.0, 0.0, w * 2.5, w * 1.5, 0.0])
    # A list naming more chunks than the version says it has still scores them.
    assert len(score_lists([(2, one)], total=1)) == 3


def test_ranking_is_by_score_then_ord_and_keeps_ties_at_the_cut() -> None:
    scores = np.array([1.0, 3.0, 2.0, 3.0, 2.0, 0.0])
    touched = np.flatnonzero(scores)
    assert _ranked(scores, touched, 3).tolist() == [1, 3, 2]
    assert _ranked(scores, touched, 10).tolist() == [1, 3, 2, 4, 0]
    assert _ranked(scores, touched[::-1].copy(), 4).tolist() == [1, 3, 2, 4]
    # A thousand-way tie at the cut: the smallest ords, in order.
    flat = np.ones(1000)
    flat[700] = 2.0
    shuffled = np.random.default_rng(0).permutation(1000)
    assert _ranked(flat, shuffled, 4).tolist() == [700, 0, 1, 2]
    # Among every chunk with a score (None), whether few or most have one.
    assert _ranked(scores, None, 3).tolist() == [1, 3, 2]
    assert _ranked(flat, None, 4).tolist() == [700, 0, 1, 2]
    assert _ranked(np.zeros(10), None, 4).tolist() == []


def test_an_impact_recomputed_for_one_chunk_equals_the_stored_one() -> None:
    tf = np.array([1.0, 3.0, 7.0])
    lengths = np.array([10.0, 31.0, 250.0])
    avgdl = 291 / 3
    stored = impact(tf, lengths, avgdl).astype(np.float32)
    for i in range(3):
        assert np.float32(impact(int(tf[i]), int(lengths[i]), avgdl)) == stored[i]
    assert impact(2, 10, 10.0) == pytest.approx(2 * (K1 + 1) / (2 + K1))
    assert impact(1, 20, 10.0) < impact(1, 10, 10.0) < impact(2, 10, 10.0)
    assert impact(1, 10, 10.0) == pytest.approx((K1 + 1) / (1 + K1 * (1 - B + B)))


def test_the_pruning_limits_grow_with_the_results_asked() -> None:
    assert prune_limit(1) == PRUNE_MIN >= 100_000
    assert prune_limit(1000) >= 1_000_000
    assert rescore_count(10) >= 40 and rescore_count(1000) >= 4000


async def test_the_version_cache_keeps_long_lists_within_its_budget() -> None:
    cache = VersionCache(list_bytes=3 * LIST_CACHE_MIN)
    v1, v2 = ("ri_a", 1), ("ri_a", 2)
    long, short = (9, b"x" * LIST_CACHE_MIN), (2, b"y" * 16)
    cache.keep_list(v1, "short", None, short)  # cheap to read again: not kept
    assert cache.get_list(v1, "short", None) is None
    for term in ("a", "b", "c"):
        cache.keep_list(v1, term, None, long)
    assert cache.get_list(v1, "a", None) == long  # now the most recently used
    assert cache.get_list(v1, "a", 100) is None  # a prefix is another read
    cache.keep_list(v2, "d", None, long)  # over budget: the least recently used goes
    assert cache.get_list(v1, "b", None) is None
    assert cache.get_list(v1, "a", None) == long and cache.get_list(v2, "d", None) == long
    cache.forget("ri_a", 1)
    assert cache.get_list(v1, "a", None) is None and cache.get_list(v2, "d", None) == long
    cache.forget("ri_a")
    assert cache.get_list(v2, "d", None) is None
