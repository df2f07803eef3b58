"""PostgreSQL store on psycopg 3 with an async connection pool."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from functools import lru_cache
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from elevenfactor.config import mask_url
from elevenfactor.errors import StoreError
from elevenfactor.store._base import Executor, Params, Row

__all__ = ["PostgresStore"]

_PLACEHOLDER = re.compile(r"'[^']*'|\?|%")


@lru_cache(maxsize=1024)
def translate(sql: str) -> str:
    """``?`` placeholders to ``%s``; a literal ``%`` outside quotes to ``%%``."""

    def repl(m: re.Match[str]) -> str:
        tok = m.group(0)
        if tok == "?":
            return "%s"
        if tok == "%":
            return "%%"
        return tok.replace("%", "%%")

    return _PLACEHOLDER.sub(repl, sql)


class _Tx:
    def __init__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self.conn = conn

    async def execute(self, sql: str, params: Params = ()) -> int:
        # psycopg's default, as for queries: a statement run 5 times on a connection is prepared
        # there (a journal append is planned once per connection, not once per step; psycopg
        # drops its prepared statements after DDL).
        cur = await self.conn.execute(translate(sql), params)
        return cur.rowcount

    async def executemany(self, sql: str, rows: Sequence[Params]) -> None:
        async with self.conn.cursor() as cur:
            await cur.executemany(translate(sql), rows)

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        cur = await self.conn.execute(translate(sql), params)
        row: Row | None = await cur.fetchone()
        return row

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        cur = await self.conn.execute(translate(sql), params)
        return await cur.fetchall()


class PostgresStore:
    """A store on a PostgreSQL server."""

    dialect = "postgresql"

    def __init__(self, url: str, *, min_size: int = 1, max_size: int = 10) -> None:
        self.url = url
        conninfo = url.replace("postgresql+psycopg://", "postgresql://", 1)
        if conninfo.startswith("postgres://"):
            conninfo = "postgresql://" + conninfo[len("postgres://") :]
        self.pool = AsyncConnectionPool(
            conninfo, min_size=min_size, max_size=max_size, open=False, kwargs={"autocommit": True}
        )

    async def open(self) -> None:
        """Open the pool and check the server answers."""
        try:
            await self.pool.open(wait=True, timeout=10)
        except Exception as exc:
            raise StoreError(
                f"cannot connect to PostgreSQL at {mask_url(self.url)}: {exc}",
                hint="check DATABASE_URL and that the server is running",
            ) from exc

    async def execute(self, sql: str, params: Params = ()) -> int:
        """Run one statement in autocommit mode."""
        async with self.pool.connection() as conn:
            return await _Tx(conn).execute(sql, params)

    async def executemany(self, sql: str, rows: Sequence[Params]) -> None:
        """Run one statement for many rows, in one transaction."""
        async with self.transaction() as tx:
            await tx.executemany(sql, rows)

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        """The first row of a query."""
        async with self.pool.connection() as conn:
            return await _Tx(conn).fetchone(sql, params)

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        """Every row of a query."""
        async with self.pool.connection() as conn:
            return await _Tx(conn).fetchall(sql, params)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Executor]:
        """A transaction on one pooled connection."""
        async with self.pool.connection() as conn, conn.transaction():
            yield _Tx(conn)

    async def write_batch(self, batch: Sequence[tuple[str, Sequence[Params]]]) -> None:
        """Run the batch in one transaction (psycopg does the I/O without blocking the loop)."""
        async with self.transaction() as tx:
            for sql, rows in batch:
                await tx.executemany(sql, rows)

    async def close(self) -> None:
        """Close the pool."""
        await self.pool.close()

    def __repr__(self) -> str:
        return f"PostgresStore({mask_url(self.url)!r})"
