"""The store behaves the same on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from elevenfactor.errors import ConfigError, MigrationRequired
from elevenfactor.store import (
    MIGRATIONS,
    Store,
    applied,
    blob_hash,
    get_blob,
    migrate,
    open_store,
    pending,
    put_blob,
    require_migrated,
)


async def test_migrate_applies_all_then_nothing(store_url: str) -> None:
    db = await open_store(store_url)
    try:
        with pytest.raises(MigrationRequired, match="elevenfactor migrate"):
            await require_migrated(db)
        assert await pending(db) == [m.name for m in MIGRATIONS]
        assert await migrate(db) == [m.name for m in MIGRATIONS]
        assert await migrate(db) == []
        assert await applied(db) == [m.name for m in MIGRATIONS]
        await require_migrated(db)
    finally:
        await db.close()


async def test_blobs_are_content_addressed(store: Store) -> None:
    payload = b"x" * 100_000
    digest = await put_blob(store, payload)
    assert digest == blob_hash(payload)
    assert await put_blob(store, payload) == digest
    row = await store.fetchone("SELECT COUNT(*) FROM blobs")
    assert row == (1,)
    assert await get_blob(store, digest) == payload
    assert await get_blob(store, "sha256:missing") is None


async def test_transaction_rolls_back_on_error(store: Store) -> None:
    with pytest.raises(RuntimeError):
        async with store.transaction() as tx:
            await put_blob(tx, b"half-written")
            raise RuntimeError("boom")
    assert await store.fetchone("SELECT COUNT(*) FROM blobs") == (0,)


async def test_literal_percent_and_placeholders(store: Store) -> None:
    await put_blob(store, b"100% sure")
    rows = await store.fetchall(
        "SELECT size FROM blobs WHERE hash LIKE 'sha256:%' AND size = ?", (9,)
    )
    assert rows == [(9,)]


async def test_unknown_scheme_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="DATABASE_URL") as info:
        await open_store("mysql://x")
    assert info.value.code == "config_invalid"


async def test_call_records_are_bounded_when_the_store_falls_behind(store: Store) -> None:
    from elevenfactor.observe import CallRecord, CallRecorder

    recorder = CallRecorder(store, max_pending=10)

    def rec(i: int) -> CallRecord:
        return CallRecord(
            trace_id=f"t{i}",
            route="r",
            stream=False,
            status="ok",
            tokens_in=1,
            tokens_out=1,
            latency_ms=1.0,
            request=b"req",
            response=b"resp",
        )

    for i in range(15):  # no writer running: everything queues
        recorder.record(rec(i))
    assert (recorder.payloads_shed, recorder.dropped) == (5, 5)
    assert await recorder.flush() == 10
    rows = await store.fetchall(
        "SELECT trace_id, request_hash IS NULL FROM model_calls ORDER BY trace_id"
    )
    assert len(rows) == 10
    assert sum(1 for _, no_payload in rows if no_payload) == 5


class _Ticker:
    """Ticks on the loop every few milliseconds; records the longest gap it saw."""

    def __init__(self) -> None:
        self.longest = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            self.longest = max(self.longest, now - last)
            last = now

    def __enter__(self) -> _Ticker:
        self._task = asyncio.ensure_future(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


def _outside(path: Path) -> sqlite3.Connection:
    """Another connection to the file, as another process would have (autocommit)."""
    return sqlite3.connect(path, isolation_level=None, check_same_thread=False)


async def _wait_until(cond: Callable[[], bool], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


async def test_sqlite_waits_for_a_lock_without_blocking_the_loop(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    db = await open_store(f"sqlite:///{path}")
    try:
        await db.execute("CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER)")
        other = _outside(path)
        other.execute("BEGIN IMMEDIATE")
        other.execute("INSERT INTO t VALUES ('outside', 0)")
        with _Ticker() as ticker:
            write = asyncio.ensure_future(db.execute("INSERT INTO t VALUES ('a', 1)"))

            async def in_tx() -> None:
                async with db.transaction() as tx:
                    await tx.execute("INSERT INTO t VALUES ('b', 2)")
                    await tx.execute("UPDATE t SET v = v + 10 WHERE k = 'a'")

            tx_task = asyncio.ensure_future(in_tx())
            read = asyncio.ensure_future(db.fetchone("SELECT COUNT(*) FROM t"))
            await asyncio.sleep(0.4)  # the lock is held for this long, whatever we do
            assert not (write.done() or tx_task.done() or read.done())
            other.execute("COMMIT")
            await asyncio.wait_for(asyncio.gather(write, tx_task, read), 10)
        # In order: the write, then the transaction, then the read saw both.
        assert write.result() == 1
        assert read.result() == (3,)
        assert ticker.longest < 0.05, f"the loop stalled {ticker.longest * 1000:.1f} ms"
        assert await db.fetchall("SELECT k, v FROM t ORDER BY k") == [
            ("a", 11),
            ("b", 2),
            ("outside", 0),
        ]
        await _wait_until(lambda: not getattr(db, "_pending", 0))  # back to inline
        assert await db.execute("INSERT INTO t VALUES ('c', 3)") == 1
        other.close()
    finally:
        await db.close()


async def test_sqlite_cancelled_while_waiting_for_the_lock_leaves_nothing_open(
    tmp_path: Path,
) -> None:
    path = tmp_path / "cancel.db"
    db = await open_store(f"sqlite:///{path}")
    try:
        await db.execute("CREATE TABLE t (k TEXT PRIMARY KEY)")
        other = _outside(path)
        other.execute("BEGIN IMMEDIATE")

        async def in_tx(key: str) -> None:
            async with db.transaction() as tx:
                await tx.execute("INSERT INTO t VALUES (?)", (key,))

        first = asyncio.ensure_future(in_tx("cancelled"))
        await asyncio.sleep(0.1)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        second = asyncio.ensure_future(in_tx("kept"))
        await asyncio.sleep(0.1)
        other.execute("COMMIT")
        await asyncio.wait_for(second, 10)
        assert await db.fetchall("SELECT k FROM t") == [("kept",)]
        # No transaction was left open on the store's connection: the outside one can write.
        other.execute("BEGIN IMMEDIATE")
        other.execute("INSERT INTO t VALUES ('outside')")
        other.execute("COMMIT")
        assert await db.fetchone("SELECT COUNT(*) FROM t") == (2,)
        other.close()
    finally:
        await db.close()


async def test_sqlite_errors_after_waiting_still_roll_back(tmp_path: Path) -> None:
    path = tmp_path / "errors.db"
    db = await open_store(f"sqlite:///{path}")
    try:
        await db.execute("CREATE TABLE t (k TEXT PRIMARY KEY)")
        await db.execute("INSERT INTO t VALUES ('dup')")
        other = _outside(path)
        other.execute("BEGIN IMMEDIATE")

        async def in_tx() -> None:
            async with db.transaction() as tx:
                await tx.execute("INSERT INTO t VALUES ('half')")
                await tx.execute("INSERT INTO t VALUES ('dup')")

        task = asyncio.ensure_future(in_tx())
        await asyncio.sleep(0.1)
        other.execute("COMMIT")
        with pytest.raises(sqlite3.IntegrityError):
            await asyncio.wait_for(task, 10)
        assert await db.fetchall("SELECT k FROM t") == [("dup",)]
        other.close()
    finally:
        await db.close()


async def test_sqlite_journal_moves_to_a_rowid_table_with_its_events_intact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from elevenfactor.runtime import Programs, RunContext, Worker, submit_run, verify_run
    from elevenfactor.runtime._journal import INLINE_MAX, load_events
    from elevenfactor.store import _migrations

    db = await open_store(f"sqlite:///{tmp_path}/old.db")
    try:
        before = tuple(m for m in MIGRATIONS if m.name != "m005_journal_rowid")
        monkeypatch.setattr(_migrations, "MIGRATIONS", before)
        await migrate(db)
        programs = Programs()

        @programs.workflow("two")
        async def two(ctx: RunContext, _: None) -> int:
            await ctx.step("small", lambda: 1)
            return len(await ctx.step("large", lambda: "x" * INLINE_MAX))

        rid = await submit_run(db, "two", None)
        await Worker(db, programs).run_until_idle()
        old = await load_events(db, rid)
        monkeypatch.setattr(_migrations, "MIGRATIONS", MIGRATIONS)
        assert await migrate(db) == ["m005_journal_rowid"]
        ddl = await db.fetchone("SELECT sql FROM sqlite_master WHERE name = 'journal'")
        assert ddl is not None and "WITHOUT ROWID" not in ddl[0]
        assert await load_events(db, rid) == old and len(old) == 2
        assert (await verify_run(db, rid)).ok
    finally:
        await db.close()


async def test_sqlite_bounds_a_checkpointed_wal(tmp_path: Path) -> None:
    """The WAL is cut back to 16 MiB after a checkpoint instead of staying at its high-water
    mark (the default, -1, keeps it)."""
    db = await open_store(f"sqlite:///{tmp_path / 'wal.db'}")
    try:
        row = await db.fetchone("PRAGMA journal_size_limit")
        assert row is not None and row[0] == 16 * 1024 * 1024
    finally:
        await db.close()
