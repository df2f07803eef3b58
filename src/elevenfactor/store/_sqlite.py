"""SQLite store: WAL journal, ``synchronous=NORMAL``, one connection per store.

Statements run inline on the event loop: a local WAL commit takes tens of microseconds, less than
a hop to a thread would cost. They never *wait* there, though: the connection's busy timeout is
0, so a statement that meets another connection's write lock fails at once with SQLITE_BUSY
(having done nothing), and is run again on the store's one worker thread with a real busy
timeout. While anything runs there, every later statement of the store follows it through the
same thread, in order, so the connection is never used by two threads at once; once the thread
drains, statements run inline again.

An ``asyncio.Lock`` serialises transactions of one store; while one is open, other tasks'
statements wait for it to end rather than slip into it.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from elevenfactor.errors import StoreError
from elevenfactor.store._base import Executor, Params, Row

__all__ = ["SQLiteStore"]

T = TypeVar("T")

BUSY_TIMEOUT_MS = 30_000
WAL_SIZE_LIMIT = 16 * 1024 * 1024  # bytes a checkpointed WAL file is truncated to
"""How long a statement run on the store's thread waits for another connection's lock."""


def _busy(exc: sqlite3.OperationalError) -> bool:
    """SQLITE_BUSY (and its extended codes): the statement did nothing and may be run again."""
    return getattr(exc, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_BUSY


# The statements as plain functions of the connection, for the store's thread.


def _execute(conn: sqlite3.Connection, sql: str, params: Params) -> int:
    return conn.execute(sql, params).rowcount


def _executemany(conn: sqlite3.Connection, sql: str, rows: Sequence[Params]) -> None:
    conn.executemany(sql, rows)


def _fetchone(conn: sqlite3.Connection, sql: str, params: Params) -> Row | None:
    row: Row | None = conn.execute(sql, params).fetchone()
    return row


def _fetchall(conn: sqlite3.Connection, sql: str, params: Params) -> list[Row]:
    return conn.execute(sql, params).fetchall()


def _begin(conn: sqlite3.Connection) -> None:
    conn.execute("BEGIN IMMEDIATE")


def _commit(conn: sqlite3.Connection) -> None:
    try:
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:  # SQLite may have rolled back on its own
        conn.execute("ROLLBACK")


def _transact(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    conn.execute("BEGIN IMMEDIATE")
    try:
        out = fn(conn)
        conn.execute("COMMIT")
    except BaseException:
        _rollback(conn)
        raise
    return out


class _Tx:
    """The statements of the open transaction (its owner's; no lock to check)."""

    __slots__ = ("_store", "conn")

    def __init__(self, store: SQLiteStore) -> None:
        self._store = store
        self.conn = store.conn

    async def execute(self, sql: str, params: Params = ()) -> int:
        if not self._store._pending:
            try:
                return self.conn.execute(sql, params).rowcount
            except sqlite3.OperationalError as exc:
                if not _busy(exc):
                    raise
        return await self._store._offload(_execute, sql, params)

    async def executemany(self, sql: str, rows: Sequence[Params]) -> None:
        await self._store._route(_executemany, sql, rows)

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        return await self._store._route(_fetchone, sql, params)

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        return await self._store._route(_fetchall, sql, params)


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
        store._owner = asyncio.current_task()
        offloaded = False
        try:
            if not store._pending:
                try:
                    store.conn.execute("BEGIN IMMEDIATE")
                    return store._tx
                except sqlite3.OperationalError as exc:
                    if not _busy(exc):
                        raise
            offloaded = True
            await store._offload(_begin)
        except BaseException:
            if offloaded:
                # Cancelled while BEGIN waits on the thread, it may still succeed there: undo
                # it right after (the thread runs jobs in order), so no one inherits it.
                store._submit(_rollback, ())
            store._owner = None
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
                if not store._pending:
                    conn = store.conn
                    try:
                        conn.execute("COMMIT")
                        return
                    except sqlite3.OperationalError as err:
                        if not (_busy(err) and conn.in_transaction):
                            _rollback(conn)
                            raise
                    except BaseException:
                        _rollback(conn)
                        raise
                await store._offload(_commit)
            elif store._pending:
                await store._offload(_rollback)
            else:
                _rollback(store.conn)
        finally:
            store._owner = None
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
                path,
                isolation_level=None,
                check_same_thread=False,
                timeout=BUSY_TIMEOUT_MS / 1000,
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            # A checkpointed WAL is cut back to this size rather than kept at its high-water
            # mark (sustained gateway load grew it to tens of MB).
            conn.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
            # From here on the loop never waits for a lock (see the module docstring).
            conn.execute("PRAGMA busy_timeout=0")
        except sqlite3.Error as exc:
            raise StoreError(
                f"cannot open SQLite database {path!r}: {exc}",
                hint="check DATABASE_URL and that the directory is writable",
            ) from exc
        self.conn = conn
        self._tx = _Tx(self)
        self._lock = asyncio.Lock()
        self._owner: asyncio.Task[Any] | None = None
        """The task whose transaction is open."""
        self._pending = 0
        """Jobs submitted to ``_thread`` and not finished: while any, statements go there too."""
        self._thread: ThreadPoolExecutor | None = None
        self._writer: ThreadPoolExecutor | None = None
        self._writer_conn: sqlite3.Connection | None = None

    # -- statements ---------------------------------------------------------------------------

    async def execute(self, sql: str, params: Params = ()) -> int:
        """Run one statement in autocommit mode."""
        if not self._pending and self._owner is None:
            try:
                return self.conn.execute(sql, params).rowcount
            except sqlite3.OperationalError as exc:
                if not _busy(exc):
                    raise
            return await self._offload(_execute, sql, params)
        return await self._call(_execute, sql, params)

    async def executemany(self, sql: str, rows: Sequence[Params]) -> None:
        """Run one statement for many rows, in one transaction."""
        async with self.transaction() as tx:
            await tx.executemany(sql, rows)

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        """The first row of a query."""
        if not self._pending and self._owner is None:
            try:
                row: Row | None = self.conn.execute(sql, params).fetchone()
                return row
            except sqlite3.OperationalError as exc:
                if not _busy(exc):
                    raise
            return await self._offload(_fetchone, sql, params)
        return await self._call(_fetchone, sql, params)

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        """Every row of a query."""
        if not self._pending and self._owner is None:
            try:
                return self.conn.execute(sql, params).fetchall()
            except sqlite3.OperationalError as exc:
                if not _busy(exc):
                    raise
            return await self._offload(_fetchall, sql, params)
        return await self._call(_fetchall, sql, params)

    def try_execute(self, sql: str, params: Params = ()) -> int | None:
        """Run one autocommit statement inline if that cannot wait: its row count, or None
        (nothing done) when it has to go through ``execute`` (the thread is busy, a
        transaction is open, or another connection holds the lock)."""
        if self._pending or self._owner is not None:
            return None
        try:
            return self.conn.execute(sql, params).rowcount
        except sqlite3.OperationalError as exc:
            if not _busy(exc):
                raise
            return None

    def transaction(self) -> AbstractAsyncContextManager[Executor]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` (or ``ROLLBACK`` on error)."""
        return _Transaction(self)

    async def run_transaction(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn(conn)`` inside ``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` if it raises),
        as one job: a whole transaction for the price of one statement.

        Like a statement it runs inline when nothing waits, else after the open transaction
        of another task and the jobs on the store's thread; when another connection holds the
        lock it runs on the thread, with the busy timeout. ``fn`` is synchronous and touches
        nothing but ``conn``: if it meets a lock inline it is rolled back and run again there.
        """
        if not self._pending and self._owner is None and not self._lock.locked():
            try:
                return _transact(self.conn, fn)
            except sqlite3.OperationalError as exc:
                if not _busy(exc):
                    raise
            return await self._offload(_transact, fn)
        async with self._lock:
            self._owner = asyncio.current_task()
            try:
                return await self._route(_transact, fn)
            finally:
                self._owner = None

    # -- the slow path: waiting off the loop --------------------------------------------------

    async def _call(self, job: Callable[..., T], *args: Any) -> T:
        """A store-level statement that could not run inline: after another task's open
        transaction (never inside it), inline or on the thread."""
        owner = self._owner
        if owner is not None and owner is not asyncio.current_task():
            async with self._lock:
                return await self._route(job, *args)
        return await self._route(job, *args)

    async def _route(self, job: Callable[..., T], *args: Any) -> T:
        """Inline unless the thread has work (then after it); on SQLITE_BUSY, on the thread."""
        if not self._pending:
            try:
                return job(self.conn, *args)
            except sqlite3.OperationalError as exc:
                if not _busy(exc):
                    raise
        return await self._offload(job, *args)

    async def _offload(self, job: Callable[..., T], *args: Any) -> T:
        """Run ``job`` on the store's thread, after the jobs already there. Shielded: a
        cancelled caller does not withdraw it (later jobs, such as a ROLLBACK, count on it)."""
        return await asyncio.shield(asyncio.wrap_future(self._submit(job, args)))

    def _submit(self, job: Callable[..., T], args: tuple[Any, ...]) -> Future[T]:
        if self._thread is None:
            self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-store")
        loop = asyncio.get_running_loop()
        self._pending += 1
        fut = self._thread.submit(self._in_thread, job, args)

        def done(_: Future[T]) -> None:
            # A closed loop has nobody left to route.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._job_done)

        fut.add_done_callback(done)
        return fut

    def _job_done(self) -> None:
        self._pending -= 1

    def _in_thread(self, job: Callable[..., T], args: tuple[Any, ...]) -> T:
        conn = self.conn
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        try:
            return job(conn, *args)
        finally:
            conn.execute("PRAGMA busy_timeout=0")

    # -- background batches -------------------------------------------------------------------

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
            self._writer_conn = sqlite3.connect(
                self.path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000
            )
            self._writer_conn.execute("PRAGMA synchronous=NORMAL")
            self._writer_conn.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
            self._writer_conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
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
        """Close the connections (after the jobs on the store's thread)."""
        loop = asyncio.get_running_loop()
        if self._writer is not None:
            # The writer connection belongs to the writer thread: close it there.
            await loop.run_in_executor(self._writer, self._close_writer)
            self._writer.shutdown(wait=True)
            self._writer = None
        if self._thread is not None:
            await loop.run_in_executor(self._thread, _noop)
            self._thread.shutdown(wait=True)
            self._thread = None
        self.conn.close()

    def _close_writer(self) -> None:
        if self._writer_conn is not None:
            self._writer_conn.close()
            self._writer_conn = None

    def __repr__(self) -> str:
        return f"SQLiteStore({self.path!r})"


def _noop() -> None:
    """A job that marks the point where the store's thread has drained."""


def sqlite_path(url: str) -> str:
    """``sqlite:///relative.db``, ``sqlite:////abs.db`` or ``sqlite:///:memory:`` to a path."""
    rest = url.split("://", 1)[1]
    if rest.startswith("/"):
        rest = rest[1:]
    return rest or ":memory:"
