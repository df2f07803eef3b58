"""The store gate does each operation in one request to the store (one PL/pgSQL call on
PostgreSQL, one ``BEGIN IMMEDIATE`` job on SQLite) with the semantics of the statement-by-statement
transactions it replaced. Two gates on two connections stand for two processes."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from elevenfactor.errors import BudgetExceeded, BudgetUnavailable
from elevenfactor.governance import Charge, Hold, local_admin
from elevenfactor.governance._budget_admin import set_budget
from elevenfactor.governance._gate_sql import StoreSpendGate
from elevenfactor.store import Store, migrate, open_store

pytestmark = pytest.mark.integration

ADMIN = local_admin("cli")
ORG = "org_default"
ALICE = Charge(org_id=ORG, user_id="user_local", route="default", models=("echo",))


@dataclass
class Pair:
    store: Store
    other: Store
    gate: StoreSpendGate
    second: StoreSpendGate
    """A gate on its own connection: a second process."""

    async def usage(self, budget_id: str, window: str = "total") -> tuple[float, float]:
        return await self.gate.usage(budget_id, window)

    async def hold_row(self, hold_id: str) -> tuple[Any, ...] | None:
        return await self.store.fetchone(
            "SELECT status, amount, cost, org_id FROM budget_holds WHERE id = ?", (hold_id,)
        )


@pytest.fixture
async def pair(store_url: str) -> AsyncIterator[Pair]:
    store = await open_store(store_url)
    await migrate(store)
    other = await open_store(store_url)
    p = Pair(store, other, StoreSpendGate(store), StoreSpendGate(other))
    try:
        yield p
    finally:
        await p.gate.aclose()
        await p.second.aclose()
        await other.close()
        await store.close()


async def _wait_for(cond: Any, what: str, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)


# -- one request per operation ------------------------------------------------------------


async def test_each_operation_is_one_request_to_the_store(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    budget = await set_budget(pair.store, ADMIN, "org", 1.0, window="total")
    await pair.gate.check(ALICE)  # definitions loaded: no reads of them below
    calls: list[str] = []
    store: Any = pair.store
    for name in ("execute", "executemany", "fetchone", "fetchall", "transaction"):
        if hasattr(store, name):
            monkeypatch.setattr(store, name, _counting(calls, name, getattr(store, name)))
    if hasattr(store, "run_transaction"):
        monkeypatch.setattr(
            store, "run_transaction", _counting(calls, "job", store.run_transaction)
        )
    one = "fetchone" if pair.store.dialect == "postgresql" else "job"

    hold = await pair.gate.reserve("r1", ALICE, 0.4, 60)
    assert calls == [one]
    await pair.gate.commit(hold, 0.1)
    assert calls == [one, one]
    await pair.gate.release(await pair.gate.reserve("r2", ALICE, 0.2, 60))
    assert calls == [one] * 4
    monkeypatch.undo()
    assert await pair.usage(budget.id) == (pytest.approx(0.1), 0.0)


def _counting(calls: list[str], name: str, fn: Any) -> Any:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        calls.append(name)
        return fn(*args, **kwargs)

    return wrapper


# -- concurrency ----------------------------------------------------------------------------


async def test_concurrent_reserves_admit_exactly_what_the_budget_allows(pair: Pair) -> None:
    budget = await set_budget(pair.store, ADMIN, "org", 1.0, window="total")
    admitted: list[Hold] = []

    async def one(i: int) -> None:
        gate = pair.gate if i % 2 else pair.second
        try:
            hold = await gate.reserve(f"c{i}", ALICE, 0.1, 60)
        except BudgetExceeded as exc:
            assert exc.details["budget_id"] == budget.id
            return
        admitted.append(hold)
        spent, reserved = await gate.usage(budget.id, "total")
        assert spent + reserved <= 1.0 + 1e-9  # never over, at any point
        await gate.commit(hold, 0.1)

    await asyncio.gather(*(one(i) for i in range(50)))
    assert len(admitted) == 10  # exactly the ten calls $1.00 covers
    spent, reserved = await pair.usage(budget.id)
    assert spent == pytest.approx(1.0) and spent <= 1.0 + 1e-9
    assert reserved == 0.0  # exactly: rounded, no float residue
    rows = await pair.store.fetchall("SELECT status FROM budget_holds")
    assert sorted(r[0] for r in rows) == ["committed"] * 10  # refused calls left no hold


async def test_reserve_waits_for_another_writer_and_then_succeeds(pair: Pair) -> None:
    if pair.store.dialect != "sqlite":
        pytest.skip("SQLite's write lock")
    budget = await set_budget(pair.store, ADMIN, "org", 1.0, window="total")
    await pair.gate.check(ALICE)
    store: Any = pair.store
    async with pair.other.transaction() as tx:  # another process holds the write lock
        await tx.execute("UPDATE budgets SET updated_at = updated_at")
        task = asyncio.create_task(pair.gate.reserve("w1", ALICE, 0.3, 60))
        await _wait_for(lambda: store._pending > 0, "the job to move to the store's thread")
        assert not task.done()
    hold = await asyncio.wait_for(task, 10)
    assert hold.amount == 0.3
    assert await pair.usage(budget.id) == (0.0, pytest.approx(0.3))


# -- idempotence ----------------------------------------------------------------------------


async def test_reserve_commit_and_release_are_idempotent_by_hold_id(pair: Pair) -> None:
    hard = await set_budget(pair.store, ADMIN, "org", 10.0, window="total")
    soft = await set_budget(pair.store, ADMIN, "user:local", 0.1, window="total", soft=True)
    first = await pair.gate.reserve("same", ALICE, 0.4, 60)
    assert first.soft == (soft.id,)
    again = await pair.second.reserve("same", ALICE, 0.4, 60)
    assert again == first  # amount, windows, expiry and soft list as stored
    changed = await pair.second.reserve("same", ALICE, 5.0, 600)  # other arguments: still it
    assert changed == first
    assert await pair.usage(hard.id) == (0.0, pytest.approx(0.4))

    await pair.gate.commit(first, 0.25)
    await pair.second.commit(first, 0.25)  # a retried commit charges once
    await pair.gate.release(first)  # settled: nothing to release
    assert await pair.usage(hard.id) == (pytest.approx(0.25), 0.0)
    assert await pair.usage(soft.id) == (pytest.approx(0.25), 0.0)
    assert await pair.gate.reserve("same", ALICE, 0.4, 60) == first  # settled stays settled
    assert await pair.usage(hard.id) == (pytest.approx(0.25), 0.0)

    other = await pair.gate.reserve("other", ALICE, 0.5, 60)
    await pair.gate.release(other)
    await pair.second.release(other)
    await pair.gate.commit(other, 0.5)  # released: the commit does nothing
    assert await pair.usage(hard.id) == (pytest.approx(0.25), 0.0)
    assert await pair.hold_row("other") == ("released", 0.5, None, ORG)


# -- expiry ---------------------------------------------------------------------------------


async def _expire(pair: Pair, hold_id: str) -> None:
    """The process holding it died long ago."""
    await pair.store.execute("UPDATE budget_holds SET expires_at = 0 WHERE id = ?", (hold_id,))


async def test_a_reserve_releases_the_expired_holds_of_its_organisation(pair: Pair) -> None:
    budget = await set_budget(pair.store, ADMIN, "org", 1.0, window="total")
    await pair.second.reserve("dead", ALICE, 0.6, 60)
    live = await pair.gate.reserve("live", ALICE, 0.3, 60)
    with pytest.raises(BudgetExceeded):
        await pair.gate.reserve("big", ALICE, 0.5, 60)
    await _expire(pair, "dead")
    # Refused (0.3 held + 0.8 > 1.0) even once the dead hold is released, but the release
    # itself is kept.
    with pytest.raises(BudgetExceeded) as caught:
        await pair.gate.reserve("bigger", ALICE, 0.8, 60)
    assert caught.value.details["reserved"] == pytest.approx(0.3)
    assert (await pair.hold_row("dead"))[0] == "expired"  # type: ignore[index]
    assert await pair.usage(budget.id) == (0.0, pytest.approx(0.3))
    assert (await pair.gate.reserve("big", ALICE, 0.5, 60)).amount == 0.5
    await pair.gate.release(live)
    assert await pair.usage(budget.id) == (0.0, pytest.approx(0.5))


async def test_a_commit_of_an_expired_hold_still_charges(pair: Pair) -> None:
    budget = await set_budget(pair.store, ADMIN, "org", 1.0, window="total")
    late = await pair.second.reserve("late", ALICE, 0.9, 60)
    await _expire(pair, "late")
    assert await pair.gate.expire_holds() == 1  # the periodic sweep gives the 0.9 back
    assert await pair.usage(budget.id) == (0.0, 0.0)
    await pair.second.release(late)  # expired: nothing to give back twice
    await pair.second.commit(late, 0.3)
    await pair.gate.commit(late, 0.3)
    assert await pair.usage(budget.id) == (pytest.approx(0.3), 0.0)
    assert await pair.hold_row("late") == ("committed", 0.9, pytest.approx(0.3), ORG)


async def test_a_hold_the_store_never_saw_is_recorded_on_commit(pair: Pair) -> None:
    budget = await set_budget(pair.store, ADMIN, "org", 1.0, window="total")
    await pair.gate.release(await pair.gate.reserve("first", ALICE, 0.1, 60))  # the window
    ghost = Hold("ghost", 0.2, ((budget.id, "total"),), time.time() + 60, ())
    await pair.gate.commit(ghost, 0.15)
    await pair.second.commit(ghost, 0.15)  # recorded now: charged once
    assert await pair.usage(budget.id) == (pytest.approx(0.15), 0.0)
    assert await pair.hold_row("ghost") == ("committed", 0.2, pytest.approx(0.15), ORG)


# -- refusals -------------------------------------------------------------------------------


async def test_a_refusal_by_a_later_budget_holds_nothing_on_an_earlier_one(pair: Pair) -> None:
    a = await set_budget(pair.store, ADMIN, "org", 10.0, window="total")
    b = await set_budget(pair.store, ADMIN, "user:local", 10.0, window="total")
    first, last = sorted((a, b), key=lambda x: x.id)  # the order rows are locked in
    await pair.gate.reserve("before", ALICE, 0.25, 60)
    last = await set_budget(pair.store, ADMIN, last.scope, 0.3, window="total")  # tight, hard
    await pair.gate.check(ALICE)
    with pytest.raises(BudgetExceeded) as caught:
        await pair.gate.reserve("refused", ALICE, 0.1, 60)
    assert caught.value.details["budget_id"] == last.id
    assert caught.value.details["spent"] == 0.0
    assert caught.value.details["reserved"] == pytest.approx(0.25)
    assert await pair.usage(first.id) == (0.0, pytest.approx(0.25))  # untouched
    assert await pair.usage(last.id) == (0.0, pytest.approx(0.25))
    assert await pair.hold_row("refused") is None


async def test_soft_budgets_are_reported_and_kept_with_the_hold(pair: Pair) -> None:
    hard = await set_budget(pair.store, ADMIN, "org", 1.0, window="total")
    soft = await set_budget(pair.store, ADMIN, "model:echo", 0.1, window="total", soft=True)
    inside = await pair.gate.reserve("s1", ALICE, 0.08, 60)
    past = await pair.gate.reserve("s2", ALICE, 0.08, 60)
    assert inside.soft == () and past.soft == (soft.id,)
    assert await pair.second.reserve("s2", ALICE, 0.08, 60) == past
    assert await pair.usage(soft.id) == (0.0, pytest.approx(0.16))
    assert await pair.usage(hard.id) == (0.0, pytest.approx(0.16))
    forced = await pair.gate.reserve("f1", ALICE, 2.0, 60, force=True)  # an approved call
    assert set(forced.soft) == {hard.id, soft.id}
    assert await pair.usage(hard.id) == (0.0, pytest.approx(2.16))


# -- alerts ---------------------------------------------------------------------------------


async def test_a_threshold_crossed_on_commit_is_claimed_once(
    pair: Pair, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "elevenfactor.budgets")
    budget = await set_budget(pair.store, ADMIN, "org", 1.0, window="total", alerts=[0.5])
    holds = [await pair.gate.reserve(f"a{i}", ALICE, 0.2, 60) for i in range(4)]
    # Concurrent commits from two "processes": exactly one takes the spend past 0.5.
    await asyncio.gather(
        *((pair.gate if i % 2 else pair.second).commit(h, 0.2) for i, h in enumerate(holds))
    )
    await pair.second.commit(holds[0], 0.2)  # a retried commit: no second alert either
    fired = [r for r in caplog.records if r.getMessage() == "budget_alert"]
    assert [getattr(r, "threshold", None) for r in fired] == [0.5]
    assert getattr(fired[0], "budget_id", None) == budget.id
    assert getattr(fired[0], "spent", 0.0) == pytest.approx(0.6)
    rows = await pair.store.fetchall("SELECT budget_id, window_key, threshold FROM budget_alerts")
    assert rows == [(budget.id, "total", 0.5)]
    assert await pair.usage(budget.id) == (pytest.approx(0.8), 0.0)


# -- failures -------------------------------------------------------------------------------


async def test_a_broken_store_fails_closed(pair: Pair) -> None:
    await set_budget(pair.store, ADMIN, "org", 1.0, window="total")
    await pair.gate.check(ALICE)
    if pair.store.dialect == "postgresql":
        await pair.store.execute(
            "DROP FUNCTION ef_budget_reserve(text, text, double precision, double precision,"
            " double precision, text, text[], text[], double precision[], boolean[], text)"
        )
        hint = "elevenfactor migrate"
    else:
        await pair.store.execute("DROP TABLE budget_usage")
        hint = "DATABASE_URL"
    with pytest.raises(BudgetUnavailable) as caught:
        await pair.gate.reserve("x", ALICE, 0.1, 60)
    assert hint in (caught.value.hint or "")
    assert await pair.hold_row("x") is None


async def test_run_transaction_commits_or_rolls_back_as_one(tmp_path: Any) -> None:
    from elevenfactor.store._sqlite import SQLiteStore

    db = await open_store(f"sqlite:///{tmp_path}/tx.db")
    assert isinstance(db, SQLiteStore)
    try:
        await db.execute("CREATE TABLE t (a INTEGER)")

        def ok(conn: sqlite3.Connection) -> int:
            conn.execute("INSERT INTO t VALUES (1)")
            return int(conn.execute("SELECT COUNT(*) FROM t").fetchone()[0])

        def fails(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO t VALUES (2)")
            raise RuntimeError("boom")

        assert await db.run_transaction(ok) == 1
        with pytest.raises(RuntimeError):
            await db.run_transaction(fails)
        assert await db.fetchall("SELECT a FROM t") == [(1,)]
        assert not db.conn.in_transaction
    finally:
        await db.close()
