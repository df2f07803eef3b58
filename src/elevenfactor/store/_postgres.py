"""PostgreSQL store on psycopg 3 with an async connection pool.

Background writers insert many rows at once with ``unnest``: one array parameter per column
(``arrays``), so the SQL text is the same whatever the number of rows and the statement is
parsed and planned once per connection. The arrays go in PostgreSQL's binary format with their
element type fixed (``Array`` subclasses), so psycopg neither scans them to guess a type nor
escapes each value as text.
"""

from __future__ import annotations

import re
import struct
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from functools import cache, lru_cache
from typing import Any, ClassVar

import psycopg
from psycopg import postgres
from psycopg.abc import AdaptContext, Buffer
from psycopg.abc import Dumper as ItemDumper
from psycopg.adapt import Dumper, PyFormat
from psycopg.pq import Format
from psycopg_pool import AsyncConnectionPool

from elevenfactor.config import mask_url
from elevenfactor.errors import StoreError
from elevenfactor.store._base import Executor, Params, Row

__all__ = ["Array", "PostgresStore", "arrays", "unnest"]

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


class Array(list[Any]):
    """One column of values, sent as one binary array of ``pg_type`` (None is NULL)."""

    pg_type: ClassVar[str] = "text"


class _Text(Array):
    pg_type = "text"


class _Float8(Array):
    pg_type = "float8"


class _Int4(Array):
    pg_type = "int4"


class _Int8(Array):
    pg_type = "int8"


class _Bytea(Array):
    pg_type = "bytea"


_ARRAYS: dict[str, type[Array]] = {c.pg_type: c for c in (_Text, _Float8, _Int4, _Int8, _Bytea)}
_HEAD = struct.Struct("!iiiii").pack  # dimensions, has nulls, element oid, length, lower bound
_EMPTY = struct.Struct("!iii").pack
_LEN = struct.Struct("!i").pack
_NULL = b"\xff\xff\xff\xff"


@cache
def _element(pg_type: str) -> tuple[int, int, type[ItemDumper]]:
    """The array oid, element oid and element dumper (binary) of ``pg_type``."""
    info = postgres.types[pg_type]
    # bytes by type: the dumper registered for bytea's oid wraps ``psycopg.Binary``.
    if pg_type == "bytea":
        item = postgres.adapters.get_dumper(bytes, PyFormat.BINARY)
    else:
        item = postgres.adapters.get_dumper_by_oid(info.oid, Format.BINARY)
    return info.array_oid, info.oid, item


class _ArrayDumper(Dumper):
    """A one-dimensional ``Array`` in binary, each value by the element type's own dumper."""

    format = Format.BINARY

    def __init__(self, cls: type, context: AdaptContext | None = None) -> None:
        super().__init__(cls, context)
        if not issubclass(cls, Array):
            raise TypeError(f"{cls.__name__} is not an Array")
        self.oid, self.element_oid, item = _element(cls.pg_type)
        self.item = item(object, context)
        self.integer = cls.pg_type in ("int4", "int8")

    def dump(self, obj: list[Any]) -> Buffer:
        if not obj:
            return _EMPTY(0, 0, self.element_oid)
        try:
            return self._dump(obj)
        except TypeError:
            if not self.integer:
                raise
            # A float for an integer column: rounded, as PostgreSQL assigns a float8.
            return self._dump([v if v is None or type(v) is int else round(v) for v in obj])

    def _dump(self, obj: list[Any]) -> bytes:
        dump = self.item.dump
        parts: list[Buffer] = [b""]
        nulls = 0
        for value in obj:
            data = None if value is None else dump(value)
            if data is None:
                nulls = 1
                parts.append(_NULL)
            else:
                parts.append(_LEN(len(data)))
                parts.append(data)
        parts[0] = _HEAD(1, nulls, self.element_oid, len(obj), 1)
        return b"".join(parts)


def _register_arrays(conn: psycopg.AsyncConnection[Any]) -> None:
    for cls in _ARRAYS.values():
        conn.adapters.register_dumper(cls, _ArrayDumper)


@lru_cache(maxsize=64)
def unnest(types: tuple[str, ...]) -> str:
    """``unnest(?::t1[], ?::t2[], ...)``: rows out of one array parameter per column (see
    ``arrays``); ``types`` are ``text``, ``float8``, ``int4``, ``int8`` or ``bytea``."""
    for t in types:
        if t not in _ARRAYS:
            raise ValueError(f"no array type for {t!r}")
    return "unnest(" + ", ".join(f"?::{t}[]" for t in types) + ")"


def arrays(rows: Sequence[Sequence[Any]], types: Sequence[str]) -> list[Array]:
    """The parameters of ``unnest(types)`` inserting ``rows``: one ``Array`` per column.

    Numbers go as PostgreSQL would assign them to the column: an int to ``float8`` as a float,
    a float to an integer type rounded."""
    columns: list[Sequence[Any]] = list(zip(*rows, strict=True)) if rows else [()] * len(types)
    if len(columns) != len(types):
        raise ValueError(f"{len(types)} types for rows of {len(columns)} columns")
    return [_ARRAYS[t](c) for c, t in zip(columns, types, strict=True)]


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
            conninfo,
            min_size=min_size,
            max_size=max_size,
            open=False,
            kwargs={"autocommit": True},
            configure=self._configure,
        )

    @staticmethod
    async def _configure(conn: psycopg.AsyncConnection[Any]) -> None:
        _register_arrays(conn)
        # JIT compilation pays off for long analytic queries; ours are short and indexed, and
        # measured here it added 40-500 ms to a query of a few ms whose row estimate was high
        # (the dashboard's run lists). Off for every connection of the pool.
        await conn.execute("SET jit = off")

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
        """Run the batch in one transaction (psycopg does the I/O without blocking the loop).

        A batch of one statement with one parameter row (an ``unnest`` insert) is its own
        transaction: it runs prepared, in one round trip, without BEGIN and COMMIT."""
        if len(batch) == 1 and len(batch[0][1]) == 1:
            sql, (params,) = batch[0]
            async with self.pool.connection() as conn:
                await conn.execute(translate(sql), params, prepare=True)
            return
        async with self.transaction() as tx:
            for sql, rows in batch:
                await tx.executemany(sql, rows)

    async def close(self) -> None:
        """Close the pool."""
        await self.pool.close()

    def __repr__(self) -> str:
        return f"PostgresStore({mask_url(self.url)!r})"
