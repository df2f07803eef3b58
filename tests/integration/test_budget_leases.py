"""Budget leases on the real Redis (``governance._leases``): gateway calls far from a limit are
served from capacity set aside in Redis, with no round trip, and still never overshoot; near the
limit every call is reserved on its own; leases are given back, expire with a dead process, and
are never used by calls that must be idempotent (runs) or forced ones."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from elevenfactor.errors import BudgetExceeded
from elevenfactor.governance import Charge, local_admin
from elevenfactor.governance._budget_admin import set_budget
from elevenfactor.governance._gate_redis import RedisSpendGate
from elevenfactor.governance._leases import LEASE_CALLS, LEASE_HEADROOM
from elevenfactor.store import Store, migrate, open_store

pytestmark = pytest.mark.integration

REDIS_URL = "redis://127.0.0.1:6379/0"
ADMIN = local_admin("cli")
ALICE = Charge(org_id="org_default", user_id="user_local", route="default", models=("echo",))


@dataclass
class Env:
    store: Store
    gates: list[RedisSpendGate]
    prefix: str


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    store = await open_store(f"sqlite:///{tmp_path}/test.db")
    await migrate(store)
    prefix = f"eftest:{uuid.uuid4().hex[:12]}:"
    gates = [RedisSpendGate(REDIS_URL, store, prefix, flush_interval=0.05) for _ in range(3)]
    try:
        yield Env(store, gates, prefix)
    finally:
        for gate in gates:
            await gate.aclose()
        r = aioredis.Redis.from_url(REDIS_URL)
        keys = [k async for k in r.scan_iter(match=prefix + "*", count=1000)]
        if keys:
            await r.delete(*keys)
        await r.aclose()


async def _settled(gate: RedisSpendGate) -> None:
    while gate._background:
        await asyncio.gather(*list(gate._background), return_exceptions=True)


async def test_calls_far_from_the_limit_are_served_from_a_lease(env: Env) -> None:
    budget = await set_budget(env.store, ADMIN, "org", 1000.0, window="total")
    gate = env.gates[0]
    first = await gate.reserve("c0", ALICE, 0.01, 60, pooled=True)
    assert first.lease is None  # reserved on its own; a lease is asked for meanwhile
    await _settled(gate)
    spent, reserved = await gate.usage(budget.id, "total")
    assert reserved == pytest.approx(0.01 + LEASE_CALLS * 0.01)  # the call and the lease
    holds = [await gate.reserve(f"c{i}", ALICE, 0.01, 60, pooled=True) for i in range(1, 10)]
    assert {h.lease for h in holds} == {holds[0].lease} and holds[0].lease is not None
    _, still = await gate.usage(budget.id, "total")
    assert still == pytest.approx(reserved)  # served in memory: Redis untouched
    for hold in holds:
        await gate.commit(hold, 0.004)
    await gate.commit(holds[0], 0.004)  # a second commit of the same call charges nothing
    await gate.commit(first, 0.004)
    spent, reserved = await gate.usage(budget.id, "total")
    assert spent == pytest.approx(10 * 0.004)
    assert reserved == pytest.approx(LEASE_CALLS * 0.01 - 9 * 0.004)  # the lease shrank
    await gate.flush()
    row = await env.store.fetchone(
        "SELECT count(*), sum(cost) FROM budget_holds WHERE status = 'committed'"
    )
    assert row is not None and row[0] == 10 and row[1] == pytest.approx(0.04)


async def test_a_released_call_goes_back_into_its_lease(env: Env) -> None:
    budget = await set_budget(env.store, ADMIN, "org", 1000.0, window="total")
    gate = env.gates[0]
    await gate.release(await gate.reserve("c0", ALICE, 0.01, 60, pooled=True))
    await _settled(gate)
    lease = next(iter(gate.leases.by_sig.values()))
    holds = [await gate.reserve(f"c{i}", ALICE, 0.01, 60, pooled=True) for i in range(1, 33)]
    assert all(h.lease == lease.id for h in holds)  # the whole lease: 32 calls of $0.01
    await gate.release(holds[0])
    again = await gate.reserve("c33", ALICE, 0.01, 60, pooled=True)
    assert again.lease == lease.id  # the released call's share served another
    extra = await gate.reserve("c34", ALICE, 0.01, 60, pooled=True)
    assert extra.lease is None  # used up: reserved on its own
    await _settled(gate)  # ... and a new lease was taken meanwhile
    size = LEASE_CALLS * 0.01
    _, reserved = await gate.usage(budget.id, "total")
    assert reserved == pytest.approx(2 * size + 0.01)  # the old lease, the new one and c34
    for hold in [*holds[1:], again]:
        await gate.release(hold)
    await _settled(gate)  # its last call settled: the old lease is given back
    _, reserved = await gate.usage(budget.id, "total")
    assert reserved == pytest.approx(size + 0.01)


async def test_leases_never_overshoot_across_processes(env: Env) -> None:
    # A limit where leases are granted at first and refused as it fills: 3 gates race.
    limit = LEASE_HEADROOM * LEASE_CALLS * 0.01 * 3  # room for a few leases, then none
    budget = await set_budget(env.store, ADMIN, "org", limit, window="total")
    admitted = 0

    async def one(i: int) -> None:
        nonlocal admitted
        gate = env.gates[i % 3]
        try:
            hold = await gate.reserve(f"c{i}", ALICE, 0.01, 60, pooled=True)
        except BudgetExceeded:
            return
        admitted += 1
        await asyncio.sleep(0)
        await gate.commit(hold, 0.01)

    for wave in range(30):
        await asyncio.gather(*(one(wave * 100 + i) for i in range(100)))
        for gate in env.gates:
            await _settled(gate)
    spent, _ = await env.gates[0].usage(budget.id, "total")
    assert spent <= limit + 1e-9  # never over
    assert admitted == pytest.approx(spent / 0.01)
    for gate in env.gates:
        for lease in gate.leases.retire_all():
            await gate._give_back(lease)
    # Once the leases are given back, every cent left can still be reserved.
    left = limit - spent
    n = round(left / 0.01)
    for i in range(n):
        hold = await env.gates[0].reserve(f"tail{i}", ALICE, 0.01, 60, pooled=True)
        await env.gates[0].commit(hold, 0.01)
    spent, reserved = await env.gates[0].usage(budget.id, "total")
    assert spent == pytest.approx(limit) and reserved == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(BudgetExceeded):
        await env.gates[0].reserve("over", ALICE, 0.01, 60, pooled=True)


async def test_near_the_limit_no_lease_is_granted(env: Env) -> None:
    # 32 calls of $0.10 would need $3.20 x 4 free: a $5 budget never leases.
    budget = await set_budget(env.store, ADMIN, "org", 5.0, window="total")
    gate = env.gates[0]
    for i in range(5):
        hold = await gate.reserve(f"c{i}", ALICE, 0.10, 60, pooled=True)
        await _settled(gate)
        assert hold.lease is None and not gate.leases.by_sig
        await gate.commit(hold, 0.10)
    spent, reserved = await gate.usage(budget.id, "total")
    assert spent == pytest.approx(0.5) and reserved == pytest.approx(0.0, abs=1e-9)


async def test_runs_and_forced_calls_never_use_leases(env: Env) -> None:
    await set_budget(env.store, ADMIN, "org", 1000.0, window="total")
    gate = env.gates[0]
    await gate.reserve("c0", ALICE, 0.01, 60, pooled=True)
    await _settled(gate)
    assert gate.leases.by_sig
    run_hold = await gate.reserve("run-step", ALICE, 0.01, 60)
    assert run_hold.lease is None
    assert (await gate.reserve("run-step", ALICE, 0.01, 60)) == run_hold  # idempotent by id
    forced = await gate.reserve("forced", ALICE, 0.01, 60, force=True, pooled=True)
    assert forced.lease is None


async def test_a_dead_process_lease_expires_and_the_budget_is_whole_again(env: Env) -> None:
    budget = await set_budget(env.store, ADMIN, "org", 1000.0, window="total")
    gate = env.gates[0]
    await gate.commit(await gate.reserve("c0", ALICE, 0.01, 60, pooled=True), 0.01)
    await _settled(gate)
    hold = await gate.reserve("c1", ALICE, 0.01, 60, pooled=True)
    assert hold.lease is not None
    _, reserved = await gate.usage(budget.id, "total")
    assert reserved > 0
    gate.leases.by_sig.clear()  # the process "dies": nothing is given back
    gate.leases.by_id.clear()
    other = env.gates[1]
    released = await other.expire_holds(at=hold.expires_at + 1)
    assert released >= 1
    spent, reserved = await other.usage(budget.id, "total")
    assert spent == pytest.approx(0.01) and reserved == pytest.approx(0.0, abs=1e-9)


async def test_closing_the_gate_gives_its_leases_back(env: Env) -> None:
    budget = await set_budget(env.store, ADMIN, "org", 1000.0, window="total")
    gate = env.gates[0]
    await gate.commit(await gate.reserve("c0", ALICE, 0.01, 60, pooled=True), 0.01)
    await _settled(gate)
    assert gate.leases.by_sig
    await gate.aclose()
    spent, reserved = await env.gates[1].usage(budget.id, "total")
    assert spent == pytest.approx(0.01) and reserved == pytest.approx(0.0, abs=1e-9)
