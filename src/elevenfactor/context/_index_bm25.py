"""BM25 queries over a version's impact-ordered lists (``_index_lists``), scored in numpy.

A query reads one row per term (the backend's ``VersionCache`` keeps the long lists of common
terms), adds ``idf * impact`` of each posting into an array of one score per chunk (by ord)
and ranks the chunks. Without filters, in a version whose chunks are all the caller's
organisation's (its ``ListsMeta``, read once), the best ords become keys with no more SQL;
otherwise the best chunks are checked in SQL, where the organisation and the metadata filters
are (``_top``). The result is exact: the scores of ``bm25_sql`` (up to the float32 rounding of
impacts, about 1e-7 relative) in the same order (score, then key).

Pruning with a safe stop: an unfiltered query reads at most ``prune_limit(n)`` postings of
each term, its highest-impact ones (a ``substr`` prefix of the packed value), so a term in
most chunks costs a bounded read. A term with at most that many postings is read whole; when
one is cut, the best ``rescore_count(n)`` chunks by the prefixes are scored exactly (their
``tf`` for the cut terms looked up in ``postings``), and their top ``n`` is the answer only if
its last score beats anything outside them could reach: the best score outside plus, for each
cut term, idf times the last impact read (no posting left out has more). Otherwise the cut
terms' whole lists are read and scored as without pruning, so results are exact either way. A
filtered query reads whole lists (a selective filter may keep only chunks far down a list).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from elevenfactor.context._bm25 import bm25_sql, idf, impact
from elevenfactor.context._index_lists import LIST_DTYPE, ListsMeta, VersionCache
from elevenfactor.store import Executor, Row

__all__ = [
    "PRUNE_MIN",
    "PRUNE_PER_RESULT",
    "RESCORE_MIN",
    "RESCORE_PER_RESULT",
    "Reader",
    "in_list",
    "lists_search",
    "postings_search",
    "prune_limit",
    "rescore_count",
    "score_lists",
]

PRUNE_MIN = 100_000
PRUNE_PER_RESULT = 1000
"""An unfiltered query reads at most ``max(PRUNE_MIN, PRUNE_PER_RESULT * n)`` postings of a
term first (``n`` the results asked for). Reading and adding 100k postings takes about a
millisecond, so below 100k chunks every list is read whole: on the 100k-chunk benchmark (all
chunks of one length, so many tie), cutting lists at 20k or 5k postings gained 0.1-0.2 ms at
the median and lost more at p90, where the safe stop falls back to the whole lists."""
RESCORE_MIN = 100
RESCORE_PER_RESULT = 4
"""When a list is cut, the best ``max(RESCORE_MIN, RESCORE_PER_RESULT * n)`` chunks by the
prefixes are scored exactly."""
VERIFY_LIMIT = 4096
"""The best chunks are checked in SQL (organisation, filters) in growing batches, up to this
many; past it, the chunks that pass are read first and the other scores ignored."""
_IN = 500
"""Values in one ``IN (...)`` list at most."""

Fetch = Callable[[str, Sequence[Any]], Awaitable[list[Row]]]
Scores = np.ndarray[Any, np.dtype[np.float64]]
Lists = dict[str, tuple[int, Any]]
"""``term -> (df, packed postings)``."""


def in_list(
    column: str, values: Sequence[int], sql_type: str, arrays: bool
) -> tuple[str, list[Any]]:
    """``column IN (?, ...)`` and its parameters; with ``arrays`` (PostgreSQL), ``column =
    ANY(?)`` with one parameter, the values as the text of a ``sql_type`` array: the
    statement's text and parameter types are then the same for any values, so the server
    plans it once (psycopg sends a Python int as int2, int4 or int8 by its size, and 50
    literals take a millisecond to plan)."""
    if arrays:
        text = "{" + ",".join(str(int(v)) for v in values) + "}"
        return f"{column} = ANY(CAST(? AS {sql_type}[]))", [text]
    return f"{column} IN ({', '.join('?' * len(values))})", list(values)


@dataclass(frozen=True, slots=True)
class Reader:
    """Where a version's lists are and how to read them: its store and namespace, the query
    that reads lists (PostgreSQL's in binary), whether ords go as one array parameter
    (``in_list``), and the backend's ``VersionCache`` with the version's ``(index id,
    version)`` in it."""

    db: Executor
    ns: str
    fetch: Fetch
    arrays: bool = False
    cache: VersionCache | None = None
    version: tuple[str, int] = ("", 0)

    def ords_in(self, ords: Sequence[int]) -> tuple[str, list[Any]]:
        """``o.ord IN (...)`` and its parameters."""
        return in_list("o.ord", ords, "INTEGER", self.arrays)


def prune_limit(n: int) -> int:
    """Postings of a term an unfiltered query for ``n`` results reads first."""
    return max(PRUNE_MIN, PRUNE_PER_RESULT * n)


def rescore_count(n: int) -> int:
    """Chunks scored exactly when a list is cut, for ``n`` results."""
    return max(RESCORE_MIN, RESCORE_PER_RESULT * n)


def _arrays(lists: Sequence[tuple[int, Any]], total: int) -> list[tuple[float, Any]]:
    """``(idf, postings)`` of each list ``(df, packed postings)``."""
    return [(idf(total, df), np.frombuffer(blob, dtype=LIST_DTYPE)) for df, blob in lists]


def _size(arrays: Sequence[tuple[float, Any]], total: int) -> int:
    """Scores to hold: one per chunk (more if a list names more chunks than ``total``)."""
    return max([total, *(int(p["ord"].max()) + 1 for _, p in arrays if len(p))])


def _add(arrays: Sequence[tuple[float, Any]], size: int) -> Scores:
    scores = np.zeros(size, dtype=np.float64)
    for weight, postings in arrays:
        scores[postings["ord"]] += weight * postings["impact"].astype(np.float64)
    return scores


def score_lists(lists: Sequence[tuple[int, Any]], total: int) -> Scores:
    """The BM25 score of every chunk (by ord) from the lists ``(df, packed postings)`` of the
    query's terms, in a version of ``total`` chunks."""
    arrays = _arrays(lists, total)
    return _add(arrays, _size(arrays, total))


def _ranked(scores: Scores, among: np.ndarray[Any, Any] | None, count: int) -> np.ndarray[Any, Any]:
    """The ``count`` best of the ords ``among`` (None: every chunk with a score) by score,
    then ord (the key's order)."""
    if among is None:
        positive = int(np.count_nonzero(scores))
        if count < positive and len(scores) < 4 * positive:  # most chunks scored: no subset
            kth = np.partition(scores, len(scores) - count)[len(scores) - count]
            above = np.flatnonzero(scores > kth)
            tied = np.flatnonzero(scores == kth)[: count - len(above)]  # the smallest ords
            among = np.concatenate([above, tied])
            best: np.ndarray[Any, Any] = among[np.lexsort((among, -scores[among]))]
            return best
        among = np.flatnonzero(scores)
    picked = scores[among]
    if len(among) > count:
        kth = np.partition(picked, len(picked) - count)[len(picked) - count]
        above, tied = among[picked > kth], among[picked == kth]
        need = count - len(above)  # from the ties with the last one: the smallest ords
        if len(tied) > need:
            tied = np.partition(tied, need - 1)[:need]
        among = np.concatenate([above, tied])
        picked = scores[among]
    out: np.ndarray[Any, Any] = among[np.lexsort((among, -picked))][:count]
    return out


async def _keys(
    reader: Reader, org_id: str, where: str, params: list[Any], ords: Sequence[int]
) -> dict[int, int]:
    """``ord -> key`` of those of ``ords`` whose chunk is the organisation's and passes the
    filters (``where``, on the chunks ``c``: read only if there are filters)."""
    ns = reader.ns
    join = f" JOIN {ns}.chunks c ON c.key = o.key" if where else ""
    out: dict[int, int] = {}
    for i in range(0, len(ords), _IN):
        ords_in, args = reader.ords_in(ords[i : i + _IN])
        rows = await reader.db.fetchall(
            f"SELECT o.ord, o.key FROM {ns}.bm25_chunks o{join}"
            f" WHERE {ords_in} AND o.org_id = ?{where}",
            [*args, org_id, *params],
        )
        out.update((int(r[0]), int(r[1])) for r in rows)
    return out


async def _top(
    reader: Reader,
    org_id: str,
    where: str,
    params: list[Any],
    scores: Scores,
    n: int,
    meta: ListsMeta | None,
) -> list[tuple[int, float]]:
    """The ``n`` best ``(key, score)`` among the organisation's chunks that pass the filters.

    Without filters, in a version whose chunks are all the organisation's (``meta``), the keys
    come from ``meta``. Otherwise the best chunks are checked in SQL in growing batches; when
    the share that passes says more than ``VERIFY_LIMIT`` would have to be checked (a
    selective filter), the chunks that pass are read instead and the other scores ignored."""
    if not where and meta is not None and len(meta.keys) >= len(scores):
        if org_id not in meta.orgs:
            return []
        if len(meta.orgs) == 1:
            return [(int(meta.keys[o]), float(scores[o])) for o in _ranked(scores, None, n)]
    touched = np.flatnonzero(scores)
    out: list[tuple[int, float]] = []
    done = 0
    while done < len(touched):
        want = n if done == 0 else round(done + (n - len(out)) * 2 * done / max(len(out), 1))
        if want > VERIFY_LIMIT:
            break
        order = _ranked(scores, touched, want)[done:].tolist()
        keys = await _keys(reader, org_id, where, params, order)
        out += [(keys[o], float(scores[o])) for o in order if o in keys]
        if len(out) >= n:
            return out[:n]
        done += len(order)
    if done >= len(touched):
        return out
    rows = await reader.db.fetchall(
        f"SELECT o.ord, o.key FROM {reader.ns}.chunks c JOIN {reader.ns}.bm25_chunks o"
        f" ON o.key = c.key WHERE c.org_id = ?{where}",
        [org_id, *params],
    )
    allowed = {int(r[0]): int(r[1]) for r in rows}
    among = np.fromiter(allowed, dtype=np.int64, count=len(allowed))
    among = among[among < len(scores)]
    among = among[scores[among] > 0]
    return [(allowed[o], float(scores[o])) for o in _ranked(scores, among, n).tolist()]


async def _read(reader: Reader, terms: Sequence[str], limit: int | None) -> Lists:
    """The lists of ``terms`` (those in the version), each its first ``limit`` postings (the
    long ones kept by the reader's cache)."""
    cache = reader.cache
    found: Lists = {}
    for term in terms:
        kept = cache.get_list(reader.version, term, limit) if cache else None
        if kept is not None:
            found[term] = kept
    missing = [t for t in terms if t not in found]
    if not missing:
        return found
    marks = ", ".join("?" * len(missing))
    column = "substr(postings, 1, CAST(? AS INTEGER))" if limit is not None else "postings"
    # At most 2**31 - 1 bytes: ``substr`` takes a 32-bit length (SQLite returns nothing past).
    args: list[Any] = [] if limit is None else [min(LIST_DTYPE.itemsize * limit, 2**31 - 1)]
    rows = await reader.fetch(
        f"SELECT term, df, {column} FROM {reader.ns}.bm25_lists WHERE term IN ({marks})",
        [*args, *missing],
    )
    for term, df, postings in rows:
        if postings:
            found[term] = (int(df), postings)
            if cache:
                cache.keep_list(reader.version, term, limit, found[term])
    return {t: found[t] for t in terms if t in found}  # the query's order: the same sums


async def lists_search(
    reader: Reader,
    org_id: str,
    terms: Sequence[str],
    n: int,
    where: str,
    params: list[Any],
    *,
    total: int,
    avgdl: float,
    meta: ListsMeta | None = None,
) -> list[tuple[int, float]]:
    """Top ``n`` ``(key, BM25)`` of the organisation's chunks for the query's ``terms``,
    ``where``/``params`` the filters' SQL (``filter_sql``), in a version of ``total`` chunks
    of average length ``avgdl``, with its ``meta`` if known (see the module docstring)."""
    limit = None if where else prune_limit(n)
    lists = await _read(reader, terms, limit)
    if not lists:
        return []
    cut = [t for t, (df, _) in lists.items() if limit is not None and df > limit]
    if cut:
        found = await _pruned(reader, org_id, lists, cut, n, total=total, avgdl=avgdl)
        if found is not None:
            return found
        lists |= await _read(reader, cut, None)
    scores = score_lists(list(lists.values()), total)
    return await _top(reader, org_id, where, params, scores, n, meta)


async def _pruned(
    reader: Reader,
    org_id: str,
    lists: Lists,
    cut: list[str],
    n: int,
    *,
    total: int,
    avgdl: float,
) -> list[tuple[int, float]] | None:
    """The exact top ``n`` from the prefixes of the ``cut`` lists (the other lists whole), or
    None when the safe stop cannot vouch for it (see the module docstring)."""
    kept = _arrays([lists[t] for t in lists if t not in cut], total)
    prefixes = _arrays([lists[t] for t in cut], total)
    size = _size(kept + prefixes, total)
    whole = _add(kept, size)  # the terms read whole
    scores = whole + _add(prefixes, size)
    # No posting left out of a cut list has a higher impact than the last one read.
    left_out = sum(weight * float(postings["impact"][-1]) for weight, postings in prefixes)
    weights = {t: weight for t, (weight, _) in zip(cut, prefixes, strict=True)}
    best = _ranked(scores, None, rescore_count(n) + 1).tolist()
    outside = float(scores[best[-1]]) if len(best) > rescore_count(n) else 0.0
    best = best[: rescore_count(n)]
    ns = reader.ns
    lookups = ", ".join(
        f"(SELECT p.tf FROM {ns}.postings p WHERE p.term = ? AND p.chunk = o.key)" for _ in cut
    )
    exact: dict[int, tuple[int, float]] = {}
    for i in range(0, len(best), _IN):
        ords_in, args = reader.ords_in(best[i : i + _IN])
        rows = await reader.db.fetchall(
            f"SELECT o.ord, o.key, o.length, {lookups} FROM {ns}.bm25_chunks o"
            f" WHERE {ords_in} AND o.org_id = ?",
            [*cut, *args, org_id],
        )
        for o, key, length, *tfs in rows:
            score = float(whole[o])
            for term, tf in zip(cut, tfs, strict=True):
                if tf:
                    score += weights[term] * float(np.float32(impact(tf, length, avgdl)))
            exact[int(o)] = (int(key), score)
    if len(exact) < n:
        return None
    top = sorted(exact, key=lambda o: (-exact[o][1], o))[:n]
    if exact[top[-1]][1] <= outside + left_out:
        return None
    return [exact[o] for o in top]


async def postings_search(
    db: Executor,
    ns: str,
    org_id: str,
    terms: Sequence[str],
    n: int,
    where: str,
    params: list[Any],
    *,
    total: int,
    avgdl: float,
    float_cast: str,
) -> list[tuple[int, float]]:
    """``lists_search`` for a version without lists: its postings scored in SQL
    (``bm25_sql``), exactly."""
    marks = ", ".join("?" * len(terms))
    rows = await db.fetchall(f"SELECT term, df FROM {ns}.terms WHERE term IN ({marks})", terms)
    df = {r[0]: int(r[1]) for r in rows}
    if not df:
        return []
    args: list[Any] = []
    for term, count in df.items():
        args += [term, idf(total, count)]
    args += [avgdl, org_id, *params, n]
    found = await db.fetchall(bm25_sql(ns, len(df), where, float_cast), args)
    return [(int(r[0]), float(r[1])) for r in found]
