"""BM25 for retrieval indexes: the analyser, the term statistics, and the scoring query.

The analyser is deliberately simple and the same everywhere (at ingestion and at query time,
on both backends):

1. Unicode NFKC normalisation, then ``casefold`` (a lowercase that also folds ``ß`` to ``ss``);
2. a Unicode word split: maximal runs of letters, digits and ``_`` (``re`` ``\\w``), so
   ``state-of-the-art`` gives ``state``, ``of``, ``the``, ``art`` and ``café`` stays one word;
3. a small English stop list (``STOP_WORDS``) is dropped, and so are words longer than
   ``MAX_TERM`` characters (hashes, base64), which only bloat the postings.

There is no stemming: ``index`` and ``indexes`` are different terms (the vector half of hybrid
search covers such variants).

Scoring is Okapi BM25 with ``k1 = 1.2`` and ``b = 0.75`` and the non-negative idf of Lucene,
``ln(1 + (N - df + 0.5) / (df + 0.5))``: a chunk's score is the sum over the query's terms of
``idf * impact``, the impact (``impact``) depending only on the term's frequency in the chunk and
the chunk's length. A query's terms are deduplicated. Postings (term, chunk, tf), chunk lengths
and document frequencies live in the index's tables, and so do impact-ordered lists of them
(``_index_bm25``, what queries read); ``bm25_sql`` scores the postings in SQL on both backends
(for versions built before the lists), with the idf of each query term computed here from its
df. ``bm25_scores`` is the same formula over texts in memory: the reference the tests hold both
to.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from collections.abc import Hashable, Mapping
from typing import Any, TypeVar, overload

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "K1",
    "MAX_TERM",
    "STOP_WORDS",
    "B",
    "analyse",
    "bm25_scores",
    "bm25_sql",
    "idf",
    "impact",
    "query_terms",
    "term_frequencies",
]

K1 = 1.2
B = 0.75
MAX_TERM = 40
"""Words longer than this many characters are not indexed."""

# fmt: off
STOP_WORDS = frozenset([
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "from", "has", "have", "how",
    "i", "if", "in", "into", "is", "it", "its", "of", "on", "or", "that", "the", "their", "then",
    "there", "these", "they", "this", "to", "was", "were", "what", "when", "where", "which",
    "who", "why", "will", "with", "you", "your",
])
# fmt: on
"""Words too common to tell chunks apart."""

_WORD = re.compile(r"\w+")
K = TypeVar("K", bound=Hashable)


def analyse(text: str) -> list[str]:
    """The terms of ``text``, in order, repeated as often as they occur."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return [w for w in _WORD.findall(folded) if len(w) <= MAX_TERM and w not in STOP_WORDS]


def term_frequencies(text: str) -> tuple[Counter[str], int]:
    """``(term -> count, length)`` of ``text``: a chunk's postings and its length in terms."""
    terms = analyse(text)
    return Counter(terms), len(terms)


def query_terms(text: str) -> list[str]:
    """The distinct terms of a query, in order of first occurrence."""
    return list(dict.fromkeys(analyse(text)))


def idf(n_chunks: int, df: int) -> float:
    """Inverse document frequency of a term in ``df`` of ``n_chunks`` chunks (never negative)."""
    return math.log(1.0 + (n_chunks - df + 0.5) / (df + 0.5))


@overload
def impact(tf: float, length: float, avgdl: float) -> float: ...
@overload
def impact(
    tf: NDArray[np.float64], length: NDArray[np.float64], avgdl: float
) -> NDArray[np.float64]: ...
def impact(tf: Any, length: Any, avgdl: float) -> Any:
    """The part of a term's BM25 contribution to a chunk that does not depend on the query:
    ``tf * (k1 + 1) / (tf + k1 * (1 - b + b * length / avgdl))`` (of numbers or numpy arrays,
    computed in the same order either way, so the results are equal)."""
    return tf * (K1 + 1) / (tf + K1 * (1 - B + B * length / avgdl))


def bm25_sql(ns: str, n_terms: int, filters_sql: str, float_cast: str) -> str:
    """The scoring query over the tables of namespace ``ns`` for ``n_terms`` query terms.

    Parameters, in order: ``n_terms`` pairs ``(term, idf)``, the average chunk length, the
    organisation, the filters' parameters, the limit. ``float_cast`` is the type a parameter is
    cast to for float arithmetic (``REAL`` or ``DOUBLE PRECISION``).
    """
    values = ", ".join(f"(CAST(? AS TEXT), CAST(? AS {float_cast}))" for _ in range(n_terms))
    return (
        f"WITH q (term, idf) AS (VALUES {values}) "
        f"SELECT p.chunk, SUM(q.idf * p.tf * {K1 + 1} / "
        f"(p.tf + {K1} * ({1 - B} + {B} * c.length / CAST(? AS {float_cast})))) AS score "
        f"FROM q JOIN {ns}.postings p ON p.term = q.term "
        f"JOIN {ns}.chunks c ON c.key = p.chunk "
        f"WHERE c.org_id = ?{filters_sql} "
        "GROUP BY p.chunk ORDER BY score DESC, p.chunk LIMIT ?"
    )


def bm25_scores(texts: Mapping[K, str], query: str) -> dict[K, float]:
    """BM25 of each text (by id) for ``query``, in memory; texts with no query term are left
    out. The reference implementation the SQL is tested against."""
    stats = {key: term_frequencies(text) for key, text in texts.items()}
    n = len(stats)
    if n == 0:
        return {}
    avgdl = sum(length for _, length in stats.values()) / n
    terms = query_terms(query)
    df = {t: sum(1 for tf, _ in stats.values() if t in tf) for t in terms}
    out: dict[K, float] = {}
    for key, (tf, length) in stats.items():
        score = 0.0
        matched = False
        for t in terms:
            f = tf.get(t, 0)
            if f:
                matched = True
                score += idf(n, df[t]) * f * (K1 + 1) / (f + K1 * (1 - B + B * length / avgdl))
        if matched:
            out[key] = score
    return out
