"""SQLite store: WAL journal, ``synchronous=NORMAL``, one connection per store.

Statements run inline on the event loop: a local WAL commit takes tens of microseconds, less than
a hop to a thread would cost. An ``asyncio.Lock`` serialises transactions of one store.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from types import TracebackType

from elevenfactor.errors import StoreError
from elevenfactor.store._base import Executor, Params, Row

__all__ = ["SQLiteStore"]


class _Tx:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    async def execute(self, sql: str, params: Params = ()) -> int:
        return self.conn.execute(sql, params).rowcount

    async def executemany(self, sql: str, rows: Sequence[Params]) -> None:
        self.conn.executemany(sql, rows)

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        row: Row | None = self.conn.execute(sql, params).fetchone()
        return row

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        return self.conn.execute(sql, params).fetchall()


class _Transaction(AbstractAsyncContextManager[Executor]):
    """The store's lock, ``BEGIN IMMEDIATE``, then ``COMMIT`` or ``ROLLBACK``.

    A plain class rather than ``@asynccontextmanager``: a journaled step opens one per step, and
    the generator machinery cost more than SQLite's own BEGIN.
    """

    __slots__ = ("_store",)

    def __init__(self, store: SQLiteStore) -> None:
        self._store = store

    async def __aenter__(self) -> Executor:
        store = self._store
        await store._lock.acquire()
        try:
            store.conn.execute("BEGIN IMMEDIATE")
        except BaseException:
            store._lock.release()
            raise
        return store._tx

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        store = self._store
        try:
            if exc_type is None:
                try:
                    store.conn.execute("COMMIT")
                except BaseException:
                    if store.conn.in_transaction:
                        store.conn.execute("ROLLBACK")
                    raise
            elif store.conn.in_transaction:  # SQLite may have rolled back on its own
                store.conn.execute("ROLLBACK")
        finally:
            store._lock.release()


class SQLiteStore:
    """A store on one SQLite file (or ``:memory:``)."""

    dialect = "sqlite"

    def __init__(self, url: str, path: str) -> None:
        self.url = url
        self.path = path
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = sqlite3.connect(
                path, isolation_level=None, check_same_thread=False, timeout=30.0
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA busy_timeout=30000")
        except sqlite3.Error as exc:
            raise StoreError(
                f"cannot open SQLite database {path!r}: {exc}",
                hint="check DATABASE_URL and that the directory is writable",
            ) from exc
        self.conn = conn
        self._tx = _Tx(conn)
        self._lock = asyncio.Lock()
        self._writer: ThreadPoolExecutor | None = None
        self._writer_conn: sqlite3.Connection | None = None

    async def execute(self, sql: str, params: Params = ()) -> int:
        """Run one statement in autocommit mode."""
        return self.conn.execute(sql, params).rowcount

    async def executemany(self, sql: str, rows: Sequence[Params]) -> None:
        """Run one statement for many rows, in one transaction."""
        async with self.transaction() as tx:
            await tx.executemany(sql, rows)

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        """The first row of a query."""
        row: Row | None = self.conn.execute(sql, params).fetchone()
        return row

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        """Every row of a query."""
        return self.conn.execute(sql, params).fetchall()

    def transaction(self) -> AbstractAsyncContextManager[Executor]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` (or ``ROLLBACK`` on error)."""
        return _Transaction(self)

    async def write_batch(self, batch: Sequence[tuple[str, Sequence[Params]]]) -> None:
        """One transaction on a second connection in a writer thread, so the loop never waits.

        sqlite3 releases the GIL while SQLite works, so the loop keeps serving meanwhile.
        """
        if self.path == ":memory:":
            async with self.transaction() as tx:
                for sql, rows in batch:
                    await tx.executemany(sql, rows)
            return
        if self._writer is None:
            self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-writer")
        await asyncio.get_running_loop().run_in_executor(self._writer, self._write_sync, batch)

    def _write_sync(self, batch: Sequence[tuple[str, Sequence[Params]]]) -> None:
        if self._writer_conn is None:
            self._writer_conn = sqlite3.connect(self.path, isolation_level=None, timeout=30.0)
            self._writer_conn.execute("PRAGMA synchronous=NORMAL")
            self._writer_conn.execute("PRAGMA busy_timeout=30000")
        conn = self._writer_conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            for sql, rows in batch:
                conn.executemany(sql, rows)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    async def close(self) -> None:
        """Close the connections."""
        if self._writer is not None:
            # The writer connection belongs to the writer thread: close it there.
            await asyncio.get_running_loop().run_in_executor(self._writer, self._close_writer)
            self._writer.shutdown(wait=True)
            self._writer = None
        self.conn.close()

    def _close_writer(self) -> None:
        if self._writer_conn is not None:
            self._writer_conn.close()
            self._writer_conn = None

    def __repr__(self) -> str:
        return f"SQLiteStore({self.path!r})"


def sqlite_path(url: str) -> str:
    """``sqlite:///relative.db``, ``sqlite:////abs.db`` or ``sqlite:///:memory:`` to a path."""
    rest = url.split("://", 1)[1]
    if rest.startswith("/"):
        rest = rest[1:]
    return rest or ":memory:"
