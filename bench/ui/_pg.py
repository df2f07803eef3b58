"""The PostgreSQL copy of a seeded store: a dedicated database (``ef_bench_ui``) created on the
server named by ``--db``, migrated with the project's migrations, filled from the cached SQLite
file with ``COPY``, vacuumed and analysed (as autovacuum would leave a long-lived store), and
dropped afterwards, so the database of the URL is left as it was found."""

from __future__ import annotations

import contextlib
import sqlite3
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg

from bench.ui._migrate import defer_new_migrations, housekeep, run_deferred
from elevenfactor.store import migrate, open_store

__all__ = ["DATABASE", "load_from_sqlite", "pg_database"]

DATABASE = "ef_bench_ui"
_FIRST = ("orgs", "teams", "users", "group_members")
_SKIP = {"schema_migrations", "sqlite_sequence"}


def _with_db(url: str, name: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(path=f"/{name}"))


@contextlib.contextmanager
def pg_database(url: str, name: str = DATABASE) -> Iterator[str]:
    """A fresh database ``name`` on the server of ``url`` (dropped first if a crashed run left
    it); yields its URL and drops it on the way out."""
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _with_db(url, name)
    finally:
        with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _tables(lite: sqlite3.Connection) -> list[str]:
    names = [
        str(r[0])
        for r in lite.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        if str(r[0]) not in _SKIP and not str(r[0]).startswith("sqlite_")
    ]
    return [*(t for t in _FIRST if t in names), *(t for t in names if t not in _FIRST)]


async def load_from_sqlite(
    sqlite_path: Path, url: str, progress: Callable[[str, float], None] | None = None
) -> tuple[dict[str, int], dict[str, Any]]:
    """Migrate the database at ``url`` up to the seeded data's baseline, copy every table of the
    seeded SQLite file into it (rows the migrations insert are replaced), run the later
    migrations and the housekeeper's jobs once (``_migrate``), then ``VACUUM ANALYZE``; the
    rows copied per table, and what the jobs did."""
    store = await open_store(url)
    try:
        await defer_new_migrations(store)
        await migrate(store)
    finally:
        await store.close()
    lite = sqlite3.connect(f"file:{sqlite_path}?mode=ro", uri=True)
    counts: dict[str, int] = {}
    try:
        tables = _tables(lite)
        with psycopg.connect(url) as conn:
            pg_tables = {
                str(r[0])
                for r in conn.execute(
                    "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
                )
            }
            tables = [t for t in tables if t in pg_tables]
            conn.execute(f"TRUNCATE {', '.join(tables)} CASCADE")
            for i, table in enumerate(tables):
                cols = [str(r[1]) for r in lite.execute(f"PRAGMA table_info({table})")]
                names = ", ".join(cols)
                n = 0
                with conn.cursor().copy(f"COPY {table} ({names}) FROM STDIN") as copy:
                    for row in lite.execute(f"SELECT {names} FROM {table}"):
                        copy.write_row(row)
                        n += 1
                counts[table] = n
                if progress is not None:
                    progress(f"COPY {table}", (i + 1) / len(tables))
            for table, column in (("ledger", "seq"), ("release_pointers", "seq")):
                if table in tables:
                    conn.execute(
                        f"SELECT setval(pg_get_serial_sequence('{table}', '{column}'),"
                        f" COALESCE((SELECT MAX({column}) FROM {table}), 0) + 1, false)"
                    )
            conn.commit()
        store = await open_store(url)
        try:
            await run_deferred(store)
            upkeep = await housekeep(store)
        finally:
            await store.close()
        with psycopg.connect(url, autocommit=True) as conn:
            every = conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
            ).fetchall()
            conn.execute(f"VACUUM ANALYZE {', '.join(str(r[0]) for r in every)}")
    finally:
        lite.close()
    return counts, upkeep
