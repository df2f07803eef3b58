"""The BM25 lists of an index version: their layout, and how a finalised version gets them.

Scoring BM25 in SQL joins every posting of every query term to its chunk's length and groups
them, which at 100k chunks costs tens of milliseconds (a term in most chunks has most chunks as
postings). So when a version is finalised its postings are also laid out for reading, in three
tables beside them (``_index_bm25`` reads them):

- ``bm25_chunks``: ``(ord, key, org_id, length)``, each chunk's position among the version's
  chunks in key order, so scores can be added into a plain array of one float per chunk;
- ``bm25_lists``: ``(term, df, postings)``, each term's postings packed in one value: pairs of
  little-endian ``(ord int32, impact float32)``, the highest impact first (ties by ord). The
  impact is the query-independent part of BM25 (``_bm25.impact``); a term adds ``idf *
  impact`` to a chunk's score. It depends on the version's average chunk length, so the lists
  are built anew with each version (from its postings: nothing is re-embedded);
- ``bm25_meta``: one row, the chunks' keys in ord order (little-endian int64) and how many
  chunks each organisation has (JSON): what a process reads once per version (``ListsMeta``)
  to turn the best ords into keys without a query.

A version's tables never change once it is published, so ``ListsMeta`` may be kept for as long
as the version lives.
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from elevenfactor.context._bm25 import impact
from elevenfactor.store import Executor

if TYPE_CHECKING:
    from elevenfactor.context._index_sql import SqlBackend

__all__ = [
    "LISTS_FORMAT",
    "LIST_DTYPE",
    "ListsMeta",
    "VersionCache",
    "build_lists",
    "pack_lists",
    "read_meta",
]

LISTS_FORMAT = 1
"""``retrieval_versions.bm25_format`` of a version with these lists (0: postings only, scored
by ``bm25_sql``)."""
LIST_DTYPE = np.dtype([("ord", "<i4"), ("impact", "<f4")])
_BATCH = 200_000
"""Postings read at a time while the lists are built."""
LIST_CACHE_MIN = 64 * 1024
LIST_CACHE_BYTES = 64 * 1024 * 1024
"""A backend keeps lists of at least ``LIST_CACHE_MIN`` bytes (8192 postings) it read, up to
``LIST_CACHE_BYTES`` in all (``VersionCache``)."""


@dataclass(frozen=True, slots=True)
class ListsMeta:
    """A version's chunk keys by ord, and its organisations with their numbers of chunks."""

    keys: np.ndarray[Any, np.dtype[np.int64]]
    orgs: dict[str, int]


def pack_lists(
    ords: np.ndarray[Any, Any], impacts: np.ndarray[Any, Any], starts: Sequence[int]
) -> list[bytes]:
    """The packed value of each term, from postings grouped by term (term ``i`` is
    ``[starts[i], starts[i + 1])``; the last ends at the arrays' end): highest impact first."""
    bounds = [*starts, len(ords)]
    group = np.zeros(len(ords), dtype=np.int64)
    group[np.asarray(bounds[1:-1], dtype=np.int64)] = 1
    group = np.cumsum(group)
    packed = np.empty(len(ords), dtype=LIST_DTYPE)
    packed["ord"] = ords
    packed["impact"] = impacts
    packed = packed[np.lexsort((packed["ord"], -packed["impact"], group))]
    return [packed[a:b].tobytes() for a, b in itertools.pairwise(bounds)]


async def build_lists(backend: SqlBackend, db: Executor, ns: str) -> None:
    """(Re)build the version's BM25 lists from its chunks, postings and terms, in the
    transaction ``db`` (so they exist only complete)."""
    for statement in backend.lists_ddl:
        await db.execute(statement.format(ns=ns))
    for table in ("bm25_chunks", "bm25_lists", "bm25_meta"):
        await db.execute(f"DELETE FROM {ns}.{table}")
    rows = await db.fetchall(f"SELECT key, org_id, length FROM {ns}.chunks ORDER BY key")
    if not rows:
        return
    await backend._insert(db, ns, "bm25_chunks", [(i, *r) for i, r in enumerate(rows)])
    keys = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    lengths = np.fromiter((r[2] for r in rows), dtype=np.float64, count=len(rows))
    orgs = Counter(r[1] for r in rows)
    del rows
    meta = (keys.astype("<i8").tobytes(), json.dumps(dict(orgs), sort_keys=True))
    await backend._insert(db, ns, "bm25_meta", [meta])
    avgdl = float(lengths.sum()) / len(keys) or 1.0  # as a query computes it
    # Terms in the database's own order, in batches of about ``_BATCH`` postings.
    terms = await db.fetchall(f"SELECT term, df FROM {ns}.terms ORDER BY term")
    start = 0
    while start < len(terms):
        end, size = start + 1, int(terms[start][1])
        while end < len(terms) and size + int(terms[end][1]) <= _BATCH:
            size += int(terms[end][1])
            end += 1
        found = await db.fetchall(
            f"SELECT term, chunk, tf FROM {ns}.postings WHERE term >= ? AND term <= ?"
            " ORDER BY term",
            (terms[start][0], terms[end - 1][0]),
        )
        start = end
        names = [r[0] for r in found]
        ords = np.searchsorted(keys, np.fromiter((r[1] for r in found), np.int64, len(found)))
        tf = np.fromiter((r[2] for r in found), dtype=np.float64, count=len(found))
        del found
        starts = [0] + [i for i in range(1, len(names)) if names[i] != names[i - 1]]
        blobs = pack_lists(ords, impact(tf, lengths[ords], avgdl), starts)
        ends = [*starts[1:], len(names)]
        values = [(names[a], b - a, blob) for a, b, blob in zip(starts, ends, blobs, strict=True)]
        await backend._insert(db, ns, "bm25_lists", values)


async def read_meta(db: Executor, ns: str) -> ListsMeta:
    """The version's ``bm25_meta`` (empty if it has no chunks)."""
    row = await db.fetchone(f"SELECT keys, orgs FROM {ns}.bm25_meta")
    if row is None:
        return ListsMeta(np.zeros(0, dtype=np.int64), {})
    keys: np.ndarray[Any, np.dtype[np.int64]] = np.frombuffer(row[0], dtype="<i8").astype(np.int64)
    return ListsMeta(keys, {str(k): int(v) for k, v in json.loads(row[1]).items()})


class VersionCache:
    """What a backend keeps of the versions it queried (a version never changes once
    published): each one's ``ListsMeta`` (8 bytes a chunk; at most ``versions`` of them, the
    oldest dropped first), and the long lists read lately (``LIST_CACHE_MIN`` bytes or more
    each, ``list_bytes`` in all, the least recently used dropped first): a term common enough
    to have a long list comes back in many queries, and reading its list is most of their
    cost (on PostgreSQL, fetching it from TOAST and sending it)."""

    def __init__(self, versions: int = 16, list_bytes: int = LIST_CACHE_BYTES) -> None:
        self.versions = versions
        self.list_bytes = list_bytes
        self._metas: dict[tuple[str, int], ListsMeta] = {}
        self._lists: dict[tuple[str, int, str, int | None], tuple[int, Any]] = {}
        self._bytes = 0

    async def meta(self, index_id: str, version: int, db: Executor, ns: str) -> ListsMeta:
        """The version's ``ListsMeta`` (read from ``db``, namespace ``ns``, the first time)."""
        key = (index_id, version)
        meta = self._metas.get(key)
        if meta is None:
            meta = self._metas[key] = await read_meta(db, ns)
            while len(self._metas) > self.versions:
                self._metas.pop(next(iter(self._metas)))
        return meta

    def get_list(
        self, version: tuple[str, int], term: str, limit: int | None
    ) -> tuple[int, Any] | None:
        """``(df, packed postings)`` of a term as read with ``limit``, if kept."""
        key = (*version, term, limit)
        found = self._lists.pop(key, None)
        if found is not None:
            self._lists[key] = found  # the most recently used, last
        return found

    def keep_list(
        self, version: tuple[str, int], term: str, limit: int | None, value: tuple[int, Any]
    ) -> None:
        """Keep a list just read, if it is long enough to be worth it."""
        size = len(value[1])
        if size < LIST_CACHE_MIN or size > self.list_bytes:
            return
        key = (*version, term, limit)
        old = self._lists.pop(key, None)  # read twice at once: kept once
        self._bytes += size - (len(old[1]) if old else 0)
        self._lists[key] = value
        while self._bytes > self.list_bytes:
            self._bytes -= len(self._lists.pop(next(iter(self._lists)))[1])

    def forget(self, index_id: str, version: int | None = None) -> None:
        """Drop what is kept of a version (None: of every version) of an index."""
        for key in [k for k in self._metas if k[0] == index_id and version in (None, k[1])]:
            del self._metas[key]
        for lkey in [k for k in self._lists if k[0] == index_id and version in (None, k[1])]:
            self._bytes -= len(self._lists.pop(lkey)[1])

    def clear(self) -> None:
        """Drop everything kept."""
        self._metas.clear()
        self._lists.clear()
        self._bytes = 0
