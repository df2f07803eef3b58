"""Database plumbing: PostgreSQL scratch schemas (created and dropped by the harness) and
SQLite files with the same pragmas as elevenfactor's store."""

from __future__ import annotations

import contextlib
import sqlite3
import urllib.parse
from pathlib import Path

import psycopg

__all__ = [
    "PG_BASE",
    "SQLITE_PRAGMAS",
    "create_schema",
    "drop_schema",
    "pg_available",
    "pg_url",
    "remove_sqlite",
    "sqlite_connect",
]

PG_BASE = "postgresql://postgres@127.0.0.1:5432/test"
# Exactly what elevenfactor.store._sqlite.SQLiteStore sets.
SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA foreign_keys=ON",
    "PRAGMA busy_timeout=30000",
)


def pg_url(schema: str | None, base: str = PG_BASE) -> str:
    """``base`` with ``search_path`` set to ``schema`` (via libpq ``options``)."""
    if schema is None:
        return base
    opts = urllib.parse.quote(f"-csearch_path={schema}")
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options={opts}"


def pg_available(base: str = PG_BASE) -> str | None:
    """None if the server answers, else why not."""
    try:
        with psycopg.connect(base, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return str(exc).strip()
    return None


def create_schema(schema: str, base: str = PG_BASE) -> None:
    """A fresh, empty schema."""
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        conn.execute(f'CREATE SCHEMA "{schema}"')


def drop_schema(schema: str, base: str = PG_BASE) -> None:
    """Drop ``schema`` and everything in it (no error if it is gone)."""
    with (
        contextlib.suppress(psycopg.Error),
        psycopg.connect(base, autocommit=True, connect_timeout=5) as conn,
    ):
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def sqlite_connect(path: Path) -> sqlite3.Connection:
    """A connection configured like elevenfactor's SQLite store (autocommit, WAL, NORMAL)."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)
    for pragma in SQLITE_PRAGMAS:
        conn.execute(pragma)
    return conn


def remove_sqlite(path: Path) -> None:
    """Delete a database file and its WAL and shared-memory files."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
