"""The store: SQLite or PostgreSQL by URL, migrations and content-addressed blobs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from elevenfactor.errors import ConfigError
from elevenfactor.store._base import Executor, Row, Store
from elevenfactor.store._blobs import (
    BLOB_INSERT,
    blob_hash,
    get_blob,
    get_blobs,
    put_blob,
    put_blobs,
)
from elevenfactor.store._migrations import (
    MIGRATIONS,
    Migration,
    applied,
    migrate,
    pending,
    require_migrated,
)
from elevenfactor.store._notify import subscribe, unsubscribe, wake_local

if TYPE_CHECKING:
    from elevenfactor.store._resp import ScriptClient

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
    "get_blobs",
    "migrate",
    "open_store",
    "pending",
    "put_blob",
    "put_blobs",
    "require_migrated",
    "script_client",
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


def script_client(url: str, *, timeout: float = 1.0, decode: bool = False) -> ScriptClient | None:
    """A fast client for Lua scripts on the Redis at ``url`` (budget reservations and rate
    limits: see ``elevenfactor.store._resp``), or None for URLs it does not speak (use
    redis-py). Imports the Redis libraries on first use; opens no connection."""
    from elevenfactor.store._resp import script_client as make

    return make(url, timeout=timeout, decode=decode)
