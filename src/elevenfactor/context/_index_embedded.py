"""The embedded retrieval backend: files in a folder, no server.

Each index is a folder ``<root>/<index id>/``; each version of it two files: ``v<N>.db``, a
SQLite database with the version's documents, chunks (vectors as float32 blobs), BM25
postings and lists (``_index_bm25``), and ``v<N>.usearch``, an HNSW index (cosine) over its
vectors, written once when the version is finalised (to a temporary name, then renamed) and
memory-mapped read-only for queries, so a query touches only the pages it visits and many
processes share them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from elevenfactor.context._embed_onnx import prepare_cxx_runtime
from elevenfactor.context._index_sql import Scored, SqlBackend, filter_sql, safe_id
from elevenfactor.errors import ContextError
from elevenfactor.store import Store, open_store

__all__ = ["EmbeddedBackend"]

CONNECTIVITY = 16
EXPANSION_ADD = 64
EXPANSION_SEARCH = 256
"""HNSW parameters: graph degree, candidates while building and while searching (at least
the number of results asked)."""

_DDL = (
    "CREATE TABLE IF NOT EXISTS docs (path TEXT PRIMARY KEY, content_hash TEXT NOT NULL,"
    " title TEXT, metadata TEXT NOT NULL, bytes INTEGER NOT NULL, chunks INTEGER NOT NULL,"
    " org_id TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS doc_meta (path TEXT NOT NULL, name TEXT NOT NULL,"
    " value TEXT NOT NULL, PRIMARY KEY (name, value, path)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS chunks (key INTEGER PRIMARY KEY, chunk_id TEXT NOT NULL,"
    " org_id TEXT NOT NULL, doc_path TEXT NOT NULL, position INTEGER NOT NULL,"
    " heading_path TEXT NOT NULL, text TEXT NOT NULL, length INTEGER NOT NULL,"
    " embed_hash TEXT NOT NULL, embedding BLOB NOT NULL)",
    "CREATE INDEX IF NOT EXISTS chunks_doc ON chunks (doc_path)",
    "CREATE INDEX IF NOT EXISTS chunks_hash ON chunks (embed_hash)",
    "CREATE TABLE IF NOT EXISTS postings (term TEXT NOT NULL, chunk INTEGER NOT NULL,"
    " tf INTEGER NOT NULL, PRIMARY KEY (term, chunk)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS terms (term TEXT PRIMARY KEY, df INTEGER NOT NULL) WITHOUT ROWID",
)
_LISTS = (
    "CREATE TABLE IF NOT EXISTS {ns}.bm25_chunks (ord INTEGER PRIMARY KEY,"
    " key INTEGER NOT NULL UNIQUE, org_id TEXT NOT NULL, length INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS {ns}.bm25_lists (term TEXT PRIMARY KEY, df INTEGER NOT NULL,"
    " postings BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS {ns}.bm25_meta (keys BLOB NOT NULL, orgs TEXT NOT NULL)",
)
_COPY = (
    "INSERT INTO main.docs SELECT * FROM src.docs WHERE path IN ({marks})",
    "INSERT INTO main.doc_meta SELECT * FROM src.doc_meta WHERE path IN ({marks})",
    "INSERT INTO main.chunks SELECT * FROM src.chunks WHERE doc_path IN ({marks})",
    "INSERT INTO main.postings SELECT p.* FROM src.postings p JOIN src.chunks c"
    " ON c.key = p.chunk WHERE c.doc_path IN ({marks})",
)


class EmbeddedBackend(SqlBackend):
    """Indexes as SQLite + usearch files under ``root``."""

    kind = "embedded"
    lists_ddl = _LISTS

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = root
        self.location = str(root)
        self._stores: dict[tuple[str, int], Store] = {}
        self._views: dict[tuple[str, int], Any] = {}

    def _folder(self, index_id: str) -> Path:
        return self.root / safe_id(index_id)

    def _paths(self, index_id: str, version: int) -> tuple[Path, Path]:
        folder = self._folder(index_id)
        return folder / f"v{version}.db", folder / f"v{version}.usearch"

    def _ns(self, index_id: str, version: int) -> str:
        return "main"

    async def _db(self, index_id: str, version: int) -> Store:
        key = (index_id, version)
        store = self._stores.get(key)
        if store is None:
            path, _ = self._paths(index_id, version)
            if not path.exists():
                raise ContextError(
                    f"the data of version {version} of index {index_id} is missing ({path})",
                    hint="rebuild the index with `elevenfactor index build NAME`",
                )
            store = await open_store(f"sqlite:///{path}")
            self._stores[key] = store
        return store

    def _vec_param(self, vector: np.ndarray[Any, Any]) -> Any:
        return np.ascontiguousarray(vector, dtype=np.float32).tobytes()

    def _vec_value(self, value: Any) -> np.ndarray[Any, Any]:
        return np.frombuffer(value, dtype=np.float32)

    async def prepare(self, index_id: str, version: int, dim: int) -> None:
        path, _ = self._paths(index_id, version)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(exist_ok=True)
        db = await self._db(index_id, version)
        for statement in _DDL:
            await db.execute(statement)

    async def copy_documents(self, index_id: str, src: int, dst: int, paths: Sequence[str]) -> int:
        if not paths:
            return 0
        src_path, _ = self._paths(index_id, src)
        db = await self._db(index_id, dst)
        await db.execute("ATTACH DATABASE ? AS src", (str(src_path),))
        try:
            copied = 0
            async with db.transaction() as tx:
                for i in range(0, len(paths), 400):
                    part = list(paths[i : i + 400])
                    marks = ", ".join("?" * len(part))
                    for statement in _COPY:
                        await tx.execute(statement.format(marks=marks), part)
                    row = await tx.fetchone(
                        f"SELECT COUNT(*) FROM main.chunks WHERE doc_path IN ({marks})", part
                    )
                    copied += int(row[0]) if row else 0
        finally:
            await db.execute("DETACH DATABASE src")
        return copied

    async def _build_ann(self, index_id: str, version: int, dim: int) -> None:
        prepare_cxx_runtime()  # before usearch, or onnxruntime cannot load
        from usearch.index import Index

        db = await self._db(index_id, version)
        _, ann_path = self._paths(index_id, version)
        rows = await db.fetchall("SELECT key, embedding FROM chunks ORDER BY key")
        index = Index(
            ndim=dim,
            metric="cos",
            dtype="f32",
            connectivity=CONNECTIVITY,
            expansion_add=EXPANSION_ADD,
            expansion_search=EXPANSION_SEARCH,
        )
        if rows:
            keys = np.fromiter((r[0] for r in rows), dtype=np.uint64, count=len(rows))
            vectors = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32)
            del rows
            await asyncio.to_thread(index.add, keys, vectors.reshape(len(keys), dim))
        tmp = ann_path.with_suffix(".usearch.tmp")
        await asyncio.to_thread(index.save, str(tmp))
        os.replace(tmp, ann_path)
        self._views.pop((index_id, version), None)
        await db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def _view(self, index_id: str, version: int) -> Any:
        key = (index_id, version)
        view = self._views.get(key)
        if view is None:
            prepare_cxx_runtime()  # before usearch, or onnxruntime cannot load
            from usearch.index import Index

            _, ann_path = self._paths(index_id, version)
            if not ann_path.exists():
                raise ContextError(
                    f"the vector index of version {version} of index {index_id} is missing"
                    f" ({ann_path})",
                    hint="rebuild the index with `elevenfactor index build NAME`",
                )
            view = Index.restore(str(ann_path), view=True)
            self._views[key] = view
        return view

    async def _ann(
        self,
        index_id: str,
        version: int,
        org_id: str,
        vector: np.ndarray[Any, Any],
        count: int,
        filters: Mapping[str, str],
    ) -> Scored:
        view = self._view(index_id, version)
        if len(view) == 0:
            return []
        view.expansion_search = max(EXPANSION_SEARCH, count)
        found = view.search(np.asarray(vector, dtype=np.float32), count, threads=1)
        hits = [(int(k), 1.0 - float(d)) for k, d in zip(found.keys, found.distances, strict=True)]
        if not filters:
            return hits
        # Keep the candidates that pass the filters (and belong to the organisation).
        db = await self._db(index_id, version)
        where, params = filter_sql("main", filters)
        keys = [k for k, _ in hits]
        allowed: set[int] = set()
        for i in range(0, len(keys), 500):
            part = keys[i : i + 500]
            marks = ", ".join("?" * len(part))
            rows = await db.fetchall(
                f"SELECT c.key FROM chunks c WHERE c.org_id = ? AND c.key IN ({marks}){where}",
                [org_id, *part, *params],
            )
            allowed.update(int(r[0]) for r in rows)
        return [(k, s) for k, s in hits if k in allowed]

    async def _exact(
        self,
        index_id: str,
        version: int,
        org_id: str,
        vector: np.ndarray[Any, Any],
        count: int,
        filters: Mapping[str, str],
    ) -> Scored:
        db = await self._db(index_id, version)
        where, params = filter_sql("main", filters)
        rows = await db.fetchall(
            f"SELECT c.key, c.embedding FROM chunks c WHERE c.org_id = ?{where}",
            [org_id, *params],
        )
        if not rows:
            return []
        matrix = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32)
        sims = matrix.reshape(len(rows), -1) @ np.asarray(vector, dtype=np.float32)
        top = np.argsort(-sims, kind="stable")[:count]
        return [(int(rows[i][0]), float(sims[i])) for i in top]

    async def _forget(self, index_id: str, version: int | None = None) -> None:
        for key in [k for k in self._stores if k[0] == index_id and version in (None, k[1])]:
            await self._stores.pop(key).close()
        for key in [k for k in self._views if k[0] == index_id and version in (None, k[1])]:
            del self._views[key]
        self._cache.forget(index_id, version)

    async def drop_version(self, index_id: str, version: int) -> None:
        await self._forget(index_id, version)
        db_path, ann_path = self._paths(index_id, version)
        for path in (
            ann_path,
            ann_path.with_suffix(".usearch.tmp"),
            db_path,
            Path(f"{db_path}-wal"),
            Path(f"{db_path}-shm"),
        ):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    async def drop_index(self, index_id: str) -> None:
        await self._forget(index_id)
        shutil.rmtree(self._folder(index_id), ignore_errors=True)

    async def close(self) -> None:
        for store in self._stores.values():
            await store.close()
        self._stores.clear()
        self._views.clear()
        self._cache.clear()
