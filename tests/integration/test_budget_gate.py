"""The budget gates on real backends: the store on SQLite and PostgreSQL, and Redis (with
PostgreSQL for definitions). Two gates on two connections stand for two processes."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp import web

from elevenfactor.errors import BudgetExceeded, BudgetUnavailable, CallKilled, NotFound
from elevenfactor.governance import Charge, local_admin
from elevenfactor.governance._budget_admin import budget_status, delete_budget, set_budget
from elevenfactor.governance._gate_redis import RedisSpendGate
from elevenfactor.governance._gate_sql import StoreSpendGate
from elevenfactor.governance._kills import kill, unkill
from elevenfactor.runtime import submit_run
from elevenfactor.store import Store, migrate, open_store
from tests.conftest import _pg_schema_url, free_port

pytestmark = pytest.mark.integration

REDIS_URL = "redis://127.0.0.1:6379/0"
ADMIN = local_admin("cli")
ORG = "org_default"
ALICE = Charge(org_id=ORG, user_id="user_local", route="default", models=("echo",))
Gate = StoreSpendGate | RedisSpendGate


@dataclass
class Env:
    kind: str
    url: str
    store: Store
    gate: Gate
    second: Gate
    """Another gate on its own connection: a second process."""
    prefix: str = ""

    async def settle(self) -> None:
        """Let the Redis gate's store writer catch up (no-op for the store gates)."""
        for g in (self.gate, self.second):
            if isinstance(g, RedisSpendGate):
                await g.flush()


async def _gate(kind: str, store: Store, prefix: str) -> Gate:
    if kind == "redis":
        return RedisSpendGate(REDIS_URL, store, prefix, flush_interval=0.05)
    return StoreSpendGate(store)


@pytest.fixture(params=["sqlite", "postgresql", "redis"])
async def env(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Env]:
    kind = request.param
    url = f"sqlite:///{tmp_path}/test.db" if kind == "sqlite" else _pg_schema_url(request)
    store = await open_store(url)
    await migrate(store)
    other = await open_store(url)
    prefix = f"eftest:{uuid.uuid4().hex[:12]}:"
    env = Env(kind, url, store, await _gate(kind, store, prefix), await _gate(kind, other, prefix))
    env.prefix = prefix
    try:
        yield env
    finally:
        await env.gate.aclose()
        await env.second.aclose()
        if kind == "redis":
            await _drop_prefix(prefix)
        await other.close()
        await store.close()


async def _drop_prefix(prefix: str) -> None:
    r = aioredis.Redis.from_url(REDIS_URL)
    try:
        keys = [k async for k in r.scan_iter(match=prefix + "*", count=1000)]
        if keys:
            await r.delete(*keys)
    finally:
        await r.aclose()


async def _status(env: Env, budget_id: str, window: str = "total") -> tuple[float, float]:
    await env.settle()
    return await env.gate.usage(budget_id, window)


async def _eventually(cond: Callable[[], Awaitable[bool]], what: str, within: float = 10) -> None:
    deadline = time.monotonic() + within
    while not await cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


# -- reservation ----------------------------------------------------------------------------


async def test_concurrent_reserves_never_exceed_the_limit(env: Env) -> None:
    budget = await set_budget(env.store, ADMIN, "org", 1.0, window="total")

    async def one(i: int) -> bool:
        gate = env.gate if i % 2 else env.second
        try:
            hold = await gate.reserve(f"h{i}", ALICE, 0.05, 60)
        except BudgetExceeded as exc:
            assert exc.details["budget"] == "org" and exc.details["requested"] == 0.05
            return False
        await gate.commit(hold, 0.05)
        return True

    results = await asyncio.gather(*(one(i) for i in range(60)))
    assert sum(results) == 20  # exactly the 20 calls $1.00 covers
    spent, reserved = await _status(env, budget.id)
    assert spent == pytest.approx(1.0) and reserved == 0.0  # exactly: no float residue
    if env.kind != "redis":
        status = await budget_status(env.store, budget)
        assert status.spent == pytest.approx(1.0) and status.reserved == pytest.approx(0.0)


async def test_a_refusal_names_the_budget_and_holds_nothing(env: Env) -> None:
    org = await set_budget(env.store, ADMIN, "org", 10.0, window="month")
    mine = await set_budget(env.store, ADMIN, "user:local", 1.0, window="day")
    held = await env.gate.reserve("a", ALICE, 0.98, 60)
    assert {b for b, _ in held.windows} == {org.id, mine.id}
    with pytest.raises(BudgetExceeded) as caught:
        await env.gate.reserve("b", ALICE, 0.05, 60)
    err = caught.value
    assert err.details["budget"] == "user:local" and err.details["window"] == "day"
    assert err.details["limit"] == 1.0 and err.details["reserved"] == pytest.approx(0.98)
    assert err.details["resets_at"] > time.time()
    assert "budget user:local (day) cannot cover this call: limit $1.00" in err.message
    assert "this call needs up to $0.05; it resets at " in err.message
    # nothing was held on the org budget for the refused call
    month = next(w for b, w in held.windows if b == org.id)
    assert (await _status(env, org.id, month))[1] == pytest.approx(0.98)


async def test_reserve_commit_and_release_are_idempotent(env: Env) -> None:
    budget = await set_budget(env.store, ADMIN, "model:echo", 1.0, window="total")
    first = await env.gate.reserve("same", ALICE, 0.4, 60)
    again = await env.second.reserve("same", ALICE, 0.4, 60)
    assert again == first
    assert await _status(env, budget.id) == (0.0, pytest.approx(0.4))
    await env.gate.commit(first, 0.25)
    await env.second.commit(first, 0.25)  # a retried commit charges once
    await env.gate.release(first)  # settled: nothing to release
    assert await _status(env, budget.id) == (pytest.approx(0.25), pytest.approx(0.0))
    other = await env.gate.reserve("other", ALICE, 0.5, 60)
    await env.gate.release(other)
    await env.second.release(other)
    await env.gate.commit(other, 0.5)  # released: the commit does nothing
    assert await _status(env, budget.id) == (pytest.approx(0.25), pytest.approx(0.0))


async def test_no_budget_no_io(env: Env) -> None:
    hold = await env.gate.reserve("free", ALICE, 5.0, 60)
    assert hold.empty and not env.gate.covered(ALICE)
    await env.gate.commit(hold, 5.0)
    await set_budget(env.store, ADMIN, "agent:writer", 1.0)
    assert env.gate.covered(ALICE)  # stale after a change: it may apply until reloaded
    await env.gate.check(ALICE)  # reloads
    assert not env.gate.covered(ALICE)  # another agent's budget
    assert env.gate.covered(Charge(org_id=ORG, agent="writer"))
    await set_budget(env.store, ADMIN, "model:default", 1.0)  # a route
    await env.gate.check(ALICE)
    assert env.gate.covered(ALICE)


async def test_abandoned_holds_expire_and_the_budget_is_whole_again(env: Env) -> None:
    budget = await set_budget(env.store, ADMIN, "org", 1.0, window="total")
    await env.second.reserve("dead-1", ALICE, 0.6, 0.05)  # its process "dies" holding it
    with pytest.raises(BudgetExceeded):
        await env.gate.reserve("live", ALICE, 0.6, 60)

    async def admitted() -> bool:
        try:
            hold = await env.gate.reserve("live", ALICE, 0.6, 60)
        except BudgetExceeded:
            return False
        await env.gate.release(hold)
        return True

    await _eventually(admitted, "the dead hold to expire")  # released lazily by the reserve
    dead = await env.second.reserve("dead-2", ALICE, 0.9, 0.05)
    assert await env.gate.expire_holds(time.time() + 1) == 1  # the periodic sweep
    assert await env.gate.expire_holds(time.time() + 1) == 0
    assert await _status(env, budget.id) == (0.0, pytest.approx(0.0))
    await env.second.commit(dead, 0.3)  # a late commit of an expired hold still charges
    assert await _status(env, budget.id) == (pytest.approx(0.3), pytest.approx(0.0))


async def test_run_windows_are_per_run(env: Env) -> None:
    budget = await set_budget(env.store, ADMIN, "run", 0.5, window="run")
    outside = await env.gate.reserve("x", ALICE, 1.0, 60)
    assert outside.empty  # a call outside a run is not charged to run windows
    in_a = Charge(org_id=ORG, user_id="user_local", run_id="run-a")
    in_b = Charge(org_id=ORG, user_id="user_local", run_id="run-b")
    await env.gate.reserve("a1", in_a, 0.4, 60)
    with pytest.raises(BudgetExceeded) as caught:
        await env.gate.reserve("a2", in_a, 0.2, 60)
    assert caught.value.details["resets_at"] is None
    assert (await env.gate.reserve("b1", in_b, 0.4, 60)).windows == ((budget.id, "run:run-b"),)


# -- alerts ---------------------------------------------------------------------------------


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """A loopback webhook receiver: its URL and the JSON bodies it got."""
    got: list[dict[str, Any]] = []

    async def hook(request: web.Request) -> web.Response:
        got.append(await request.json())
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}/hook", got
    finally:
        await runner.cleanup()


async def test_alerts_fire_once_per_threshold_per_window(
    env: Env, receiver: tuple[str, list[dict[str, Any]]], caplog: pytest.LogCaptureFixture
) -> None:
    url, got = receiver
    budget = await set_budget(
        env.store, ADMIN, "org", 1.0, window="day", alerts=[0.5, 0.8], webhook=url
    )
    caplog.set_level(logging.INFO, "elevenfactor.budgets")
    for i, cost in enumerate((0.3, 0.3, 0.1, 0.2, 0.05)):
        gate = env.gate if i % 2 else env.second
        await gate.commit(await gate.reserve(f"c{i}", ALICE, cost, 60), cost)
    await env.settle()

    async def both() -> bool:
        return len(got) >= 2

    await _eventually(both, "two webhook posts")
    await env.settle()
    assert sorted(p["threshold"] for p in got) == [0.5, 0.8]
    assert {p["budget_id"] for p in got} == {budget.id}
    assert got[0]["scope"] == "org" and got[0]["window"] == "day" and got[0]["limit"] == 1.0
    logged = [r for r in caplog.records if r.getMessage() == "budget_alert"]
    assert sorted(getattr(r, "threshold", None) for r in logged) == [0.5, 0.8]
    rows = await env.store.fetchall("SELECT threshold FROM budget_alerts ORDER BY threshold")
    assert [r[0] for r in rows] == [0.5, 0.8]


async def test_a_soft_budget_lets_calls_through_and_alerts(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "elevenfactor.budgets")
    budget = await set_budget(env.store, ADMIN, "user:local", 0.1, window="week", soft=True)
    first = await env.gate.reserve("s1", ALICE, 0.08, 60)
    second = await env.gate.reserve("s2", ALICE, 0.08, 60)
    assert first.soft == () and second.soft == (budget.id,)
    await env.gate.commit(first, 0.08)
    await env.gate.commit(second, 0.08)
    await env.settle()

    async def alerted() -> bool:
        return any(r.getMessage() == "budget_alert" for r in caplog.records)

    await _eventually(alerted, "the soft budget's alert")
    [alert] = [r for r in caplog.records if r.getMessage() == "budget_alert"]
    assert getattr(alert, "threshold", None) == 1.0 and getattr(alert, "soft", None) is True
    week = first.windows[0][1]
    assert (await _status(env, budget.id, week))[0] == pytest.approx(0.16)


# -- kill switches --------------------------------------------------------------------------


async def test_a_kill_switch_stops_calls_until_lifted(env: Env) -> None:
    await env.gate.check(ALICE)
    killed = await kill(env.store, ADMIN, "user:local", "runaway loop")
    with pytest.raises(CallKilled) as caught:
        await env.gate.check(ALICE)
    assert caught.value.details["kill_switch"] == killed.switch.id
    assert caught.value.details["created_by"] == "local"
    assert "user:local was stopped by user:local at " in caught.value.message
    assert "runaway loop" in caught.value.message
    await env.gate.check(Charge(org_id="org_other", user_id="user_local"))  # another org
    await unkill(env.store, ADMIN, "user:local", "fixed")
    await env.gate.check(ALICE)

    run_id = await submit_run(env.store, "writer", {}, owner=ADMIN)
    in_run = Charge(org_id=ORG, user_id="user_local", agent="writer", run_id=run_id)
    await env.gate.check(in_run)
    stopped = await kill(env.store, ADMIN, f"run:{run_id}", "stuck")
    assert stopped.runs == (run_id,) and stopped.created  # queued: the caller cancels it
    with pytest.raises(CallKilled):
        await env.gate.check(in_run)
    await env.gate.check(ALICE)  # outside that run
    by_agent = await kill(env.store, ADMIN, "agent:writer", "bad prompt")
    assert by_agent.runs == (run_id,)
    with pytest.raises(NotFound):
        await kill(env.store, ADMIN, "run:nope", "x")


async def test_a_deleted_budget_stops_applying(env: Env) -> None:
    budget = await set_budget(env.store, ADMIN, "org", 0.1, window="total")
    hold = await env.gate.reserve("d1", ALICE, 0.1, 60)
    await delete_budget(env.store, ADMIN, budget.id)
    assert (await env.gate.reserve("d2", ALICE, 5.0, 60)).empty
    await env.gate.commit(hold, 0.1)  # settles without its budget


# -- Redis only -----------------------------------------------------------------------------


async def test_redis_counters_are_seeded_from_the_store(env: Env) -> None:
    if env.kind != "redis":
        pytest.skip("Redis counters")
    budget = await set_budget(env.store, ADMIN, "org", 1.0, window="month")
    hold = await env.gate.reserve("r1", ALICE, 0.5, 60)
    await env.gate.commit(hold, 0.4)
    await env.settle()
    await _drop_prefix(env.prefix)  # a flushed or restarted Redis
    with pytest.raises(BudgetExceeded) as caught:
        await env.gate.reserve("r2", ALICE, 0.7, 60)
    assert caught.value.details["spent"] == pytest.approx(0.4)
    assert (await env.gate.usage(budget.id, hold.windows[0][1]))[0] == pytest.approx(0.4)
    status = await budget_status(env.store, budget)
    assert status.spent == pytest.approx(0.4)


async def test_redis_down_fails_closed(tmp_path: Path) -> None:
    store = await open_store(f"sqlite:///{tmp_path}/down.db")
    await migrate(store)
    gate = RedisSpendGate(f"redis://127.0.0.1:{free_port()}/0", store, timeout=0.5)
    try:
        assert await gate.ready() is False
        assert (await gate.reserve("n", ALICE, 1.0, 60)).empty  # no budget: nothing to check
        await set_budget(store, ADMIN, "org", 1.0)
        with pytest.raises(BudgetUnavailable) as caught:
            await gate.reserve("n2", ALICE, 0.1, 60)
        assert "Redis at redis://127.0.0.1:" in caught.value.message
        assert caught.value.http_status == 503
    finally:
        await gate.aclose()
        await store.close()
    live = RedisSpendGate(REDIS_URL, await open_store(f"sqlite:///{tmp_path}/down.db"))
    try:
        assert await live.ready() is True
    finally:
        await live.aclose()
        await live.store.close()
