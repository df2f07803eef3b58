"""The PostgreSQL retrieval backend, on pgvector.

Each version of an index is a schema ``ef_rv_<index id>_v<N>`` holding the shared tables
(``_index_sql``), its vectors in a ``vector(dim)`` column with an HNSW index (cosine) built
when the version is finalised: building it once over the loaded rows is faster than growing it
row by row. Deleting a version drops its schema.

pgvector 0.6 filters the HNSW candidates after the scan, so a filtered search over many chunks
raises ``hnsw.ef_search`` with the number of candidates it needs; a filtered search over few
chunks (``EXACT_LIMIT``) scans them exactly. BM25 reads the version's lists (``_index_bm25``)
in binary.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping, Sequence
from typing import Any, cast

import numpy as np

from elevenfactor.config import mask_url
from elevenfactor.context._index_bm25 import Fetch
from elevenfactor.context._index_pg_copy import copy_binary
from elevenfactor.context._index_sql import COLUMNS, Scored, SqlBackend, filter_sql, safe_id
from elevenfactor.errors import ContextError
from elevenfactor.store import Executor, Row, Store, open_store
from elevenfactor.store._postgres import translate

__all__ = ["PgVectorBackend"]

HNSW_M = 16
HNSW_EF_CONSTRUCTION = 64
EF_SEARCH = 128
"""HNSW parameters: graph degree, candidates while building and while searching (at least
the number of results asked, at most 1000, pgvector's limit)."""

_TABLES = (
    "CREATE TABLE IF NOT EXISTS {ns}.docs (path TEXT PRIMARY KEY, content_hash TEXT NOT NULL,"
    " title TEXT, metadata TEXT NOT NULL, bytes BIGINT NOT NULL, chunks INTEGER NOT NULL,"
    " org_id TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS {ns}.doc_meta (path TEXT NOT NULL, name TEXT NOT NULL,"
    " value TEXT NOT NULL, PRIMARY KEY (name, value, path))",
    "CREATE TABLE IF NOT EXISTS {ns}.chunks (key BIGINT PRIMARY KEY, chunk_id TEXT NOT NULL,"
    " org_id TEXT NOT NULL, doc_path TEXT NOT NULL, position INTEGER NOT NULL,"
    " heading_path TEXT NOT NULL, text TEXT NOT NULL, length INTEGER NOT NULL,"
    " embed_hash TEXT NOT NULL, embedding vector({dim}) NOT NULL)",
    "CREATE INDEX IF NOT EXISTS chunks_doc ON {ns}.chunks (doc_path)",
    "CREATE INDEX IF NOT EXISTS chunks_hash ON {ns}.chunks (embed_hash)",
    "CREATE TABLE IF NOT EXISTS {ns}.postings (term TEXT NOT NULL, chunk BIGINT NOT NULL,"
    " tf INTEGER NOT NULL, PRIMARY KEY (term, chunk))",
    "CREATE TABLE IF NOT EXISTS {ns}.terms (term TEXT PRIMARY KEY, df INTEGER NOT NULL)",
)
_LISTS = (
    "CREATE TABLE IF NOT EXISTS {ns}.bm25_chunks (ord INTEGER PRIMARY KEY,"
    " key BIGINT NOT NULL UNIQUE, org_id TEXT NOT NULL, length INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS {ns}.bm25_lists (term TEXT PRIMARY KEY, df INTEGER NOT NULL,"
    " postings BYTEA NOT NULL)",
    # Stored uncompressed: ``substr`` of a pruned query then reads only the TOAST chunks of
    # the prefix it takes (and the lists, impacts in float32, do not compress anyway).
    "ALTER TABLE {ns}.bm25_lists ALTER COLUMN postings SET STORAGE EXTERNAL",
    "CREATE TABLE IF NOT EXISTS {ns}.bm25_meta (keys BYTEA NOT NULL, orgs TEXT NOT NULL)",
)
_TYPES = {
    "doc_meta": ("text", "text", "text"),
    "chunks": ("int8", "text", "text", "text", "int4", "text", "text", "int4", "text", "vector"),
    "postings": ("text", "int8", "int4"),
    "bm25_chunks": ("int4", "int8", "text", "int4"),
    "bm25_lists": ("text", "int4", "bytea"),
    "bm25_meta": ("bytea", "text"),
}
"""The type of each column ``_insert`` writes (``COPY`` in binary)."""
_COPY = (
    "INSERT INTO {dst}.docs SELECT * FROM {src}.docs WHERE path = ANY(?)",
    "INSERT INTO {dst}.doc_meta SELECT * FROM {src}.doc_meta WHERE path = ANY(?)",
    "INSERT INTO {dst}.chunks SELECT * FROM {src}.chunks WHERE doc_path = ANY(?)",
    "INSERT INTO {dst}.postings SELECT p.* FROM {src}.postings p JOIN {src}.chunks c"
    " ON c.key = p.chunk WHERE c.doc_path = ANY(?)",
)


class PgVectorBackend(SqlBackend):
    """Indexes as schemas of a PostgreSQL database with pgvector."""

    kind = "pgvector"
    float_cast = "DOUBLE PRECISION"
    array_params = True
    lists_ddl = _LISTS

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url
        self.location = mask_url(url)
        self._store: Store | None = None
        self._ef: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
        """``hnsw.ef_search`` as last set on each connection of the pool."""

    async def _open(self) -> Store:
        if self._store is None:
            store = await open_store(self.url)
            try:
                await store.execute("CREATE EXTENSION IF NOT EXISTS vector")
            except Exception as exc:
                await store.close()
                raise ContextError(
                    f"pgvector is not available in the database at {self.location}: {exc}",
                    hint="install pgvector there (or have an administrator run CREATE"
                    " EXTENSION vector), or unset ELEVENFACTOR_RETRIEVAL_URL for the embedded"
                    " backend",
                ) from None
            self._store = store
        return self._store

    async def _db(self, index_id: str, version: int) -> Store:
        return await self._open()

    def _ns(self, index_id: str, version: int) -> str:
        return f"ef_rv_{safe_id(index_id)}_v{int(version)}"

    def _vec_param(self, vector: np.ndarray[Any, Any]) -> Any:
        return np.asarray(vector, dtype=np.float32)  # written by ``COPY`` in binary

    @staticmethod
    def _literal(vector: np.ndarray[Any, Any]) -> str:
        """A vector as pgvector's text literal (for a query parameter)."""
        return "[" + ",".join(map(repr, np.asarray(vector, dtype=np.float32).tolist())) + "]"

    def _vec_value(self, value: Any) -> np.ndarray[Any, Any]:
        return np.array(str(value).strip("[]").split(","), dtype=np.float32)

    def _vec_select(self) -> str:
        return "embedding::text"

    async def documents(self, index_id: str, version: int) -> dict[str, str]:
        db = await self._open()
        ns = self._ns(index_id, version)
        if await db.fetchone("SELECT 1 FROM pg_namespace WHERE nspname = ?", (ns,)) is None:
            raise ContextError(
                f"the data of version {version} of index {index_id} is missing (schema {ns})",
                hint="rebuild the index with `elevenfactor index build NAME`",
            )
        return await super().documents(index_id, version)

    async def prepare(self, index_id: str, version: int, dim: int) -> None:
        db = await self._open()
        ns = self._ns(index_id, version)
        async with db.transaction() as tx:
            await tx.execute(f"CREATE SCHEMA IF NOT EXISTS {ns}")
            for statement in _TABLES:
                await tx.execute(statement.format(ns=ns, dim=int(dim)))

    async def copy_documents(self, index_id: str, src: int, dst: int, paths: Sequence[str]) -> int:
        if not paths:
            return 0
        db = await self._open()
        names = {"src": self._ns(index_id, src), "dst": self._ns(index_id, dst)}
        async with db.transaction() as tx:
            for statement in _COPY:
                await tx.execute(statement.format(**names), (list(paths),))
            row = await tx.fetchone(
                f"SELECT COUNT(*) FROM {names['dst']}.chunks WHERE doc_path = ANY(?)",
                (list(paths),),
            )
        return int(row[0]) if row else 0

    async def _insert(
        self, tx: Executor, ns: str, table: str, rows: Sequence[Sequence[Any]]
    ) -> None:
        if not rows:
            return
        conn = cast(Any, tx).conn  # the transaction's psycopg connection (PostgresStore)
        await copy_binary(conn, f"{ns}.{table}", COLUMNS[table], _TYPES[table], rows)

    def _lists_fetch(self) -> Fetch | None:
        return self._fetch_binary

    async def _fetch_binary(self, sql: str, params: Sequence[Any]) -> list[Row]:
        """Rows in binary: a list of postings arrives as its bytes, not as hex to decode."""
        store = cast(Any, await self._open())  # a PostgresStore: its pool
        async with store.pool.connection() as conn, conn.cursor(binary=True) as cur:
            await cur.execute(translate(sql), params)
            rows: list[Row] = await cur.fetchall()
        return rows

    async def build_bm25(self, index_id: str, version: int) -> int:
        out = await super().build_bm25(index_id, version)
        db = await self._open()
        for table in ("bm25_chunks", "bm25_lists"):
            await db.execute(f"ANALYZE {self._ns(index_id, version)}.{table}")
        return out

    async def _build_ann(self, index_id: str, version: int, dim: int) -> None:
        db = await self._open()
        ns = self._ns(index_id, version)
        async with db.transaction() as tx:
            await tx.execute("SET LOCAL maintenance_work_mem = '256MB'")
            await tx.execute(
                f"CREATE INDEX IF NOT EXISTS chunks_hnsw ON {ns}.chunks USING hnsw"
                f" (embedding vector_cosine_ops) WITH (m = {HNSW_M},"
                f" ef_construction = {HNSW_EF_CONSTRUCTION})"
            )
        for table in ("chunks", "postings", "terms", "doc_meta"):
            await db.execute(f"ANALYZE {ns}.{table}")

    async def _search(
        self,
        index_id: str,
        version: int,
        org_id: str,
        vector: np.ndarray[Any, Any],
        count: int,
        filters: Mapping[str, str],
        *,
        exact: bool,
    ) -> Scored:
        db = await self._open()
        ns = self._ns(index_id, version)
        where, params = filter_sql(ns, filters)
        # ``+ 0`` is not the indexed expression: the planner scans the matching rows exactly.
        order = (
            "(c.embedding <=> CAST(? AS vector)) + 0"
            if exact
            else ("c.embedding <=> CAST(? AS vector)")
        )
        q = self._literal(vector)
        sql = (
            f"SELECT c.key, 1 - (c.embedding <=> CAST(? AS vector)) FROM {ns}.chunks c"
            f" WHERE c.org_id = ?{where} ORDER BY {order} LIMIT ?"
        )
        async with cast(Any, db).pool.connection() as conn:  # a PostgresStore: its pool
            if not exact:
                # Set for the connection's session, once per value: a transaction to ``SET
                # LOCAL`` it would cost three more round trips per query (the connections
                # of this pool serve only this backend, whose every HNSW search sets it).
                ef = min(1000, max(EF_SEARCH, count))
                if self._ef.get(conn) != ef:
                    await conn.execute(f"SET hnsw.ef_search = {ef}")
                    self._ef[conn] = ef
            cur = await conn.execute(translate(sql), [q, org_id, *params, q, count])
            rows = await cur.fetchall()
        return [(int(r[0]), float(r[1])) for r in rows]

    async def _ann(
        self,
        index_id: str,
        version: int,
        org_id: str,
        vector: np.ndarray[Any, Any],
        count: int,
        filters: Mapping[str, str],
    ) -> Scored:
        return await self._search(index_id, version, org_id, vector, count, filters, exact=False)

    async def _exact(
        self,
        index_id: str,
        version: int,
        org_id: str,
        vector: np.ndarray[Any, Any],
        count: int,
        filters: Mapping[str, str],
    ) -> Scored:
        return await self._search(index_id, version, org_id, vector, count, filters, exact=True)

    async def drop_version(self, index_id: str, version: int) -> None:
        self._cache.forget(index_id, version)
        db = await self._open()
        await db.execute(f"DROP SCHEMA IF EXISTS {self._ns(index_id, version)} CASCADE")

    async def drop_index(self, index_id: str) -> None:
        self._cache.forget(index_id)
        db = await self._open()
        prefix = f"ef_rv_{safe_id(index_id)}_v"
        rows = await db.fetchall(
            "SELECT nspname FROM pg_namespace WHERE substr(nspname, 1, ?) = ?",
            (len(prefix), prefix),
        )
        for (name,) in rows:
            await db.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')

    async def close(self) -> None:
        self._cache.clear()
        if self._store is not None:
            await self._store.close()
            self._store = None
