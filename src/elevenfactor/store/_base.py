"""The ``Store`` protocol: one dialect surface over SQLite and PostgreSQL.

SQL is written once with ``?`` placeholders; the PostgreSQL store translates them. Each store
exposes ``dialect`` for the rare DDL that differs.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

__all__ = ["Executor", "Row", "Store"]

Row = tuple[Any, ...]
Params = Sequence[Any]


class Executor(Protocol):
    """Runs SQL: a store, or a transaction inside one."""

    async def execute(self, sql: str, params: Params = ()) -> int:
        """Run one statement; return the affected row count."""
        ...

    async def executemany(self, sql: str, rows: Sequence[Params]) -> None:
        """Run one statement for many parameter rows."""
        ...

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        """The first row of a query, or None."""
        ...

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        """Every row of a query."""
        ...


class Store(Executor, Protocol):
    """A database: executes statements in autocommit mode or inside ``transaction()``."""

    dialect: str
    url: str

    def transaction(self) -> AbstractAsyncContextManager[Executor]:
        """A transaction: committed on normal exit, rolled back on an exception."""
        ...

    async def write_batch(self, batch: Sequence[tuple[str, Sequence[Params]]]) -> None:
        """Run ``(sql, rows)`` pairs in one transaction, off the event loop where it matters.

        For background writers (call records, metrics) whose latency nobody waits on.
        """
        ...

    async def close(self) -> None:
        """Release connections."""
        ...
