"""Budget leases (``governance._leases``), on every backend — Redis (with a SQLite or PostgreSQL
store behind it) and the store itself (SQLite, PostgreSQL): gateway calls far from a limit are
served from capacity held ahead, with no round trip to reserve; nothing overshoots; near the limit
every call is reserved on its own; leases are given back, expire with a dead process, and are
never used by calls that must be idempotent (runs) or forced ones. In the store, commits of
leased calls are written in groups and a lease is given back only after its calls' charges.
Three gates on three connections stand for three processes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal

import pytest

from elevenfactor.errors import BudgetExceeded, BudgetUnavailable
from elevenfactor.governance import Charge, local_admin
from elevenfactor.governance._budget_admin import set_budget
from elevenfactor.governance._gate_redis import RedisSpendGate
from elevenfactor.governance._gate_sql import StoreSpendGate
from elevenfactor.governance._leases import LEASE_CALLS, LEASE_HEADROOM
from elevenfactor.store import Store, migrate, open_store

pytestmark = pytest.mark.integration

REDIS_URL = "redis://127.0.0.1:6379/0"
ADMIN = local_admin("cli")
ALICE = Charge(org_id="org_default", user_id="user_local", route="default", models=("echo",))


Gate = StoreSpendGate | RedisSpendGate


@dataclass
class Env:
    kind: Literal["redis", "store"]
    store: Store
    stores: list[Store]
    gates: list[Gate]


@pytest.fixture(params=["store", "redis"])
async def env(request: pytest.FixtureRequest, store_url: str, prefix: str) -> AsyncIterator[Env]:
    kind = request.param
    store = await open_store(store_url)
    await migrate(store)
    stores = [await open_store(store_url) for _ in range(3)]
    gates: list[Gate] = (
        [StoreSpendGate(s) for s in stores]
        if kind == "store"
        else [RedisSpendGate(REDIS_URL, s, prefix, flush_interval=0.05) for s in stores]
    )
    try:
        yield Env(kind, store, stores, gates)
    finally:
        for gate in gates:
            await gate.aclose()
        for s in stores:
            await s.close()
        await store.close()


async def _settled(gate: Gate) -> None:
    while gate._background:
        await asyncio.gather(*list(gate._background), return_exceptions=True)
    await gate.flush()


def store_only(env: Env) -> None:
    if env.kind != "store":
        pytest.skip("the store gate's grouped writes")


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
    assert still == pytest.approx(reserved)  # served in memory: the store untouched
    await asyncio.gather(*(gate.commit(hold, 0.004) for hold in holds))  # grouped writes
    await gate.commit(holds[0], 0.004)  # a second commit of the same call charges nothing
    await gate.commit(first, 0.004)
    spent, reserved = await gate.usage(budget.id, "total")
    assert spent == pytest.approx(10 * 0.004)
    assert reserved == pytest.approx(LEASE_CALLS * 0.01 - 9 * 0.004)  # the lease shrank
    await gate.flush()
    if env.kind == "redis":  # every call's hold is written to the store in the background
        row = await env.store.fetchone(
            "SELECT count(*), sum(cost) FROM budget_holds WHERE status = 'committed'"
        )
        assert row is not None and row[0] == 10 and row[1] == pytest.approx(0.04)
    else:  # the store keeps the lease, shrunk by what its calls cost
        row = await env.store.fetchone(
            "SELECT status, amount FROM budget_holds WHERE id = ?", (holds[0].lease,)
        )
        assert row is not None and row[0] == "held"
        assert float(row[1]) == pytest.approx(LEASE_CALLS * 0.01 - 9 * 0.004)


async def test_a_released_call_goes_back_into_its_lease(env: Env) -> None:
    budget = await set_budget(env.store, ADMIN, "org", 1000.0, window="total")
    gate = env.gates[0]
    await gate.release(await gate.reserve("c0", ALICE, 0.01, 60, pooled=True))
    await _settled(gate)
    lease = next(iter(gate.leases.by_sig.values()))
    holds = [await gate.reserve(f"c{i}", ALICE, 0.01, 60, pooled=True) for i in range(1, 33)]
    assert all(h.lease == lease.id for h in holds)  # the whole lease: 32 calls of $0.01
    await gate.release(holds[0])
    await gate.release(holds[0])  # twice: the second does nothing
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
    if env.kind == "store":
        row = await env.store.fetchone("SELECT status FROM budget_holds WHERE id = ?", (lease.id,))
        assert row is not None and row[0] == "released"


async def test_a_lease_is_given_back_only_after_its_last_charge(env: Env) -> None:
    store_only(env)
    budget = await set_budget(env.store, ADMIN, "org", 1000.0, window="total")
    gate = env.gates[0]
    await gate.release(await gate.reserve("c0", ALICE, 0.01, 60, pooled=True))
    await _settled(gate)
    holds = [await gate.reserve(f"c{i}", ALICE, 0.01, 60, pooled=True) for i in range(1, 33)]
    lease = holds[0].lease
    await gate.reserve("c33", ALICE, 0.01, 60, pooled=True)  # retires the used-up lease
    # The last calls commit together: their charges and the give-back go in one group,
    # charges first, so the spend never drops out of "spent + reserved" in between.
    await asyncio.gather(*(gate.commit(h, 0.01) for h in holds))
    spent, reserved = await gate.usage(budget.id, "total")
    assert spent == pytest.approx(32 * 0.01)
    row = await env.store.fetchone("SELECT status FROM budget_holds WHERE id = ?", (lease,))
    assert row is not None and row[0] == "released"
    await _settled(gate)
    _, reserved = await gate.usage(budget.id, "total")
    assert reserved == pytest.approx(0.01 + LEASE_CALLS * 0.01)  # c33 and the new lease


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

    for wave in range(20):
        await asyncio.gather(*(one(wave * 60 + i) for i in range(60)))
        for gate in env.gates:
            await _settled(gate)
    spent, _ = await env.gates[0].usage(budget.id, "total")
    assert spent <= limit + 1e-9  # never over
    assert admitted == pytest.approx(spent / 0.01)
    for gate in env.gates:
        await gate.give_back_leases()
    # Once the leases are given back, every cent left can still be reserved.
    left = limit - spent
    for i in range(round(left / 0.01)):
        hold = await env.gates[0].reserve(f"tail{i}", ALICE, 0.01, 60, pooled=True)
        await env.gates[0].commit(hold, 0.01)
    await _settled(env.gates[0])
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


async def test_a_soft_budget_near_its_limit_grants_no_lease(env: Env) -> None:
    # Leases would hide that a call went past a soft budget (downgrade policies need it).
    await set_budget(env.store, ADMIN, "org", 5.0, window="total", soft=True)
    gate = env.gates[0]
    await gate.reserve("c0", ALICE, 0.10, 60, pooled=True)
    await _settled(gate)
    assert not gate.leases.by_sig
    over = await gate.reserve("c1", ALICE, 6.0, 60, pooled=True)
    assert over.lease is None and over.soft


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
    await gate.commit(hold, 0.02)  # charged: the lease shrinks, the spend is written
    _, reserved = await gate.usage(budget.id, "total")
    assert reserved == pytest.approx(LEASE_CALLS * 0.01 - 0.02)
    gate.leases.by_sig.clear()  # the process "dies": nothing is given back
    gate.leases.by_id.clear()
    other = env.gates[1]
    released = await other.expire_holds(at=hold.expires_at + 1)
    assert released >= 1
    spent, reserved = await other.usage(budget.id, "total")
    assert spent == pytest.approx(0.03) and reserved == pytest.approx(0.0, abs=1e-9)


async def test_a_charge_after_the_lease_expired_still_counts(env: Env) -> None:
    budget = await set_budget(env.store, ADMIN, "org", 1000.0, window="total")
    gate = env.gates[0]
    await gate.release(await gate.reserve("c0", ALICE, 0.01, 60, pooled=True))
    await _settled(gate)
    hold = await gate.reserve("c1", ALICE, 0.01, 60, pooled=True)
    assert hold.lease is not None
    await env.gates[1].expire_holds(at=hold.expires_at + 1)  # a very slow call
    await gate.commit(hold, 0.01)
    spent, reserved = await gate.usage(budget.id, "total")
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


async def test_a_failed_group_write_is_a_clear_error_and_the_lease_expires(env: Env) -> None:
    store_only(env)
    budget = await set_budget(env.store, ADMIN, "org", 1000.0, window="total")
    gate = env.gates[0]
    await gate.release(await gate.reserve("c0", ALICE, 0.01, 60, pooled=True))
    await _settled(gate)
    hold = await gate.reserve("c1", ALICE, 0.01, 60, pooled=True)
    assert hold.lease is not None
    await env.stores[0].close()  # the store goes away under the gate
    with pytest.raises(BudgetUnavailable):
        await gate.commit(hold, 0.01)
    spent, reserved = await env.gates[1].usage(budget.id, "total")
    assert spent == 0.0 and reserved == pytest.approx(LEASE_CALLS * 0.01)  # held until expiry
