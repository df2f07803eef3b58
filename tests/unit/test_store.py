"""The store behaves the same on SQLite and PostgreSQL."""

from __future__ import annotations

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
