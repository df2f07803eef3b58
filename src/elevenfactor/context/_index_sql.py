"""What both retrieval backends share: the tables of one index version, written and read with
the same SQL on SQLite and PostgreSQL.

Each version of an index is a namespace of its own (its own SQLite file in the embedded
backend, its own schema in PostgreSQL) holding:

- ``docs``: each document's path, content hash, metadata (JSON), size and chunk count;
- ``doc_meta``: ``(path, name, value)`` per metadata value (one row per list item): what
  ``key=value`` filters match;
- ``chunks``: the chunks (key, stable id, organisation, document, position, heading path,
  text, BM25 length, hash of the embedded text, vector);
- ``postings``: ``(term, chunk, tf)``, and ``terms``: ``(term, df)`` filled in when the
  version is finalised;
- ``bm25_chunks`` and ``bm25_lists``: the postings as impact-ordered lists, what BM25 queries
  read (``_index_bm25``), also written when the version is finalised. A version written before
  them (``bm25_format`` 0 in the registry) is scored from ``postings`` by ``bm25_sql``.

Subclasses say where a version's tables are (``_db``, ``_ns``), how a vector is stored, and
how the approximate-nearest-neighbour search runs.
"""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from elevenfactor.context._bm25 import query_terms
from elevenfactor.context._chunk import Chunk
from elevenfactor.context._embedder import Embedding
from elevenfactor.context._index_bm25 import (
    Fetch,
    Reader,
    in_list,
    lists_search,
    postings_search,
)
from elevenfactor.context._index_lists import LISTS_FORMAT, VersionCache, build_lists
from elevenfactor.context._index_rows import ChunkRow, chunk_row, document_rows, filter_sql
from elevenfactor.context._ingest import Document
from elevenfactor.store import Executor, Store

__all__ = ["EXACT_LIMIT", "ChunkRow", "SqlBackend", "filter_sql", "safe_id"]

EXACT_LIMIT = 5000
"""A filtered vector search over at most this many chunks is exact (a scan of those); over
more, the approximate index is asked for more candidates and they are filtered."""

MAX_QUERY_TERMS = 256
"""A query's first distinct terms that BM25 scores (its SQL takes two parameters per term)."""

Scored = list[tuple[int, float]]
_ID = re.compile(r"ri_[0-9a-f]{16}")


def safe_id(index_id: str) -> str:
    """``index_id`` if it has the registry's shape (it becomes a schema or folder name)."""
    if not _ID.fullmatch(index_id):
        raise ValueError(f"not an index id: {index_id!r}")
    return index_id


COLUMNS = {
    "doc_meta": ("path", "name", "value"),
    "chunks": (
        "key", "chunk_id", "org_id", "doc_path", "position", "heading_path", "text", "length",
        "embed_hash", "embedding",
    ),
    "postings": ("term", "chunk", "tf"),
    "bm25_chunks": ("ord", "key", "org_id", "length"),
    "bm25_lists": ("term", "df", "postings"),
    "bm25_meta": ("keys", "orgs"),
}  # fmt: skip
"""The columns written by ``_insert``, in order."""


class SqlBackend(ABC):
    """The shared half of a backend; see the module docstring."""

    kind: ClassVar[str]
    float_cast: ClassVar[str] = "REAL"
    vec_sql: ClassVar[str] = "?"
    """How a vector parameter appears in SQL."""
    array_params: ClassVar[bool] = False
    """Whether ``= ANY(?)`` takes a list parameter (PostgreSQL) instead of ``IN (?, ...)``."""
    lists_ddl: ClassVar[tuple[str, ...]] = ()
    """The statements creating ``{ns}.bm25_chunks`` and ``{ns}.bm25_lists`` if they do not
    exist."""

    location: str

    def __init__(self) -> None:
        self._cache = VersionCache()

    @abstractmethod
    async def _db(self, index_id: str, version: int) -> Store:
        """Where the version's tables are (created by ``prepare``)."""

    @abstractmethod
    def _ns(self, index_id: str, version: int) -> str:
        """The namespace (schema) of the version's tables in SQL."""

    @abstractmethod
    def _vec_param(self, vector: np.ndarray[Any, Any]) -> Any:
        """A vector as a parameter."""

    @abstractmethod
    def _vec_value(self, value: Any) -> np.ndarray[Any, Any]:
        """A stored vector as float32."""

    @abstractmethod
    async def prepare(self, index_id: str, version: int, dim: int) -> None:
        """Create the version's tables if they do not exist (a resumed build keeps them)."""

    @abstractmethod
    async def copy_documents(self, index_id: str, src: int, dst: int, paths: Sequence[str]) -> int:
        """Copy documents, their chunks, vectors and postings from version ``src`` to ``dst``;
        return the chunks copied."""

    @abstractmethod
    async def _build_ann(self, index_id: str, version: int, dim: int) -> None:
        """Build the version's approximate-nearest-neighbour index."""

    @abstractmethod
    async def _ann(
        self,
        index_id: str,
        version: int,
        org_id: str,
        vector: np.ndarray[Any, Any],
        count: int,
        filters: Mapping[str, str],
    ) -> Scored:
        """Approximate top ``count`` ``(key, cosine)`` of the organisation's chunks."""

    @abstractmethod
    async def _exact(
        self,
        index_id: str,
        version: int,
        org_id: str,
        vector: np.ndarray[Any, Any],
        count: int,
        filters: Mapping[str, str],
    ) -> Scored:
        """Exact top ``count`` ``(key, cosine)`` of the organisation's chunks that match."""

    @abstractmethod
    async def drop_version(self, index_id: str, version: int) -> None:
        """Delete a version's data (nothing if it has none)."""

    @abstractmethod
    async def drop_index(self, index_id: str) -> None:
        """Delete every version's data of an index."""

    @abstractmethod
    async def close(self) -> None:
        """Release connections and open files."""

    # -- writing ------------------------------------------------------------------------------

    async def documents(self, index_id: str, version: int) -> dict[str, str]:
        """``path -> content hash`` of the documents written to a version."""
        db = await self._db(index_id, version)
        ns = self._ns(index_id, version)
        rows = await db.fetchall(f"SELECT path, content_hash FROM {ns}.docs")
        return {r[0]: r[1] for r in rows}

    async def drop_documents(self, index_id: str, version: int, paths: Sequence[str]) -> None:
        """Remove documents (and their chunks and postings) from a version being built."""
        if not paths:
            return
        db = await self._db(index_id, version)
        ns = self._ns(index_id, version)
        async with db.transaction() as tx:
            for path in paths:
                await tx.execute(
                    f"DELETE FROM {ns}.postings WHERE chunk IN"
                    f" (SELECT key FROM {ns}.chunks WHERE doc_path = ?)",
                    (path,),
                )
                for table, col in (("chunks", "doc_path"), ("doc_meta", "path"), ("docs", "path")):
                    await tx.execute(f"DELETE FROM {ns}.{table} WHERE {col} = ?", (path,))

    async def vectors_for(
        self, index_id: str, version: int, hashes: Sequence[str]
    ) -> dict[str, np.ndarray[Any, Any]]:
        """Vectors of a version's chunks by the hash of their embedded text."""
        db = await self._db(index_id, version)
        ns = self._ns(index_id, version)
        out: dict[str, np.ndarray[Any, Any]] = {}
        for i in range(0, len(hashes), 500):
            part = list(dict.fromkeys(hashes[i : i + 500]))
            marks = ", ".join("?" * len(part))
            rows = await db.fetchall(
                f"SELECT embed_hash, {self._vec_select()} FROM {ns}.chunks"
                f" WHERE embed_hash IN ({marks})",
                part,
            )
            for h, v in rows:
                out[h] = self._vec_value(v)
        return out

    def _vec_select(self) -> str:
        return "embedding"

    async def write_documents(
        self,
        index_id: str,
        version: int,
        org_id: str,
        items: Sequence[tuple[Document, Sequence[Chunk], Embedding]],
    ) -> list[str]:
        """Write documents with their chunks, vectors and postings in one transaction;
        documents already in the version are left alone. Returns the paths written."""
        db = await self._db(index_id, version)
        ns = self._ns(index_id, version)
        paths = [doc.path for doc, _, _ in items]
        docs: list[tuple[Any, ...]] = []
        meta: list[tuple[str, str, str]] = []
        rows: list[tuple[Any, ...]] = []
        postings: list[tuple[str, int, int]] = []
        async with db.transaction() as tx:
            present: set[str] = set()
            for i in range(0, len(paths), 500):
                part = paths[i : i + 500]
                marks = ", ".join("?" * len(part))
                found = await tx.fetchall(
                    f"SELECT path FROM {ns}.docs WHERE path IN ({marks})", part
                )
                present.update(r[0] for r in found)
            written = [p for p in paths if p not in present]
            for doc, chunks, vectors in items:
                if doc.path in present:
                    continue
                present.add(doc.path)  # a path twice in ``items``: the first one
                doc_row, doc_meta, chunk_rows, doc_postings = document_rows(
                    doc, chunks, vectors, org_id, self._vec_param
                )
                docs.append(doc_row)
                meta += doc_meta
                rows += chunk_rows
                postings += doc_postings
            if not docs:
                return []
            await tx.executemany(
                f"INSERT INTO {ns}.docs (path, content_hash, title, metadata, bytes, chunks,"
                " org_id) VALUES (?, ?, ?, ?, ?, ?, ?)",
                docs,
            )
            for table, values in (("doc_meta", meta), ("chunks", rows), ("postings", postings)):
                if values:
                    await self._insert(tx, ns, table, values)
        return list(dict.fromkeys(written))

    async def _insert(
        self, tx: Executor, ns: str, table: str, rows: Sequence[Sequence[Any]]
    ) -> None:
        """Insert ``rows`` (in the order of ``COLUMNS[table]``) into a version's table."""
        columns = COLUMNS[table]
        marks = ", ".join("?" * (len(columns) - 1))
        last = self.vec_sql if table == "chunks" else "?"
        await tx.executemany(
            f"INSERT INTO {ns}.{table} ({', '.join(columns)}) VALUES ({marks}, {last})", rows
        )

    async def finalize(self, index_id: str, version: int, dim: int) -> dict[str, int]:
        """Compute document frequencies and the BM25 lists, and build the vector index; return
        the version's counts (documents, chunks, total_terms) and its ``bm25_format``. Safe to
        run again."""
        db = await self._db(index_id, version)
        ns = self._ns(index_id, version)
        async with db.transaction() as tx:
            await tx.execute(f"DELETE FROM {ns}.terms")
            await tx.execute(
                f"INSERT INTO {ns}.terms (term, df)"
                f" SELECT term, COUNT(*) FROM {ns}.postings GROUP BY term"
            )
        row = await db.fetchone(f"SELECT COUNT(*), COALESCE(SUM(length), 0) FROM {ns}.chunks")
        docs = await db.fetchone(f"SELECT COUNT(*) FROM {ns}.docs")
        await self.build_bm25(index_id, version)
        await self._build_ann(index_id, version, dim)
        return {
            "documents": int(docs[0]) if docs else 0,
            "chunks": int(row[0]) if row else 0,
            "total_terms": int(row[1]) if row else 0,
            "bm25_format": LISTS_FORMAT,
        }

    async def build_bm25(self, index_id: str, version: int) -> int:
        """(Re)build a finalised version's BM25 lists from its postings, in one transaction
        (queries of a version already active keep scoring its postings until the registry says
        it has lists); return its new ``bm25_format``."""
        db = await self._db(index_id, version)
        async with db.transaction() as tx:
            await build_lists(self, tx, self._ns(index_id, version))
        self._cache.forget(index_id, version)
        return LISTS_FORMAT

    # -- reading ------------------------------------------------------------------------------

    async def vector_search(
        self,
        index_id: str,
        version: int,
        org_id: str,
        vector: np.ndarray[Any, Any],
        n: int,
        filters: Mapping[str, str],
        *,
        total: int,
    ) -> Scored:
        """Top ``n`` ``(key, cosine)`` of the organisation's chunks matching ``filters``."""
        if total == 0:
            return []
        if not filters:
            return await self._ann(index_id, version, org_id, vector, n, filters)
        db = await self._db(index_id, version)
        ns = self._ns(index_id, version)
        where, params = filter_sql(ns, filters)
        row = await db.fetchone(
            f"SELECT COUNT(*) FROM {ns}.chunks c WHERE c.org_id = ?{where}", [org_id, *params]
        )
        allowed = int(row[0]) if row else 0
        if allowed == 0:
            return []
        if allowed <= EXACT_LIMIT:
            return await self._exact(index_id, version, org_id, vector, n, filters)
        factor = min(50, 2 * math.ceil(total / allowed))
        found = await self._ann(index_id, version, org_id, vector, n * factor, filters)
        return found[:n]

    async def bm25_search(
        self,
        index_id: str,
        version: int,
        org_id: str,
        query: str,
        n: int,
        filters: Mapping[str, str],
        *,
        total: int,
        total_terms: int,
        lists: bool = True,
    ) -> Scored:
        """Top ``n`` ``(key, BM25)`` of the organisation's chunks matching ``filters``.

        ``lists``: the version has BM25 lists (``bm25_format`` 1), read as ``_index_bm25``
        says; else its postings are scored in SQL (``bm25_sql``), exactly and slowly."""
        terms = query_terms(query)[:MAX_QUERY_TERMS]
        if not terms or total == 0:
            return []
        db = await self._db(index_id, version)
        ns = self._ns(index_id, version)
        where, params = filter_sql(ns, filters)
        if lists:
            reader = Reader(
                db, ns, self._lists_fetch() or db.fetchall, self.array_params, self._cache,
                (index_id, version),
            )  # fmt: skip
            meta = None if filters else await self._cache.meta(index_id, version, db, ns)
            return await lists_search(
                reader, org_id, terms, n, where, params, total=total,
                avgdl=total_terms / total, meta=meta,
            )  # fmt: skip
        return await postings_search(
            db, ns, org_id, terms, n, where, params, total=total,
            avgdl=total_terms / total, float_cast=self.float_cast,
        )  # fmt: skip

    def _lists_fetch(self) -> Fetch | None:
        """How ``lists_search`` reads the lists (None: the version's ``fetchall``)."""
        return None

    async def fetch_chunks(
        self, index_id: str, version: int, org_id: str, keys: Sequence[int]
    ) -> dict[int, ChunkRow]:
        """The organisation's chunks with these keys (others are not returned)."""
        if not keys:
            return {}
        db = await self._db(index_id, version)
        ns = self._ns(index_id, version)
        keys_in, args = in_list("c.key", keys, "BIGINT", self.array_params)
        rows = await db.fetchall(
            "SELECT c.key, c.chunk_id, c.doc_path, c.position, c.heading_path, c.text,"
            f" d.metadata FROM {ns}.chunks c JOIN {ns}.docs d ON d.path = c.doc_path"
            f" WHERE c.org_id = ? AND {keys_in}",
            [org_id, *args],
        )
        return {int(r[0]): chunk_row(r) for r in rows}
