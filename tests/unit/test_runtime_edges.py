"""Runtime edges (issue 7): empty fan-outs, prompt cancels, what ``attempt`` counts, and a
fresh run starting without loading a journal; on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from elevenfactor.errors import RequestError, RunNotFound
from elevenfactor.runtime import (
    Programs,
    RunContext,
    Worker,
    WorkerOptions,
    approval,
    cancel_run,
    claim_run,
    get_run,
    list_approvals,
    load_events,
    run_result,
    submit_run,
)
from elevenfactor.store import Store

effects: Counter[str] = Counter()


@pytest.fixture(autouse=True)
def _reset() -> None:
    effects.clear()


def effect(name: str) -> str:
    effects[name] += 1
    return name


async def _until(cond: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + 10
    while not await cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def _step_names(store: Store, rid: str) -> list[str]:
    return [e.name for e in await load_events(store, rid)]


# -- 1. empty map and parallel ------------------------------------------------------------------


async def test_empty_map_and_parallel_return_empty_lists_and_replay(store: Store) -> None:
    programs = Programs()
    gate, reached = asyncio.Event(), asyncio.Event()

    async def never(ctx: RunContext, item: int) -> int:
        raise AssertionError("no items, no calls")

    @programs.workflow("fan")
    async def fan(ctx: RunContext, _: Any) -> dict[str, Any]:
        before = await ctx.step("before", effect, "before")
        mapped = await ctx.map(never, [])
        joined: list[int] = await ctx.parallel([])
        after = await ctx.step("after", effect, "after")
        reached.set()
        await gate.wait()
        last = await ctx.step("last", effect, "last")
        return {"mapped": mapped, "joined": joined, "steps": [before, after, last]}

    rid = await submit_run(store, "fan", None)
    lease = await claim_run(store, "w1", ["default"], 30)
    assert lease is not None
    task = asyncio.create_task(Worker(store, programs, worker_id="w1").execute(lease))
    await reached.wait()
    task.cancel()  # the process dies mid-run
    with pytest.raises(asyncio.CancelledError):
        await task
    await store.execute("UPDATE runs SET lease_expires_at = 0 WHERE id = ?", (rid,))
    gate.set()
    assert await Worker(store, programs, worker_id="w2").run_once()
    run = await get_run(store, rid)
    assert run.status == "succeeded", run.error
    assert await run_result(store, run) == {
        "mapped": [],
        "joined": [],
        "steps": ["before", "after", "last"],
    }
    # The empty fan-outs keep their positions (1 and 2), so the replay found "after" at 3.
    events = await load_events(store, rid)
    assert [(e.step_id, e.name) for e in events] == [("0", "before"), ("3", "after"), ("4", "last")]
    assert effects == Counter({"before": 1, "after": 1, "last": 1})


# -- 3. cancel --------------------------------------------------------------------------------


def _gated(programs: Programs, wait: Callable[[RunContext], Awaitable[None]]) -> None:
    @programs.workflow("gated")
    async def gated(ctx: RunContext, _: Any) -> str:
        await ctx.step("a", effect, "a")

        async def hold() -> str:
            await wait(ctx)
            return effect("b")

        await ctx.step("b", hold)
        await ctx.step("c", effect, "c")
        return "done"


async def test_a_cancel_in_this_process_stops_the_run_at_its_next_step(store: Store) -> None:
    programs = Programs()
    reached, gate = asyncio.Event(), asyncio.Event()

    async def wait(ctx: RunContext) -> None:
        reached.set()
        await gate.wait()

    _gated(programs, wait)
    rid = await submit_run(store, "gated", None)
    # Heartbeats and the cancel watch far apart: only request_cancel can stop it in time.
    worker = Worker(store, programs, WorkerOptions(lease_seconds=60, cancel_poll_interval=60))
    task = asyncio.create_task(worker.run_once())
    await reached.wait()
    answered = await cancel_run(store, rid, "user asked")
    assert answered.status == "running" and answered.cancel_requested == 1
    assert worker.request_cancel(rid, "user asked")
    gate.set()  # step b finishes and is journaled; c must not start
    await asyncio.wait_for(task, 10)
    run = await get_run(store, rid)
    assert run.status == "cancelled"
    assert run.error_dict() == {
        "code": "run_cancelled",
        "message": f"run {rid} was cancelled: user asked",
    }
    assert await _step_names(store, rid) == ["a", "b"]
    assert effects == Counter({"a": 1, "b": 1})
    assert not worker.request_cancel(rid)  # no longer executing here


async def test_a_cancel_from_another_process_is_noticed_before_the_next_step(
    store: Store,
) -> None:
    programs = Programs()

    async def wait(ctx: RunContext) -> None:
        # The step runs until the worker has noticed the cancel (heartbeats are 20 s apart).
        deadline = time.monotonic() + 10
        while ctx.cancel_reason is None:
            assert time.monotonic() < deadline, "the cancel was not noticed"
            await asyncio.sleep(0.01)

    _gated(programs, wait)
    rid = await submit_run(store, "gated", None)
    worker = Worker(store, programs, WorkerOptions(lease_seconds=60, cancel_poll_interval=0.02))
    task = asyncio.create_task(worker.run_once())
    await _until(lambda: _has_steps(store, rid, 1), "step a")
    await cancel_run(store, rid)  # only the database knows
    await asyncio.wait_for(task, 10)
    run = await get_run(store, rid)
    assert run.status == "cancelled" and run.error_dict()["code"] == "run_cancelled"  # type: ignore[index]
    assert await _step_names(store, rid) == ["a", "b"]
    assert effects["c"] == 0


async def _has_steps(store: Store, rid: str, n: int) -> bool:
    return len(await load_events(store, rid)) >= n


async def test_a_run_cancelled_as_it_parks_ends_cancelled(store: Store) -> None:
    programs = Programs()
    reached, gate = asyncio.Event(), asyncio.Event()

    @programs.workflow("napper")
    async def napper(ctx: RunContext, _: Any) -> None:
        await ctx.step("a", effect, "a")
        reached.set()
        await gate.wait()
        await ctx.sleep(3600)  # would park for an hour

    rid = await submit_run(store, "napper", None)
    worker = Worker(store, programs, WorkerOptions(lease_seconds=60, cancel_poll_interval=60))
    task = asyncio.create_task(worker.run_once())
    await reached.wait()
    await cancel_run(store, rid)  # not noticed before the park
    gate.set()
    await asyncio.wait_for(task, 10)
    run = await get_run(store, rid)
    assert run.status == "cancelled" and run.wake_at is None


async def test_an_approval_asked_for_after_the_cancel_is_cancelled_with_the_run(
    store: Store,
) -> None:
    programs = Programs()
    reached, gate = asyncio.Event(), asyncio.Event()

    @programs.workflow("asker")
    async def asker(ctx: RunContext, _: Any) -> bool:
        reached.set()
        await gate.wait()
        decision = await approval(ctx, "pay", {"amount": 1}, group="finance")
        return decision.approved

    rid = await submit_run(store, "asker", None)
    worker = Worker(store, programs, WorkerOptions(lease_seconds=60, cancel_poll_interval=60))
    task = asyncio.create_task(worker.run_once())
    await reached.wait()
    await cancel_run(store, rid)  # not noticed before the approval parks the run
    gate.set()
    await asyncio.wait_for(task, 10)
    assert (await get_run(store, rid)).status == "cancelled"
    asked = await list_approvals(store, status=None, run_id=rid)
    assert [a.status for a in asked] == ["cancelled"]
    assert await list_approvals(store, run_id=rid) == []  # none left pending


async def test_cancelling_a_finished_or_missing_run_is_refused(store: Store) -> None:
    programs = Programs()

    @programs.workflow("quick")
    async def quick(ctx: RunContext, _: Any) -> str:
        return await ctx.step("a", effect, "a")

    rid = await submit_run(store, "quick", None)
    await Worker(store, programs).run_until_idle()
    with pytest.raises(RequestError) as refused:
        await cancel_run(store, rid)
    assert refused.value.code == "run_finished" and refused.value.http_status == 409
    run = await get_run(store, rid)
    assert run.status == "succeeded" and run.cancel_requested == 0
    with pytest.raises(RunNotFound):
        await cancel_run(store, "no-such-run")
    queued = await submit_run(store, "quick", None, queue="idle")
    assert (await cancel_run(store, queued)).status == "cancelled"
    with pytest.raises(RequestError, match="already cancelled"):
        await cancel_run(store, queued)


# -- 4. attempt counts attempts started ---------------------------------------------------------


async def test_attempt_counts_the_attempts_started(store: Store) -> None:
    programs = Programs()
    failures = Counter[str]()

    @programs.workflow("flaky")
    async def flaky(ctx: RunContext, fail_times: int) -> str:
        await ctx.sleep(0.01, "nap")  # parks and resumes: the same attempt
        await ctx.step("a", effect, "a")
        if failures["flaky"] < fail_times:
            failures["flaky"] += 1
            raise RuntimeError("not yet")
        return "ok"

    worker = Worker(store, programs)

    async def settle(rid: str) -> None:
        await _until(lambda: _finished(store, rid, worker), f"run {rid} to finish")

    fresh = await submit_run(store, "flaky", 0, queue="idle")
    assert (await get_run(store, fresh)).attempt == 0  # queued, not started
    first = await submit_run(store, "flaky", 0, max_attempts=3)
    await settle(first)
    assert (await get_run(store, first)).status == "succeeded"
    assert (await get_run(store, first)).attempt == 1

    failures.clear()
    third = await submit_run(store, "flaky", 2, max_attempts=3, retry_backoff=0.001)
    await settle(third)
    run = await get_run(store, third)
    assert (run.status, run.attempt) == ("succeeded", 3)

    failures.clear()
    exhausted = await submit_run(store, "flaky", 5, max_attempts=3, retry_backoff=0.001)
    await settle(exhausted)
    run = await get_run(store, exhausted)
    assert (run.status, run.attempt) == ("failed", 3)
    assert failures["flaky"] == 3


async def test_a_queued_retry_shows_the_attempts_started_so_far(store: Store) -> None:
    programs = Programs()

    @programs.workflow("broken")
    async def broken(ctx: RunContext, _: Any) -> None:
        raise RuntimeError("no")

    rid = await submit_run(store, "broken", None, max_attempts=3, retry_backoff=3600)
    assert await Worker(store, programs).run_once()
    run = await get_run(store, rid)
    assert (run.status, run.attempt) == ("queued", 1)  # the retry waits; it has not started


async def _finished(store: Store, rid: str, worker: Worker) -> bool:
    if (await get_run(store, rid)).finished:
        return True
    await worker.run_once()
    return False


# -- 5. a fresh run loads no journal ------------------------------------------------------------


def _spy_reads(store: Store, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The SQL of every query run straight on ``store`` (journal loads, approval lookups; not
    the claim, which only asks whether a journal exists)."""
    seen: list[str] = []
    fetchall, fetchone = store.fetchall, store.fetchone

    async def spy_all(sql: str, params: Any = ()) -> Any:
        seen.append(sql)
        return await fetchall(sql, params)

    async def spy_one(sql: str, params: Any = ()) -> Any:
        seen.append(sql)
        return await fetchone(sql, params)

    monkeypatch.setattr(store, "fetchall", spy_all)
    monkeypatch.setattr(store, "fetchone", spy_one)
    return seen


def _reads(seen: list[str], table: str) -> list[str]:
    return [q for q in seen if q.startswith("SELECT") and table in q]


async def test_only_a_runs_first_claim_skips_its_journal(store: Store) -> None:
    rid = await submit_run(store, "any", None)
    first = await claim_run(store, "w1", ["default"], 30)
    assert first is not None and first.run_id == rid and not first.has_journal
    ctx = await RunContext.open(store, first)
    await ctx.step("a", effect, "a")
    await store.execute("UPDATE runs SET lease_expires_at = 0 WHERE id = ?", (rid,))
    taken = await claim_run(store, "w2", ["default"], 30)
    assert taken is not None and taken.has_journal
    resumed = await RunContext.open(store, taken)
    assert resumed.events_written == 1 and resumed.head_hash == ctx.head_hash
    # A takeover loads even when the claim saw no events: the dead worker's last append may
    # have committed after the claim's snapshot.
    other = await submit_run(store, "any", None)
    lease = await claim_run(store, "w1", ["default"], 30)
    assert lease is not None and lease.run_id == other and not lease.has_journal
    await store.execute("UPDATE runs SET lease_expires_at = 0 WHERE id = ?", (other,))
    again = await claim_run(store, "w2", ["default"], 30)
    assert again is not None and again.run_id == other and again.has_journal


async def test_a_fresh_run_reads_no_journal_and_a_resumed_one_replays(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    from elevenfactor.governance import local_admin
    from elevenfactor.runtime import decide_approval

    programs = Programs()

    @programs.workflow("gated")
    async def gated(ctx: RunContext, _: Any) -> str:
        await ctx.step("a", effect, "a")
        decision = await approval(ctx, "go", {"x": 1})
        await ctx.step("b", effect, "b")
        return decision.action

    rid = await submit_run(store, "gated", None)
    seen = _spy_reads(store, monkeypatch)
    worker = Worker(store, programs)
    await worker.run_until_idle()
    assert (await get_run(store, rid)).status == "waiting"
    assert not _reads(seen, "FROM journal") and not _reads(seen, "FROM approvals")
    [pending] = await list_approvals(store, run_id=rid)
    await decide_approval(store, pending.id, "approve", by=local_admin("admin"))
    seen.clear()
    await worker.run_until_idle()
    run = await get_run(store, rid)
    assert run.status == "succeeded" and await run_result(store, run) == "approve"
    assert _reads(seen, "FROM journal") and _reads(seen, "FROM approvals")
    assert effects == Counter({"a": 1, "b": 1})  # step a replayed, not run again
    assert await _step_names(store, rid) == ["a", "go", "b"]
