"""The store: SQLite or PostgreSQL by URL, migrations and content-addressed blobs."""

from __future__ import annotations

from elevenfactor.errors import ConfigError
from elevenfactor.store._base import Executor, Row, Store
from elevenfactor.store._blobs import BLOB_INSERT, blob_hash, get_blob, put_blob, put_blobs
from elevenfactor.store._migrations import (
    MIGRATIONS,
    Migration,
    applied,
    migrate,
    pending,
    require_migrated,
)
from elevenfactor.store._notify import subscribe, unsubscribe, wake_local

__all__ = [
    "BLOB_INSERT",
    "MIGRATIONS",
    "Executor",
    "Migration",
    "Row",
    "Store",
    "applied",
    "blob_hash",
    "get_blob",
    "migrate",
    "open_store",
    "pending",
    "put_blob",
    "put_blobs",
    "require_migrated",
    "subscribe",
    "unsubscribe",
    "wake_local",
]


async def open_store(url: str) -> Store:
    """Open the store named by ``url`` (``sqlite:///path`` or ``postgresql://...``)."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme == "sqlite":
        from elevenfactor.store._sqlite import SQLiteStore, sqlite_path

        return SQLiteStore(url, sqlite_path(url))
    if scheme in ("postgresql", "postgres", "postgresql+psycopg"):
        from elevenfactor.store._postgres import PostgresStore

        store = PostgresStore(url)
        await store.open()
        return store
    raise ConfigError(
        f"unsupported database URL scheme {scheme or url!r}",
        source="environment",
        key="DATABASE_URL",
        expected="sqlite:///path/to/file.db or postgresql://user@host:5432/db",
    )
