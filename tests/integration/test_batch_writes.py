"""The background batch writers (call records, committed budget holds) on both stores.

What is read back is exactly what was queued, at one row a batch and at 500: NULLs, unicode,
large and binary payloads, payloads shared by many records and already stored, holds written
twice. A batch that fails writes nothing and stays queued.
"""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any

import orjson
import psycopg
import pytest

from elevenfactor.governance import local_admin
from elevenfactor.governance._alerts import Alerts
from elevenfactor.governance._budget_admin import set_budget
from elevenfactor.governance._budgets import Budget
from elevenfactor.governance._gate_defs import Definitions
from elevenfactor.governance._redis_writer import Committed, StoreWriter
from elevenfactor.governance._spend import Hold
from elevenfactor.observe import CallRecord, CallRecorder
from elevenfactor.observe._calls import RECORD_COLUMNS, record_hash
from elevenfactor.runtime._audit_records import check_calls
from elevenfactor.runtime._audit_report import AuditReport
from elevenfactor.store import Store, blob_hash, get_blob, put_blob

pytestmark = pytest.mark.integration

SIZES = [1, 500]
ADMIN = local_admin("cli")
SHARED = b"\x00shared payload \xff\xfe" * 64
"""The request of every odd record: one blob for many records, stored before the batch."""
BIG = bytes(range(256)) * 4096
"""1 MiB holding every byte value: the first record's request."""
FAILED = (sqlite3.IntegrityError, psycopg.errors.IntegrityError)


def _record(i: int, *, id: str | None = None) -> CallRecord:
    odd = bool(i % 2)
    return CallRecord(
        id=id or f"call-{i:04d}",
        trace_id=f"trace-{i}",
        created_at=1_700_000_000.25 + i / 7,
        route="café ☕ 路由" if odd else "default",
        stream=odd,
        status="error" if i % 5 == 0 else "ok",
        error_class="Timeout" if i % 5 == 0 else None,
        tokens_in=i,
        tokens_out=2**31 - 1 - i,
        tokens_cached=2**40 + i,
        latency_ms=i + 0.123456789,
        provider=None if i % 3 == 0 else "openai",
        deployment=None if i % 3 == 0 else "gpt-4o-mini",
        model=None if i % 3 == 0 else "modèle-😀",
        cost=None if i % 4 == 0 else i * 1e-7,
        saved=None if i % 4 == 0 else 1 / 3,
        price_version=None if i % 4 == 0 else "pv-ü",
        cache_hit=i % 7 == 0,
        failover_path=["openai:a", "anthropic:b—ü"] if odd else [],
        tags=["t1", "ünï"] if odd else [],
        api_key_id=None if odd else "key_1",
        org_id="org_default",
        user_id="usér",
        agent="écrivain" if odd else None,
        session_id=None,
        kind="embedding" if i % 6 == 0 else None,
        release_id="rel-ü" if i % 8 == 0 else None,
        request=BIG if i == 0 else SHARED if odd else f"req {i} ✓".encode(),
        response=None if i % 3 == 1 else f"resp {i}".encode() + b"\x00\x01",
    )


def _expected(r: CallRecord) -> tuple[Any, ...]:
    row = (
        *(r.id, r.trace_id, r.created_at, r.api_key_id, r.route, r.provider, r.deployment),
        *(r.model, int(r.stream), r.status, r.error_class, r.tokens_in, r.tokens_out),
        *(r.latency_ms, r.cost, int(r.cache_hit), orjson.dumps(r.failover_path).decode()),
        blob_hash(r.request) if r.request is not None else None,
        blob_hash(r.response) if r.response is not None else None,
        *(r.org_id, r.team_id, r.user_id, r.run_id, r.agent, r.session_id),
        orjson.dumps(r.tags).decode() if r.tags else None,
        *(r.tokens_cached, r.price_version, r.saved, r.prompt, r.kind),
        orjson.dumps(r.guard).decode() if r.guard is not None else None,
        r.release_id,
    )
    return (*row, record_hash(row))


async def _calls(store: Store) -> list[tuple[Any, ...]]:
    cols = ", ".join((*RECORD_COLUMNS, "record_hash"))
    return [tuple(r) for r in await store.fetchall(f"SELECT {cols} FROM model_calls ORDER BY id")]


async def _count(store: Store, table: str) -> int:
    row = await store.fetchone(f"SELECT count(*) FROM {table}")
    assert row is not None
    return int(row[0])


@pytest.mark.parametrize("size", SIZES)
async def test_call_records_read_back_as_recorded(store: Store, size: int) -> None:
    await put_blob(store, SHARED)  # already stored: the batch's copies conflict with it
    recorder = CallRecorder(store)
    records = [_record(i) for i in range(size)]
    for r in records:
        recorder.record(r)
    assert await recorder.flush() == size

    assert await _calls(store) == [_expected(r) for r in records]
    payloads = {p for r in records for p in (r.request, r.response) if p is not None}
    for p in payloads:
        assert await get_blob(store, blob_hash(p)) == p
    assert await _count(store, "blobs") == len(payloads | {SHARED})
    sizes = await store.fetchall("SELECT hash, size FROM blobs")
    assert sorted(sizes) == sorted((blob_hash(p), len(p)) for p in payloads | {SHARED})

    report = AuditReport()
    await check_calls(store, report)
    assert report.calls == size
    assert report.findings == []


async def test_flush_waits_for_a_write_under_way(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = CallRecorder(store)
    real = store.write_batch
    started = asyncio.Event()

    async def slow(statements: Any) -> Any:
        started.set()
        await asyncio.sleep(0.2)
        return await real(statements)

    monkeypatch.setattr(store, "write_batch", slow)
    recorder.record(_record(0))
    background = asyncio.create_task(recorder.flush())  # the writer's own flush, under way
    await started.wait()
    await recorder.flush()  # nothing left queued, but it must wait for that write
    assert [row[0] for row in await _calls(store)] == [_record(0).id]
    assert await background == 1


@pytest.mark.parametrize("size", SIZES)
async def test_a_failing_call_batch_writes_nothing(store: Store, size: int) -> None:
    recorder = CallRecorder(store)
    recorder.record(_record(0, id="call-taken"))
    await recorder.flush()
    before = (await _calls(store), await _count(store, "blobs"))

    batch = [_record(i) for i in range(1, size)]
    clash = _record(size, id="call-taken")  # the same primary key as the row above
    clash.request = b"a payload only this batch has"
    for r in [*batch, clash]:
        recorder.record(r)
    with pytest.raises(FAILED):
        await recorder.flush()

    assert (await _calls(store), await _count(store, "blobs")) == before
    assert await get_blob(store, blob_hash(clash.request)) is None
    assert recorder.written == 1
    with pytest.raises(FAILED):  # still queued: the next flush retries the same rows
        await recorder.flush()


# -- committed budget holds ----------------------------------------------------------------


class _Fired(Alerts):
    def __init__(self) -> None:
        super().__init__()
        self.fired: list[tuple[str, str, float, float]] = []

    def fire(self, budget: Budget, window_key: str, threshold: float, spent: float) -> None:
        self.fired.append((budget.id, window_key, threshold, spent))


def _commits(org: Budget, user: Budget, size: int) -> list[Committed]:
    """``size`` holds on two budgets' windows, each cost ``i + 1`` cents, spent cumulative."""
    out = []
    spent = 0.0
    for i in range(size):
        cost = (i + 1) / 100
        hold = Hold(
            id=f"hold-{i:04d}",
            amount=cost * 2,
            windows=((org.id, "total"), (user.id, "2026-01-02")),
            expires_at=1_800_000_000.5 + i,
            soft=("soft-ü",) if i % 2 else (),
        )
        out.append(Committed(hold, cost, 1_700_000_000.5 + i, ((spent, spent + cost),) * 2))
        spent += cost
    return out


def _hold_row(c: Committed) -> tuple[Any, ...]:
    h = c.hold
    windows = orjson.dumps([list(w) for w in h.windows]).decode()
    soft = orjson.dumps(list(h.soft)).decode()
    done = (c.cost, c.at, h.expires_at, c.at)
    return (h.id, "org_default", h.amount, windows, soft, "committed", *done)


async def _holds(store: Store) -> list[tuple[Any, ...]]:
    rows = await store.fetchall(
        "SELECT id, org_id, amount, windows, soft, status, cost, created_at, expires_at,"
        " settled_at FROM budget_holds ORDER BY id"
    )
    return [tuple(r) for r in rows]


async def _spent(store: Store, budget: Budget, key: str) -> float:
    row = await store.fetchone(
        "SELECT spent FROM budget_usage WHERE budget_id = ? AND window_key = ?", (budget.id, key)
    )
    assert row is not None
    return float(row[0])


async def _writer(store: Store, size: int) -> tuple[StoreWriter, _Fired, Budget, Budget]:
    """A writer, a budget on the organisation whose alerts ``size`` holds cross, and one on the
    user."""
    total = sum((i + 1) / 100 for i in range(size))
    org = await set_budget(store, ADMIN, "org", total * 1.05, window="total", alerts=[0.5, 0.9])
    user = await set_budget(store, ADMIN, "user:local", 1e6, window="day")
    defs = Definitions(store)
    await defs.load()
    fired = _Fired()
    return StoreWriter(store, defs, fired, interval=3600), fired, org, user


@pytest.mark.parametrize("size", SIZES)
async def test_committed_holds_read_back_as_committed(store: Store, size: int) -> None:
    writer, fired, org, user = await _writer(store, size)
    try:
        hold = Hold("hold-9999", 5.0, ((user.id, "2026-01-02"),), 2e9)
        earlier = Committed(hold, 5.0, 1.5, ((0.0, 5.0),))
        writer.add(earlier)
        await writer.flush()

        commits = _commits(org, user, size)
        again = Committed(commits[0].hold, 99.0, 2.5, commits[0].spent)  # twice in one batch
        for c in [*commits, again, Committed(earlier.hold, 7.0, 3.5, ((5.0, 12.0),))]:
            writer.add(c)
        assert writer.pending_cost((user.id, "2026-01-02")) > 0
        await writer.flush()

        assert await _holds(store) == sorted(_hold_row(c) for c in [*commits, earlier])
        cost = sum(c.cost for c in commits)
        assert await _spent(store, org, "total") == pytest.approx(cost, rel=1e-12)
        assert await _spent(store, user, "2026-01-02") == pytest.approx(5 + cost, rel=1e-12)
        assert writer.pending_cost((user.id, "2026-01-02")) == 0

        # Each threshold fires once, for the hold that crossed it, with the spent after it.
        crossing = {
            t: next(c for c in commits if c.spent[0][1] >= t * org.limit - 1e-12)
            for t in (0.5, 0.9)
        }
        assert fired.fired == [(org.id, "total", t, crossing[t].spent[0][1]) for t in (0.5, 0.9)]
        alerts = await store.fetchall("SELECT budget_id, window_key, threshold FROM budget_alerts")
        assert sorted(alerts) == [(org.id, "total", 0.5), (org.id, "total", 0.9)]

        # The same holds committed again (another process's writer): nothing changes.
        for c in commits:
            writer.add(c)
        await writer.flush()
        assert await _spent(store, org, "total") == pytest.approx(cost, rel=1e-12)
        assert len(fired.fired) == 2
        assert await _count(store, "budget_holds") == size + 1
    finally:
        await writer.aclose()


@pytest.mark.parametrize("size", SIZES)
async def test_a_failing_hold_batch_writes_nothing(store: Store, size: int) -> None:
    writer, fired, org, user = await _writer(store, size)
    commits = _commits(org, user, size)
    bad = commits[-1].hold
    commits[-1] = Committed(
        Hold(bad.id, None, bad.windows, bad.expires_at),  # type: ignore[arg-type]
        commits[-1].cost,
        commits[-1].at,
        commits[-1].spent,
    )
    for c in commits:
        writer.add(c)
    with pytest.raises(FAILED):
        await writer.flush()

    for table in ("budget_holds", "budget_usage", "budget_alerts"):
        assert await _count(store, table) == 0, table
    assert fired.fired == []
    cost = sum(c.cost for c in commits)
    assert writer.pending_cost((org.id, "total")) == pytest.approx(cost)  # still queued
    with pytest.raises(FAILED):
        await writer.aclose()  # the last flush retries the same batch
