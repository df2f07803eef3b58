"""The store-derived gauges of ``/metrics`` on both stores: runs by status and queue, leases,
queue lag, pending approvals and their age, budget use, paused agents; an organisation sees
only its own rows; answers are reused for ``ttl`` seconds."""

from __future__ import annotations

import time
from typing import Any

from elevenfactor.governance import DEFAULT_ORG, Principal, local_admin, set_budget
from elevenfactor.governance._windows import window_key
from elevenfactor.observe._metrics_store import StoreGauges
from elevenfactor.runtime import submit_run
from elevenfactor.store import Store

NOW = time.time()
P = "elevenfactor_"
ADMIN_B = Principal("org_b", "u_b", "bea", roles=frozenset({"admin"}))


async def _run(
    store: Store, owner: Principal, sql: str = "", *args: Any, queue: str = "default"
) -> str:
    rid = await submit_run(store, "greet", {}, owner=owner, queue=queue)
    if sql:
        await store.execute(f"UPDATE runs SET {sql} WHERE id = ?", (*args, rid))
    return rid


async def _approval(store: Store, org: str, group: str | None, age: float, status: str) -> None:
    n = await store.fetchone("SELECT COUNT(*) FROM approvals")
    assert n is not None
    await store.execute(
        "INSERT INTO approvals (id, run_id, step_id, name, status, request_hash, reviewer_group,"
        " created_at, on_timeout, org_id) VALUES (?, ?, ?, 'ok?', ?, 'h', ?, ?, 'reject', ?)",
        (f"ap{n[0]}", f"run{n[0]}", "s1", status, group, NOW - age, org),
    )


async def _seed(store: Store) -> None:
    admin = local_admin("test")
    await store.execute("INSERT INTO orgs (id, name, created_at) VALUES ('org_b', 'b', 0)", ())
    await _run(store, admin, "created_at = ?", NOW - 100)  # queued, runnable for 100 s
    await _run(store, admin, "wake_at = ?", NOW + 600)  # queued, not runnable yet
    await _run(store, admin, "status = 'running', lease_expires_at = ?", NOW + 14)
    await _run(store, admin, "status = 'running', lease_expires_at = ?", NOW + 2)  # late
    await _run(store, admin, "status = 'running', lease_expires_at = ?", NOW - 5)  # expired
    await _run(store, admin, "status = 'succeeded'")
    await _run(store, admin, "status = 'waiting'")
    await _run(store, admin, "status = 'failed'", queue="made-up-by-a-client")
    await _run(store, ADMIN_B, "created_at = ?", NOW - 30)
    await _approval(store, DEFAULT_ORG, "legal", 50, "pending")
    await _approval(store, DEFAULT_ORG, "legal", 20, "pending")
    await _approval(store, DEFAULT_ORG, None, 5, "pending")
    await _approval(store, DEFAULT_ORG, "legal", 500, "approved")
    await _approval(store, "org_b", "ops", 10, "pending")
    budget = await set_budget(store, admin, "org", 10.0, window="month")
    await store.execute(
        "INSERT INTO budget_usage (budget_id, window_key, spent, reserved) VALUES (?, ?, ?, ?)",
        (budget.id, window_key("month", time.time()), 2.5, 0.5),
    )
    await set_budget(store, ADMIN_B, "org", 99.0, window="day")
    await store.execute(
        "INSERT INTO agent_breakers (org_id, agent, state, window_seconds, min_runs, config,"
        " updated_at) VALUES (?, 'support', 'paused', 60, 5, '{}', ?)",
        (DEFAULT_ORG, NOW),
    )


async def test_gauges_of_every_organisation(store: Store) -> None:
    await _seed(store)
    gauges = StoreGauges(store, queues=frozenset({"default"}), lease_seconds=15, clock=lambda: NOW)
    data = await gauges.samples()
    a, b = DEFAULT_ORG, "org_b"
    assert data[P + "runs"] == {
        (a, "default", "queued"): 2,
        (a, "default", "running"): 3,
        (a, "default", "succeeded"): 1,
        (a, "default", "waiting"): 1,
        (a, "other", "failed"): 1,  # a queue that is not configured
        (b, "default", "queued"): 1,
    }
    assert data[P + "runs_leased"] == {(a, "default"): 2}
    assert data[P + "runs_lease_expired"] == {(a, "default"): 1}
    assert data[P + "runs_lease_expiring"] == {(a, "default"): 1}  # 2 s of 15 left
    lag = data[P + "queue_lag_seconds"]
    assert lag[(a, "default")] == 100 and lag[(b, "default")] == 30 and lag[(a, "other")] == 0
    assert data[P + "approvals_pending"] == {(a, "legal"): 2, (a, "none"): 1, (b, "ops"): 1}
    ages = data[P + "approvals_oldest_pending_age_seconds"]
    assert round(ages[(a, "legal")]) == 50 and round(ages[(b, "ops")]) == 10
    spent = data[P + "budget_spent_usd"]
    assert sorted((k[0], k[2], k[3], v) for k, v in spent.items()) == [
        (b, "org", "day", 0.0),
        (a, "org", "month", 2.5),
    ]
    reserved, limit = data[P + "budget_reserved_usd"], data[P + "budget_limit_usd"]
    assert sorted((k[0], v) for k, v in reserved.items()) == [(b, 0.0), (a, 0.5)]
    assert sorted((k[0], v) for k, v in limit.items()) == [(b, 99.0), (a, 10.0)]
    assert data[P + "agents_paused"] == {(a, "support"): 1}


async def test_an_organisation_sees_only_its_own(store: Store) -> None:
    await _seed(store)
    gauges = StoreGauges(store, lease_seconds=15, clock=lambda: NOW)
    data = await gauges.samples("org_b")
    for name, samples in data.items():
        assert all(labels[0] == "org_b" for labels in samples), name
    assert data[P + "runs"] == {("org_b", "default", "queued"): 1}
    assert data[P + "approvals_pending"] == {("org_b", "ops"): 1}
    assert list(data[P + "budget_limit_usd"].values()) == [99.0]
    assert data[P + "agents_paused"] == {}
    families = {f.name: f for f in await gauges.families("org_b")}
    assert [s.labels["org"] for s in families[P + "runs"].samples] == ["org_b"]


async def test_answers_are_reused_for_ttl_seconds(store: Store) -> None:
    admin = local_admin("test")
    await _run(store, admin)
    cached = StoreGauges(store, ttl=3600)
    fresh = StoreGauges(store, ttl=0)
    key = (DEFAULT_ORG, "default", "queued")
    assert (await cached.samples())[P + "runs"][key] == 1
    await _run(store, admin)
    assert (await cached.samples())[P + "runs"][key] == 1  # within the ttl: not read again
    assert (await fresh.samples())[P + "runs"][key] == 2
