"""Workers wake up on new work instead of waiting for their poll: in process on both stores,
across processes by LISTEN/NOTIFY on PostgreSQL (surviving a killed LISTEN connection); a
claim leases a batch of runs; a child run ending wakes its parent at once."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest

from elevenfactor.runtime import (
    Programs,
    RunContext,
    Worker,
    WorkerOptions,
    approval,
    decide_approval,
    get_run,
    list_approvals,
    submit_run,
)
from elevenfactor.runtime._claims import claim_runs
from elevenfactor.runtime._settle import settle_final
from elevenfactor.runtime._subruns import run_child
from elevenfactor.store import Store, migrate, open_store
from elevenfactor.store._notify import conninfo
from tests.support.principals import reviewer

pytestmark = pytest.mark.integration

SLOW = WorkerOptions(poll_interval=10.0, max_poll_interval=10.0)
"""A fallback poll so slow that a run starting within a second was woken, not polled."""

programs = Programs()


@programs.workflow("one_step")
async def one_step(ctx: RunContext, data: Any) -> Any:
    return await ctx.step("echo", lambda: data)


@programs.workflow("gated")
async def gated(ctx: RunContext, data: Any) -> Any:
    decision = await approval(ctx, "go", {"data": data})
    return await ctx.step("after", lambda: decision.action)


@programs.workflow("parent")
async def parent(ctx: RunContext, data: Any) -> Any:
    return await run_child(ctx, "one_step", data)


async def _first_step_at(store: Store, run_id: str, deadline: float = 5.0) -> float:
    """When the run's first journal event was written (waiting for it with a deadline)."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        row = await store.fetchone(
            "SELECT created_at FROM journal WHERE run_id = ? AND n = 0", (run_id,)
        )
        if row is not None:
            return float(row[0])
        await asyncio.sleep(0.005)
    raise AssertionError(f"run {run_id} did not start within {deadline} s")


async def _wait_for(cond: Any, deadline: float = 5.0) -> None:
    end = time.monotonic() + deadline
    while not cond():
        assert time.monotonic() < end, "condition not met before the deadline"
        await asyncio.sleep(0.01)


class _Serving:
    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Worker:
        self.task = asyncio.create_task(self.worker.serve())
        if self.worker.store.dialect == "postgresql":
            await _wait_for(lambda: self.worker.listen_pid is not None)
        await asyncio.sleep(0.05)  # past the first (empty) claims
        return self.worker

    async def __aexit__(self, *exc: object) -> None:
        self.worker.stop()
        assert self.task is not None
        await asyncio.wait_for(self.task, 10)


async def _latencies(submitter: Store, observer: Store, n: int) -> list[float]:
    out = []
    for i in range(n):
        rid = await submit_run(submitter, "one_step", {"i": i})
        created = (await get_run(observer, rid)).created_at
        out.append(await _first_step_at(observer, rid) - created)
    return out


async def test_a_run_submitted_in_process_starts_without_waiting_for_the_poll(
    store: Store,
) -> None:
    async with _Serving(Worker(store, programs, SLOW)):
        lat = await _latencies(store, store, 5)
    assert statistics.median(lat) < 0.1, lat
    assert max(lat) < 2.0, lat


@pytest.fixture
async def pair(store_url: str) -> AsyncIterator[tuple[Store, Store]]:
    """Two stores on one database under different URLs: the in-process wake-up (keyed by URL)
    cannot pass between them, as between two processes."""
    if store_url.startswith("postgresql"):
        other = store_url + "&application_name=ef-test-client"
    else:
        other = store_url.replace("/test.db", "/./test.db")
    assert other != store_url
    worker_db = await open_store(store_url)
    await migrate(worker_db)
    client_db = await open_store(other)
    try:
        yield worker_db, client_db
    finally:
        await client_db.close()
        await worker_db.close()


@pytest.fixture
async def pg_pair(pair: tuple[Store, Store]) -> tuple[Store, Store]:
    if pair[0].dialect != "postgresql":
        pytest.skip("PostgreSQL only (LISTEN/NOTIFY, concurrent transactions)")
    return pair


async def test_a_run_submitted_by_another_process_starts_without_waiting_for_the_poll(
    pair: tuple[Store, Store],
) -> None:
    # PostgreSQL: NOTIFY; SQLite: the idle worker watches PRAGMA data_version.
    worker_db, client_db = pair
    async with _Serving(Worker(worker_db, programs, SLOW)):
        lat = await _latencies(client_db, client_db, 5)
    assert statistics.median(lat) < 0.1, lat
    assert max(lat) < 2.0, lat


async def test_a_killed_listen_connection_reconnects_and_still_wakes_the_worker(
    pg_pair: tuple[Store, Store],
) -> None:
    worker_db, client_db = pg_pair
    async with _Serving(Worker(worker_db, programs, SLOW)) as worker:
        old = worker.listen_pid
        assert old is not None
        with psycopg.connect(conninfo(client_db.url), autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (old,))
        await _wait_for(lambda: worker.listen_pid not in (None, old))
        lat = await _latencies(client_db, client_db, 3)
    assert max(lat) < 2.0, lat  # far below the 10 s poll: woken by NOTIFY on the new link


async def test_a_run_no_notification_announces_is_found_by_the_fallback_poll(
    store: Store,
) -> None:
    # A timer: no trigger fires when it falls due; the slow poll finds it.
    worker = Worker(store, programs, WorkerOptions(poll_interval=0.5, max_poll_interval=0.5))
    async with _Serving(worker):
        rid = await submit_run(store, "one_step", {"t": 1}, start_at=time.time() + 0.3)
        started = await _first_step_at(store, rid, deadline=5.0)
    assert started - (await get_run(store, rid)).created_at < 2.0


async def test_a_child_ending_wakes_its_parent_at_once(store: Store) -> None:
    async with _Serving(Worker(store, programs, SLOW)):
        t0 = time.time()
        rid = await submit_run(store, "parent", {"x": 1})

        async def done() -> bool:
            return (await get_run(store, rid)).status == "succeeded"

        end = time.monotonic() + 5
        while not await done():
            assert time.monotonic() < end, "the parent was not woken"
            await asyncio.sleep(0.01)
    assert time.time() - t0 < 2.0


async def test_one_claim_leases_a_batch_with_inputs_and_owners(store: Store) -> None:
    ids = [await submit_run(store, "one_step", {"i": i}) for i in range(5)]
    first = await claim_runs(store, "w1", ["default"], 30, None, 3)
    second = await claim_runs(store, "w2", ["default"], 30, None, 3)
    assert len(first) == 3 and len(second) == 2
    assert {lease.run_id for lease in first + second} == set(ids)
    for lease in first + second:
        assert lease.input_data is not None
        assert lease.owner is not None and lease.owner.user_id
        assert lease.attempt == 1 and lease.fence == 1
    assert await claim_runs(store, "w3", ["default"], 30, None, 3) == []


async def test_concurrent_claims_never_lease_a_run_twice(store: Store) -> None:
    ids = {await submit_run(store, "one_step", {"i": i}) for i in range(40)}
    batches = await asyncio.gather(
        *(claim_runs(store, f"w{k}", ["default"], 30, None, 8) for k in range(6))
    )
    claimed = [lease.run_id for batch in batches for lease in batch]
    assert len(claimed) == len(set(claimed))
    assert set(claimed) <= ids


async def test_an_approval_decided_elsewhere_resumes_the_run_at_once(
    pair: tuple[Store, Store],
) -> None:
    worker_db, client_db = pair
    async with _Serving(Worker(worker_db, programs, SLOW)):
        rid = await submit_run(client_db, "gated", {"x": 1})
        await _wait_for_status(client_db, rid, "waiting")
        [pending] = await list_approvals(client_db)
        t0 = time.monotonic()
        await decide_approval(client_db, pending.id, "approve", by=reviewer("alice"))
        await _wait_for_status(client_db, rid, "succeeded")
    assert time.monotonic() - t0 < 2.0  # woken, not polled (the poll is 10 s)


async def _wait_for_status(store: Store, run_id: str, status: str) -> None:
    end = time.monotonic() + 5
    while (await get_run(store, run_id)).status != status:
        assert time.monotonic() < end, f"run {run_id} never became {status}"
        await asyncio.sleep(0.01)


async def test_a_child_ending_while_its_parent_parks_still_wakes_it(
    pg_pair: tuple[Store, Store],
) -> None:
    """The lost wake-up: the parent's park is in flight (row updated, not committed) when the
    child's end is written. The end waits for the park to commit, then wakes the parent."""
    db, _ = pg_pair
    parent_id = await submit_run(db, "parent", {})
    [parent_lease] = await claim_runs(db, "w1", ["default"], 30, None, 1)
    child_id = await submit_run(db, "one_step", {}, parent_id=parent_id, run_id=parent_id + ".0")
    [child_lease] = await claim_runs(db, "w1", ["default"], 30, None, 1)
    assert (parent_lease.run_id, child_lease.run_id) == (parent_id, child_id)
    with psycopg.connect(conninfo(db.url)) as park:
        # The parent's park, uncommitted: it has checked its wake-up condition (the child had
        # not ended) and holds its row.
        park.execute("UPDATE runs SET status = 'waiting' WHERE id = %s", (parent_id,))
        end = asyncio.create_task(
            settle_final(
                db,
                child_id,
                child_lease.fence,
                {"worker": "w1"},
                "succeeded",
                head_hash=child_lease.genesis_hash,
                events=0,
                result=b"1",
            )
        )
        await asyncio.sleep(0.3)
        assert not end.done()  # waiting for the park to commit
        park.commit()
    assert await asyncio.wait_for(end, 5) == (True, True)
    assert (await get_run(db, parent_id)).status == "queued"
