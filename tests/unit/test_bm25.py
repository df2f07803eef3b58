"""The BM25 analyser and formula (the SQL on both backends is held to ``bm25_scores`` in
``tests/integration/test_retrieval_bm25.py``)."""

from __future__ import annotations

import math

import pytest

from elevenfactor.context._bm25 import (
    K1,
    B,
    analyse,
    bm25_scores,
    bm25_sql,
    idf,
    query_terms,
    term_frequencies,
)


def test_the_analyser_lowercases_splits_on_words_and_drops_stop_words() -> None:
    assert analyse("The State-of-the-Art café, in 2024!") == ["state", "art", "café", "2024"]
    assert analyse("STRASSE Straße ﬁle") == ["strasse", "strasse", "file"]  # casefold, NFKC
    assert analyse("snake_case x" + "y" * 41) == ["snake_case"]  # over 40 characters: dropped
    assert analyse("") == [] and analyse("the and of") == []
    assert query_terms("key KEY rotate key") == ["key", "rotate"]
    tf, length = term_frequencies("key, key and rotate")
    assert tf == {"key": 2, "rotate": 1} and length == 3


def test_idf_is_never_negative_and_falls_with_document_frequency() -> None:
    assert idf(10, 10) > 0
    assert idf(10, 1) > idf(10, 5) > idf(10, 10)
    assert idf(4, 1) == pytest.approx(math.log(1 + 3.5 / 1.5))


def test_bm25_matches_the_formula_by_hand() -> None:
    texts = {"a": "apple banana", "b": "apple apple apple cherry date", "c": "cherry"}
    scores = bm25_scores(texts, "apple")
    avgdl = (2 + 5 + 1) / 3
    w = idf(3, 2)
    expected_a = w * 1 * (K1 + 1) / (1 + K1 * (1 - B + B * 2 / avgdl))
    expected_b = w * 3 * (K1 + 1) / (3 + K1 * (1 - B + B * 5 / avgdl))
    assert scores == pytest.approx({"a": expected_a, "b": expected_b})
    assert "c" not in scores
    # Term frequency saturates: three occurrences score far less than three times one.
    assert scores["b"] < 3 * scores["a"]


def test_rarer_terms_and_shorter_texts_score_higher() -> None:
    texts = {
        "short": "rotate key",
        "long": "rotate key " + "filler " * 30,
        "other": "rotate the wheel",
    }
    scores = bm25_scores(texts, "rotate key")
    assert scores["short"] > scores["long"] > scores["other"]
    assert bm25_scores({}, "x") == {} and bm25_scores(texts, "the") == {}


def test_the_sql_names_its_namespace_and_parameters() -> None:
    sql = bm25_sql("ns", 2, " AND x = ?", "REAL")
    assert sql.count("?") == 2 * 2 + 1 + 1 + 1 + 1  # pairs, avgdl, org, filter, limit
    assert "ns.postings" in sql and "ns.chunks" in sql and "c.org_id = ?" in sql
    assert f"{K1 + 1}" in sql and f"{B}" in sql
