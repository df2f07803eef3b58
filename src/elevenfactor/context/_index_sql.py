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
  version is finalised.

Subclasses say where a version's tables are (``_db``, ``_ns``), how a vector is stored, and
how the approximate-nearest-neighbour search runs.
"""

from __future__ import annotations

import json
import math
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from elevenfactor.context._bm25 import bm25_sql, idf, query_terms, term_frequencies
from elevenfactor.context._chunk import Chunk
from elevenfactor.context._embedder import Embedding
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


@dataclass(frozen=True, slots=True)
class ChunkRow:
    """A chunk as read back for a hit."""

    key: int
    chunk_id: str
    document: str
    position: int
    heading_path: tuple[str, ...]
    text: str
    metadata: dict[str, Any]


COLUMNS = {
    "doc_meta": ("path", "name", "value"),
    "chunks": (
        "key", "chunk_id", "org_id", "doc_path", "position", "heading_path", "text", "length",
        "embed_hash", "embedding",
    ),
    "postings": ("term", "chunk", "tf"),
}  # fmt: skip
"""The columns written by ``_insert``, in order."""


def filter_sql(ns: str, filters: Mapping[str, str]) -> tuple[str, list[Any]]:
    """``AND ...`` clauses on chunks ``c`` for metadata filters: ``path`` is a prefix of the
    document's path; any other key matches a metadata value (or an item of a list value)."""
    sql = ""
    params: list[Any] = []
    for key, value in sorted(filters.items()):
        if key == "path":
            sql += " AND substr(c.doc_path, 1, ?) = ?"
            params += [len(value), value]
        else:
            sql += (
                f" AND c.doc_path IN (SELECT m.path FROM {ns}.doc_meta m"
                " WHERE m.name = ? AND m.value = ?)"
            )
            params += [key, value]
    return sql, params


def _meta_rows(doc: Document) -> list[tuple[str, str, str]]:
    rows: set[tuple[str, str, str]] = set()
    for name, value in doc.metadata.items():
        for item in value if isinstance(value, list) else [value]:
            rows.add((doc.path, name, str(item)))
    return sorted(rows)


class SqlBackend(ABC):
    """The shared half of a backend; see the module docstring."""

    kind: ClassVar[str]
    float_cast: ClassVar[str] = "REAL"
    vec_sql: ClassVar[str] = "?"
    """How a vector parameter appears in SQL."""

    location: str

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
                docs.append(
                    (
                        doc.path,
                        doc.content_hash,
                        doc.title,
                        json.dumps(doc.metadata, sort_keys=True),
                        doc.size,
                        len(chunks),
                        org_id,
                    )
                )
                meta += _meta_rows(doc)
                for chunk, vector in zip(chunks, vectors, strict=True):
                    tf, length = term_frequencies(chunk.embed_text)
                    rows.append(
                        (
                            chunk.key,
                            chunk.id,
                            org_id,
                            doc.path,
                            chunk.position,
                            json.dumps(list(chunk.heading_path)),
                            chunk.text,
                            length,
                            chunk.embed_hash,
                            self._vec_param(vector),
                        )
                    )
                    postings += [(t, chunk.key, n) for t, n in tf.items()]
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
        """Compute document frequencies and build the vector index; return the version's
        counts (documents, chunks, total_terms). Safe to run again."""
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
        await self._build_ann(index_id, version, dim)
        return {
            "documents": int(docs[0]) if docs else 0,
            "chunks": int(row[0]) if row else 0,
            "total_terms": int(row[1]) if row else 0,
        }

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
    ) -> Scored:
        """Top ``n`` ``(key, BM25)`` of the organisation's chunks matching ``filters``."""
        terms = query_terms(query)[:MAX_QUERY_TERMS]
        if not terms or total == 0:
            return []
        db = await self._db(index_id, version)
        ns = self._ns(index_id, version)
        marks = ", ".join("?" * len(terms))
        rows = await db.fetchall(f"SELECT term, df FROM {ns}.terms WHERE term IN ({marks})", terms)
        df = {r[0]: int(r[1]) for r in rows}
        if not df:
            return []
        where, params = filter_sql(ns, filters)
        sql = bm25_sql(ns, len(df), where, self.float_cast)
        args: list[Any] = []
        for term, count in df.items():
            args += [term, idf(total, count)]
        args += [total_terms / total, org_id, *params, n]
        found = await db.fetchall(sql, args)
        return [(int(r[0]), float(r[1])) for r in found]

    async def fetch_chunks(
        self, index_id: str, version: int, org_id: str, keys: Sequence[int]
    ) -> dict[int, ChunkRow]:
        """The organisation's chunks with these keys (others are not returned)."""
        if not keys:
            return {}
        db = await self._db(index_id, version)
        ns = self._ns(index_id, version)
        marks = ", ".join("?" * len(keys))
        rows = await db.fetchall(
            "SELECT c.key, c.chunk_id, c.doc_path, c.position, c.heading_path, c.text,"
            f" d.metadata FROM {ns}.chunks c JOIN {ns}.docs d ON d.path = c.doc_path"
            f" WHERE c.org_id = ? AND c.key IN ({marks})",
            [org_id, *keys],
        )
        return {
            int(r[0]): ChunkRow(
                int(r[0]),
                r[1],
                r[2],
                int(r[3]),
                tuple(json.loads(r[4])),
                r[5],
                json.loads(r[6]),
            )
            for r in rows
        }
