"""The registry of retrieval indexes, in the main store (migration ``m013_retrieval``).

An index belongs to one organisation; every read takes the organisation and puts it in the
``WHERE`` clause, so a caller never sees another organisation's index, even by the same name.
A version is ``building`` while it is written, ``ready`` once complete; ``publish`` makes a
ready version the active one in one transaction, so a query sees either the old complete
version or the new complete one, never a half-written one.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from elevenfactor.errors import ContextError, IndexNotFound
from elevenfactor.store import Executor, Row, Store

__all__ = [
    "IndexInfo",
    "IndexVersion",
    "check_name",
    "create_index",
    "delete_index_row",
    "find_index",
    "get_index",
    "list_indexes",
    "publish_version",
    "set_bm25_format",
    "start_version",
]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_INDEX_COLS = (
    "id, org_id, name, backend, location, embedder, dim, settings, source, active_version,"
    " created_at, updated_at"
)
_VERSION_COLS = (
    "version, status, embedder, dim, settings, documents, chunks, embedded, reused,"
    " total_terms, skipped, error, started_at, finished_at, bm25_format"
)


@dataclass(frozen=True, slots=True)
class IndexVersion:
    """One build of an index."""

    version: int
    status: str
    """``building``, ``ready``, ``failed`` or ``retired`` (its data deleted)."""
    embedder: str
    dim: int
    settings: dict[str, Any]
    documents: int = 0
    chunks: int = 0
    embedded: int = 0
    """Chunks embedded by this build; the others reused a vector of the version before."""
    reused: int = 0
    total_terms: int = 0
    skipped: list[dict[str, str]] = field(default_factory=list)
    error: str | None = None
    started_at: float = 0.0
    finished_at: float | None = None
    bm25_format: int = 0
    """0: BM25 scores the version's postings in SQL; 1: it has impact-ordered lists
    (``_index_bm25``, migration ``m016_bm25_impacts``)."""

    def to_dict(self) -> dict[str, Any]:
        """The version for machines."""
        return {
            "version": self.version,
            "status": self.status,
            "embedder": self.embedder,
            "dim": self.dim,
            "settings": self.settings,
            "documents": self.documents,
            "chunks": self.chunks,
            "embedded": self.embedded,
            "reused": self.reused,
            "skipped": self.skipped,
            "error": self.error,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "bm25_format": self.bm25_format,
        }


@dataclass(frozen=True, slots=True)
class IndexInfo:
    """An index of an organisation: where it lives, its embedder and its active version."""

    id: str
    org_id: str
    name: str
    backend: str
    location: str
    embedder: str
    dim: int
    settings: dict[str, Any]
    source: str | None
    active_version: int | None
    created_at: float
    updated_at: float
    versions: tuple[IndexVersion, ...] = ()

    def version(self, number: int | None) -> IndexVersion | None:
        """The version numbered ``number`` (among those loaded)."""
        return next((v for v in self.versions if v.version == number), None)

    def to_dict(self) -> dict[str, Any]:
        """The index for machines."""
        active = self.version(self.active_version)
        return {
            "id": self.id,
            "org_id": self.org_id,
            "name": self.name,
            "backend": self.backend,
            "location": self.location,
            "embedder": self.embedder,
            "dim": self.dim,
            "settings": self.settings,
            "source": self.source,
            "active_version": self.active_version,
            "documents": active.documents if active else 0,
            "chunks": active.chunks if active else 0,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "versions": [v.to_dict() for v in self.versions],
        }


def check_name(name: str) -> str:
    """``name`` if it is a valid index name, else a ``ContextError`` saying what is."""
    if not _NAME.fullmatch(name):
        raise ContextError(
            f"invalid index name {name!r}",
            hint="1-64 characters: letters, digits, '_', '.', '-', starting with a letter or digit",
        )
    return name


def _index(row: Row, versions: tuple[IndexVersion, ...] = ()) -> IndexInfo:
    return IndexInfo(
        id=row[0],
        org_id=row[1],
        name=row[2],
        backend=row[3],
        location=row[4],
        embedder=row[5],
        dim=int(row[6]),
        settings=json.loads(row[7]),
        source=row[8],
        active_version=None if row[9] is None else int(row[9]),
        created_at=float(row[10]),
        updated_at=float(row[11]),
        versions=versions,
    )


def _version(row: Row) -> IndexVersion:
    return IndexVersion(
        version=int(row[0]),
        status=row[1],
        embedder=row[2],
        dim=int(row[3]),
        settings=json.loads(row[4]),
        documents=int(row[5]),
        chunks=int(row[6]),
        embedded=int(row[7]),
        reused=int(row[8]),
        total_terms=int(row[9]),
        skipped=json.loads(row[10]),
        error=row[11],
        started_at=float(row[12]),
        finished_at=None if row[13] is None else float(row[13]),
        bm25_format=int(row[14]),
    )


async def _versions(db: Executor, index_id: str) -> tuple[IndexVersion, ...]:
    rows = await db.fetchall(
        f"SELECT {_VERSION_COLS} FROM retrieval_versions WHERE index_id = ? ORDER BY version",
        (index_id,),
    )
    return tuple(_version(r) for r in rows)


async def find_index(db: Executor, org_id: str, name: str) -> IndexInfo | None:
    """The organisation's index named ``name`` with its versions, or None."""
    row = await db.fetchone(
        f"SELECT {_INDEX_COLS} FROM retrieval_indexes WHERE org_id = ? AND name = ?",
        (org_id, name),
    )
    if row is None:
        return None
    return _index(row, await _versions(db, row[0]))


async def get_index(db: Executor, org_id: str, name: str) -> IndexInfo:
    """The organisation's index named ``name``; ``IndexNotFound`` if there is none."""
    found = await find_index(db, org_id, name)
    if found is None:
        raise IndexNotFound(
            f"no retrieval index named {name!r}",
            hint="`elevenfactor index list` shows the indexes; `elevenfactor index build NAME`"
            " creates one",
        )
    return found


async def list_indexes(db: Executor, org_id: str) -> list[IndexInfo]:
    """The organisation's indexes, by name, with their versions."""
    rows = await db.fetchall(
        f"SELECT {_INDEX_COLS} FROM retrieval_indexes WHERE org_id = ? ORDER BY name",
        (org_id,),
    )
    return [_index(r, await _versions(db, r[0])) for r in rows]


async def create_index(
    store: Store,
    org_id: str,
    name: str,
    *,
    backend: str,
    location: str,
    embedder: str,
    dim: int,
    settings: dict[str, Any],
    source: str | None,
) -> IndexInfo:
    """Register a new index (no version yet), or return the one a concurrent call made."""
    check_name(name)
    now = time.time()
    index_id = "ri_" + uuid.uuid4().hex[:16]
    async with store.transaction() as tx:
        if await find_index(tx, org_id, name) is None:
            await tx.execute(
                f"INSERT INTO retrieval_indexes ({_INDEX_COLS}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?, ?)",
                (
                    index_id,
                    org_id,
                    name,
                    backend,
                    location,
                    embedder,
                    dim,
                    json.dumps(settings, sort_keys=True),
                    source,
                    now,
                    now,
                ),
            )
    return await get_index(store, org_id, name)


async def start_version(
    store: Store, index_id: str, *, embedder: str, dim: int, settings: dict[str, Any]
) -> int:
    """A new ``building`` version numbered after every existing one."""
    async with store.transaction() as tx:
        row = await tx.fetchone(
            "SELECT COALESCE(MAX(version), 0) FROM retrieval_versions WHERE index_id = ?",
            (index_id,),
        )
        number = int(row[0] if row else 0) + 1
        await tx.execute(
            "INSERT INTO retrieval_versions (index_id, version, status, embedder, dim, settings,"
            " started_at) VALUES (?, ?, 'building', ?, ?, ?, ?)",
            (index_id, number, embedder, dim, json.dumps(settings, sort_keys=True), time.time()),
        )
    return number


async def set_status(
    db: Executor, index_id: str, version: int, status: str, error: str | None = None
) -> None:
    """Mark a version ``failed`` or ``retired`` (with why)."""
    await db.execute(
        "UPDATE retrieval_versions SET status = ?, error = COALESCE(?, error),"
        " finished_at = COALESCE(finished_at, ?) WHERE index_id = ? AND version = ?",
        (status, error, time.time(), index_id, version),
    )


async def publish_version(
    store: Store,
    index: IndexInfo,
    version: int,
    *,
    counts: dict[str, int],
    skipped: list[dict[str, str]],
) -> None:
    """Mark ``version`` ready with its counts and make it the active one, atomically."""
    now = time.time()
    async with store.transaction() as tx:
        await tx.execute(
            "UPDATE retrieval_versions SET status = 'ready', documents = ?, chunks = ?,"
            " embedded = ?, reused = ?, total_terms = ?, skipped = ?, finished_at = ?,"
            " bm25_format = ? WHERE index_id = ? AND version = ?",
            (
                counts["documents"],
                counts["chunks"],
                counts["embedded"],
                counts["reused"],
                counts["total_terms"],
                json.dumps(skipped),
                now,
                counts.get("bm25_format", 0),
                index.id,
                version,
            ),
        )
        row = await tx.fetchone(
            "SELECT embedder, dim, settings FROM retrieval_versions"
            " WHERE index_id = ? AND version = ?",
            (index.id, version),
        )
        assert row is not None
        await tx.execute(
            "UPDATE retrieval_indexes SET active_version = ?, embedder = ?, dim = ?,"
            " settings = ?, updated_at = ? WHERE id = ? AND org_id = ?",
            (version, row[0], row[1], row[2], now, index.id, index.org_id),
        )


async def set_bm25_format(db: Executor, index_id: str, version: int, bm25_format: int) -> None:
    """Record that a version's BM25 data now has the layout ``bm25_format``."""
    await db.execute(
        "UPDATE retrieval_versions SET bm25_format = ? WHERE index_id = ? AND version = ?",
        (bm25_format, index_id, version),
    )


async def delete_index_row(store: Store, index: IndexInfo) -> None:
    """Remove the index and its versions from the registry."""
    async with store.transaction() as tx:
        await tx.execute("DELETE FROM retrieval_versions WHERE index_id = ?", (index.id,))
        await tx.execute(
            "DELETE FROM retrieval_indexes WHERE id = ? AND org_id = ?", (index.id, index.org_id)
        )
