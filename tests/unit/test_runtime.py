"""Durable execution over the journal, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from elevenfactor.errors import StepFailed
from elevenfactor.runtime import (
    Programs,
    RunContext,
    StepRetry,
    Worker,
    WorkerOptions,
    cancel_run,
    claim_run,
    get_run,
    load_events,
    run_result,
    step_key,
    submit_run,
    verify_run,
)
from elevenfactor.store import Store

effects: Counter[str] = Counter()


def effect(name: str) -> str:
    effects[name] += 1
    return f"{name}-done"


@pytest.fixture(autouse=True)
def _reset() -> None:
    effects.clear()


def three_steps(
    programs: Programs, gate: asyncio.Event | None = None, reached: asyncio.Event | None = None
) -> None:
    @programs.workflow("three")
    async def three(ctx: RunContext, data: dict[str, Any]) -> dict[str, Any]:
        a = await ctx.step("a", effect, "a")
        b = await ctx.step("b", effect, "b")
        if reached is not None:
            reached.set()
        if gate is not None:
            await gate.wait()
        c = await ctx.step("c", effect, "c")
        return {"steps": [a, b, c], "n": data["n"]}


async def _expire_lease(store: Store, run_id: str) -> None:
    await store.execute(
        "UPDATE runs SET lease_expires_at = ? WHERE id = ?", (time.time() - 1, run_id)
    )


async def test_run_succeeds_with_a_verified_journal(store: Store) -> None:
    programs = Programs()
    three_steps(programs)
    rid = await submit_run(store, "three", {"n": 7})
    await Worker(store, programs).run_until_idle()
    run = await get_run(store, rid)
    assert run.status == "succeeded"
    assert await run_result(store, run) == {"steps": ["a-done", "b-done", "c-done"], "n": 7}
    events = await load_events(store, rid)
    assert [(e.n, e.step_id, e.kind, e.name, e.status) for e in events] == [
        (0, "0", "step", "a", "done"),
        (1, "1", "step", "b", "done"),
        (2, "2", "step", "c", "done"),
    ]
    report = await verify_run(store, rid)
    assert report.ok and report.events == 3


async def test_a_killed_execution_resumes_without_repeating_steps(store: Store) -> None:
    programs = Programs()
    gate, reached = asyncio.Event(), asyncio.Event()
    three_steps(programs, gate, reached)
    rid = await submit_run(store, "three", {"n": 1})
    first = Worker(store, programs, WorkerOptions(lease_seconds=30), worker_id="w1")
    lease = await claim_run(store, "w1", ["default"], 30)
    assert lease is not None
    task = asyncio.create_task(first.execute(lease))
    await reached.wait()
    task.cancel()  # the process dies: nothing settles, the lease stays
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (await get_run(store, rid)).status == "running"
    assert not await Worker(store, programs, worker_id="w2").run_once()  # lease still valid
    await _expire_lease(store, rid)
    gate.set()
    second = Worker(store, programs, worker_id="w2")
    assert await second.run_once()
    run = await get_run(store, rid)
    assert run.status == "succeeded" and run.fence == 2
    assert effects == Counter({"a": 1, "b": 1, "c": 1})
    assert (await verify_run(store, rid)).ok


async def test_a_stale_worker_cannot_write_after_takeover(store: Store) -> None:
    programs = Programs()
    three_steps(programs)
    rid = await submit_run(store, "three", {"n": 1})
    old = await claim_run(store, "old", ["default"], 30)
    assert old is not None
    await _expire_lease(store, rid)
    new = await claim_run(store, "new", ["default"], 30)
    assert new is not None and new.fence == old.fence + 1
    stale = await RunContext.open(store, old)
    from elevenfactor.errors import LeaseLost

    with pytest.raises(LeaseLost):
        await stale.step("a", effect, "a")
    assert await load_events(store, rid) == []


async def test_divergence_names_both_steps(store: Store) -> None:
    programs = Programs()
    version = {"v": 1}

    @programs.workflow("changing")
    async def changing(ctx: RunContext, _: Any) -> None:
        await ctx.step("fetch", effect, "fetch")
        if version["v"] == 2:
            await ctx.step("renamed", effect, "x")
        await ctx.sleep(0.05)

    rid = await submit_run(store, "changing", None)
    worker = Worker(store, programs)
    await worker.run_once()  # parks on the timer after "fetch", "now"
    version["v"] = 2
    await asyncio.sleep(0.06)
    await worker.run_until_idle()
    run = await get_run(store, rid)
    assert run.status == "failed"
    err = run.error_dict()
    assert err is not None and err["code"] == "journal_divergence"
    assert "'renamed'" in err["message"] and "clock 'now'" in err["message"]


async def test_durable_sleep_parks_and_wakes(store: Store) -> None:
    programs = Programs()
    starts: list[float] = []

    @programs.workflow("sleeper")
    async def sleeper(ctx: RunContext, _: Any) -> float:
        start = await ctx.now()
        starts.append(start)
        await ctx.sleep(0.2)
        return await ctx.now() - start

    rid = await submit_run(store, "sleeper", None)
    worker = Worker(store, programs)
    assert await worker.run_once()
    run = await get_run(store, rid)
    assert run.status == "queued" and run.wake_at is not None and run.lease_owner is None
    assert not await worker.run_once()  # not due yet
    deadline = time.monotonic() + 5
    while not await worker.run_once():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    run = await get_run(store, rid)
    assert run.status == "succeeded"
    slept = await run_result(store, run)
    assert slept >= 0.2
    assert len(set(starts)) == 1  # the clock step replayed the same start time


async def test_failed_steps_replay_identically_and_runs_retry(store: Store) -> None:
    programs = Programs()
    calls = Counter[str]()

    def flaky() -> None:
        calls["flaky"] += 1
        raise ValueError("nope")

    @programs.workflow("retrying")
    async def retrying(ctx: RunContext, _: Any) -> str:
        await ctx.step("a", effect, "a")
        try:
            await ctx.step("flaky", flaky, retry=StepRetry(attempts=2, backoff=0.001))
        except StepFailed as exc:
            assert exc.error_type == "ValueError"
        calls["program"] += 1
        if calls["program"] < 2:
            raise RuntimeError("program crashed after the failed step")
        return "ok"

    rid = await submit_run(store, "retrying", None, max_attempts=2, retry_backoff=0.01)
    worker = Worker(store, programs)
    deadline = time.monotonic() + 5
    while (await get_run(store, rid)).status != "succeeded":
        assert time.monotonic() < deadline, await get_run(store, rid)
        if not await worker.run_once():
            await asyncio.sleep(0.01)
    # the step retries twice in each attempt; the second attempt re-runs the failed step only
    assert calls == Counter({"flaky": 4, "program": 2})
    assert effects["a"] == 1
    run = await get_run(store, rid)
    assert run.attempt == 2  # attempts started: the second succeeded


async def test_runs_exhaust_their_attempts(store: Store) -> None:
    programs = Programs()

    @programs.workflow("broken")
    async def broken(ctx: RunContext, _: Any) -> None:
        raise KeyError("missing thing")

    rid = await submit_run(store, "broken", None)
    await Worker(store, programs).run_until_idle()
    run = await get_run(store, rid)
    assert run.status == "failed" and run.attempt == 1
    assert run.error_dict() == {"code": "program_error", "message": "KeyError: 'missing thing'"}


async def test_cancel_queued_and_running(store: Store) -> None:
    programs = Programs()
    started = asyncio.Event()

    @programs.workflow("forever")
    async def forever(ctx: RunContext, _: Any) -> None:
        await ctx.step("a", effect, "a")
        started.set()
        await asyncio.sleep(60)

    queued = await submit_run(store, "forever", None, queue="other")
    assert (await cancel_run(store, queued)).status == "cancelled"
    rid = await submit_run(store, "forever", None)
    worker = Worker(store, programs, WorkerOptions(lease_seconds=0.3))
    task = asyncio.create_task(worker.run_once())
    await started.wait()
    await cancel_run(store, rid, "user asked")
    await asyncio.wait_for(task, 5)
    run = await get_run(store, rid)
    assert run.status == "cancelled" and run.error_dict()["code"] == "run_cancelled"  # type: ignore[index]


async def test_deadline(store: Store) -> None:
    programs = Programs()

    @programs.workflow("slow")
    async def slow(ctx: RunContext, _: Any) -> None:
        await asyncio.sleep(10)

    rid = await submit_run(store, "slow", None, deadline=0.2)
    await Worker(store, programs).run_until_idle()
    run = await get_run(store, rid)
    assert run.status == "failed" and run.error_dict()["code"] == "deadline_exceeded"  # type: ignore[index]


async def test_priority_and_idempotent_submission(store: Store) -> None:
    programs = Programs()
    order: list[str] = []

    @programs.workflow("mark")
    async def mark(ctx: RunContext, name: str) -> None:
        order.append(name)

    await submit_run(store, "mark", "low", priority=0)
    await submit_run(store, "mark", "high", priority=5, run_id="fixed")
    assert await submit_run(store, "mark", "high", priority=5, run_id="fixed") == "fixed"
    await Worker(store, programs).run_until_idle()
    assert order == ["high", "low"]


async def test_step_key_is_stable(store: Store) -> None:
    programs = Programs()
    keys: list[str | None] = []

    @programs.workflow("keyed")
    async def keyed(ctx: RunContext, _: Any) -> None:
        await ctx.step("a", lambda: keys.append(step_key()))

    rid = await submit_run(store, "keyed", None)
    await Worker(store, programs).run_until_idle()
    assert keys == [f"{rid}:0"]


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        ("UPDATE journal SET name = 'evil' WHERE n = 1", "edited"),
        ("DELETE FROM journal WHERE n = 1", "missing"),
        ("DELETE FROM journal WHERE n = 2", "cut short"),
        ("UPDATE journal SET n = n + 10 WHERE n = 0", "missing"),
        ("UPDATE journal SET step_id = 'x' WHERE n = 0", "edited"),
        ("UPDATE runs SET input_hash = 'sha256:other'", "genesis"),
    ],
)
async def test_audit_finds_the_first_broken_link(store: Store, tamper: str, reason: str) -> None:
    programs = Programs()
    three_steps(programs)
    rid = await submit_run(store, "three", {"n": 1})
    await Worker(store, programs).run_until_idle()
    assert (await verify_run(store, rid)).ok
    await store.execute(tamper)
    report = await verify_run(store, rid)
    assert not report.ok and reason in (report.reason or "")


async def test_parallel_branches_replay_by_position(store: Store) -> None:
    programs = Programs()
    gate = asyncio.Event()
    parked = {0: asyncio.Event(), 2: asyncio.Event()}

    async def branch(ctx: RunContext, item: int) -> int:
        first = await ctx.step("double", lambda: effect(f"d{item}") and item * 2)
        if item in parked:
            parked[item].set()
            await gate.wait()
        return first + await ctx.step("inc", lambda: effect(f"i{item}") and 1)

    @programs.workflow("fan")
    async def fan(ctx: RunContext, items: list[int]) -> list[int]:
        out = await ctx.map(branch, items, limit=2)
        await ctx.step("after", effect, "after")
        return out

    rid = await submit_run(store, "fan", [0, 1, 2, 3])
    lease = await claim_run(store, "w1", ["default"], 30)
    assert lease is not None
    task = asyncio.create_task(Worker(store, programs).execute(lease))
    await parked[0].wait()  # branch 0 waits; branch 1 finishes, which lets branch 2 start
    await parked[2].wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await _expire_lease(store, rid)
    gate.set()
    await Worker(store, programs).run_until_idle()
    run = await get_run(store, rid)
    assert run.status == "succeeded"
    assert await run_result(store, run) == [1, 3, 5, 7]
    assert all(v == 1 for v in effects.values()), effects
    ids = {e.step_id for e in await load_events(store, rid)}
    assert {"0.0.0", "0.0.1", "0.3.1", "1"} <= ids
    assert effects["i1"] == 1
    assert (await verify_run(store, rid)).ok


async def test_saga_compensates_in_reverse_and_resumes(store: Store) -> None:
    from elevenfactor.runtime import Saga

    programs = Programs()
    undone: list[str] = []
    gate, reached = asyncio.Event(), asyncio.Event()

    async def undo(name: str) -> None:
        undone.append(name)
        if name == "hotel" and not gate.is_set():
            reached.set()
            await gate.wait()  # the worker dies here, mid-compensation

    def charge() -> None:
        raise RuntimeError("card declined")

    @programs.workflow("trip")
    async def trip(ctx: RunContext, _: Any) -> None:
        async with Saga(ctx) as saga:
            await ctx.step("flight", effect, "flight")
            saga.compensate("cancel_flight", undo, "flight")
            await ctx.step("hotel", effect, "hotel")
            saga.compensate("cancel_hotel", undo, "hotel")
            await ctx.step("charge", charge)

    rid = await submit_run(store, "trip", None)
    lease = await claim_run(store, "w1", ["default"], 30)
    assert lease is not None
    task = asyncio.create_task(Worker(store, programs).execute(lease))
    await reached.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await _expire_lease(store, rid)
    gate.set()
    await Worker(store, programs).run_until_idle()
    run = await get_run(store, rid)
    assert run.status == "failed" and "card declined" in run.error_dict()["message"]  # type: ignore[index]
    assert undone == ["hotel", "hotel", "flight"]  # the interrupted undo re-ran, the rest once
    kinds = [(e.kind, e.name) for e in await load_events(store, rid)]
    assert kinds[-2:] == [("compensate", "cancel_hotel"), ("compensate", "cancel_flight")]
    assert effects == Counter({"flight": 1, "hotel": 1})


async def test_runs_retry_only_on_the_named_errors(store: Store) -> None:
    programs = Programs()
    attempts = Counter[str]()

    def flaky(kind: str) -> None:
        attempts[kind] += 1
        raise (TimeoutError if kind == "timeout" else ValueError)(kind)

    @programs.workflow("flaky")
    async def run_flaky(ctx: RunContext, kind: str) -> None:
        await ctx.step("setup", effect, kind)  # succeeded once: never repeated by a retry
        await ctx.step("call", flaky, kind)  # failed: a retried attempt runs it again

    for kind in ("timeout", "value"):
        await submit_run(
            store, "flaky", kind, max_attempts=3, retry_backoff=0.001, retry_on=["TimeoutError"]
        )
    worker = Worker(store, programs)
    deadline = time.monotonic() + 5
    while len(await store.fetchall("SELECT 1 FROM runs WHERE status = 'failed'")) < 2:
        assert time.monotonic() < deadline
        if not await worker.run_once():
            await asyncio.sleep(0.01)
    assert attempts == Counter({"timeout": 3, "value": 1})
    assert effects == Counter({"timeout": 1, "value": 1})


async def test_queue_concurrency_limit_holds_across_workers(store: Store) -> None:
    programs = Programs()
    running = 0
    peak = 0
    release = asyncio.Event()

    @programs.workflow("slot")
    async def slot(ctx: RunContext, _: Any) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await release.wait()
        running -= 1

    for _ in range(5):
        await submit_run(store, "slot", None, queue="narrow")
    options = WorkerOptions(
        queues=("narrow",), concurrency=4, queue_limits={"narrow": 2}, poll_interval=0.01
    )
    workers = [Worker(store, programs, options, worker_id=f"w{i}") for i in range(2)]
    tasks = [asyncio.create_task(w.serve()) for w in workers]
    deadline = time.monotonic() + 5
    while running < 2:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)  # give a third claim every chance to (wrongly) happen
    assert running == 2
    release.set()
    while len(await store.fetchall("SELECT 1 FROM runs WHERE status = 'succeeded'")) < 5:
        assert time.monotonic() < deadline + 5
        await asyncio.sleep(0.02)
    for w in workers:
        w.stop()
    await asyncio.gather(*tasks)
    assert peak == 2


async def test_a_worker_that_cannot_heartbeat_stops_before_its_lease_lapses(
    store: Store,
) -> None:
    programs = Programs()
    started = asyncio.Event()

    async def long_effect() -> str:
        started.set()
        await asyncio.sleep(30)
        return "done"

    @programs.workflow("long")
    async def long(ctx: RunContext, _: Any) -> str:
        return await ctx.step("long", long_effect)

    rid = await submit_run(store, "long", None)
    worker = Worker(store, programs, WorkerOptions(lease_seconds=0.9))
    real_fetchone = store.fetchone

    async def failing_heartbeats(sql: str, params: Any = ()) -> Any:
        if sql.startswith("UPDATE runs SET lease_expires_at"):
            raise OSError("store unreachable")
        return await real_fetchone(sql, params)

    store.fetchone = failing_heartbeats  # type: ignore[method-assign]
    try:
        started_at = time.monotonic()
        await asyncio.wait_for(worker.run_once(), 5)
        assert time.monotonic() - started_at < 1.5  # stopped mid-step, before the lease lapsed
    finally:
        store.fetchone = real_fetchone  # type: ignore[method-assign]
    assert started.is_set()
    run = await get_run(store, rid)
    assert run.status == "running" and await load_events(store, rid) == []


def test_event_rows_hash_as_the_audit_expects() -> None:
    from elevenfactor.runtime._journal import event_hash, event_row
    from elevenfactor.store import blob_hash

    output = b'{"x":1}'
    row = event_row("r1", 3, "3", "step", "s", "done", output, None, 2, "p" * 64)
    (run_id, n, step_id, kind, name, status, out_hash, error, fence, at, prev, digest) = row
    assert out_hash == blob_hash(output)
    assert digest == event_hash(
        prev, run_id, n, step_id, kind, name, status, out_hash, error, fence, at
    )
    failed = event_row("r1", 4, "4", "step", "s", "failed", None, '{"m":1}', 2, digest)
    assert failed[6] is None
    assert failed[11] == event_hash(
        digest, "r1", 4, "4", "step", "s", "failed", None, '{"m":1}', 2, failed[9]
    )


async def test_steps_meeting_an_outside_lock_wait_off_the_loop(tmp_path: Path) -> None:
    from elevenfactor.runtime._journal import INLINE_MAX
    from elevenfactor.store import migrate, open_store

    path = tmp_path / "locked.db"
    store = await open_store(f"sqlite:///{path}")
    await migrate(store)
    programs = Programs()
    started, go = asyncio.Event(), asyncio.Event()

    async def branch(ctx: RunContext, item: int) -> int:
        a = await ctx.step("a", effect, f"a{item}")
        big = await ctx.step("big", lambda: "x" * (INLINE_MAX + item))  # blob + event
        return len(a) + len(big)

    @programs.workflow("locked")
    async def locked(ctx: RunContext, items: list[int]) -> list[int]:
        await ctx.step("first", effect, "first")
        started.set()
        await go.wait()
        return await ctx.map(branch, items)

    longest = 0.0

    async def tick() -> None:
        nonlocal longest
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            longest = max(longest, now - last)
            last = now

    try:
        rid = await submit_run(store, "locked", [0, 1, 2])
        run = asyncio.create_task(Worker(store, programs).run_until_idle())
        await asyncio.wait_for(started.wait(), 10)
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        ticker = asyncio.create_task(tick())
        go.set()
        await asyncio.sleep(0.3)
        assert not run.done()
        # (Read on the outside connection: the store's reads now queue behind its writes.)
        assert other.execute("SELECT name FROM journal WHERE run_id = ?", (rid,)).fetchall() == [
            ("first",)
        ]
        other.execute("COMMIT")
        other.close()
        await asyncio.wait_for(run, 10)
        ticker.cancel()
        assert longest < 0.05, f"the loop stalled {longest * 1000:.1f} ms"
        info = await get_run(store, rid)
        assert info.status == "succeeded", info.error
        assert await run_result(store, info) == [INLINE_MAX + 7 + i for i in range(3)]
        events = await load_events(store, rid)
        assert [e.n for e in events] == list(range(7))
        assert (await verify_run(store, rid)).ok
    finally:
        await store.close()
