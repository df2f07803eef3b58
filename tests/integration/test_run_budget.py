"""Budgets inside durable runs: reserve and commit are journaled steps, so a run resumed after
its worker was SIGKILLed in the middle of a model call is charged exactly once — checked against
the budget's own books and against what the upstream served — and a run refused by a budget
fails with the budget's error, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from elevenfactor.governance import local_admin, set_budget
from elevenfactor.runtime import (
    decide_approval,
    get_run,
    list_approvals,
    load_events,
    run_result,
    submit_run,
)
from elevenfactor.store import Store, migrate, open_store
from tests.support.fault_upstream import FaultUpstreamProcess
from tests.support.serve import EXE, ROOT, migrated, serving, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

ADMIN = local_admin("cli")
# 1 input token costs $0.001, 1 output token $0.01: the upstream's usage (words in, words out)
# makes each call's cost known, and the budget's spent must equal the one recorded call's cost.
PROJECT = """
providers:
  up: {type: openai, base_url: "%s", api_key: none}
models:
  paid:
    provider: up
    model: m
    price: {input_per_mtok: 1000, output_per_mtok: 10000}
    retry: {attempts: 1}
    timeout: 30
routes: {default: {chain: [paid]}}
"""
AGENT = "instructions: Repeat the user.\nmodel: default\nsettings: {max_tokens: 50}\n"


def _worker(home: Path, url: str, **extra: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ELEVENFACTOR_")}
    env.update(
        DATABASE_URL=url, PYTHONPATH=str(ROOT), ELEVENFACTOR_LEASE_SECONDS="1",
        ELEVENFACTOR_WORKER_POLL_INTERVAL="0.2", **extra,
    )  # fmt: skip
    return subprocess.Popen(
        [EXE, "worker"], cwd=home, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


async def _until(cond: object, what: str, within: float = 60) -> None:
    deadline = time.monotonic() + within
    while not await cond():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def _setup(home: Path, url: str, upstream: FaultUpstreamProcess) -> Store:
    (home / "elevenfactor.yaml").write_text(PROJECT % upstream.base_url)
    (home / "agents").mkdir()
    (home / "agents" / "payer.yaml").write_text(AGENT)
    store = await open_store(url)
    await migrate(store)
    return store


async def test_run_resumed_after_sigkill_mid_call_is_charged_once(
    tmp_path: Path, store_url: str
) -> None:
    upstream = FaultUpstreamProcess(name="paid").start()
    store = await _setup(tmp_path, store_url, upstream)
    try:
        await set_budget(store, ADMIN, "agent:payer", 1.0, window="total")
        await upstream.script("hang:30")  # the first call never answers: its worker dies waiting
        rid = await submit_run(store, "payer", "one two three", owner=ADMIN)
        first = _worker(tmp_path, store_url)
        try:
            await _until(lambda: _served(upstream, 1), "the first model call to arrive")
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait(10)
        second = _worker(tmp_path, store_url)
        try:
            await _until(lambda: _finished(store, rid), "the resumed run to finish")
        finally:
            second.terminate()
            second.wait(30)
        info = await get_run(store, rid, ADMIN)
        assert info.status == "succeeded", info
        assert (await run_result(store, info))["output"]
        assert (await upstream.stats())["requests"] == 2  # the model call was made again...
        names = [e.name for e in await load_events(store, rid)]
        assert names.count("budget.reserve") == 1  # ...under the hold reserved before the kill
        assert names.count("budget.commit") == 1
        costs = await store.fetchall(
            "SELECT cost FROM model_calls WHERE run_id = ? AND status = 'ok'", (rid,)
        )
        assert len(costs) == 1 and costs[0][0] > 0
        holds = await store.fetchall(
            "SELECT status, cost FROM budget_holds WHERE run_id = ?", (rid,)
        )
        assert holds == [("committed", costs[0][0])]
        spent, reserved = await _usage(store)
        assert spent == pytest.approx(costs[0][0], abs=1e-12)  # charged exactly once
        assert reserved == 0
    finally:
        await store.close()
        upstream.stop()


async def test_run_refused_by_its_budget_fails_with_the_budget_error(
    tmp_path: Path, store_url: str
) -> None:
    upstream = FaultUpstreamProcess(name="paid").start()
    store = await _setup(tmp_path, store_url, upstream)
    try:
        # max_tokens 50 at $0.01 is $0.50 of output alone: a $0.10 per-run budget refuses it.
        await set_budget(store, ADMIN, "agent:payer", 0.1, window="run")
        rid = await submit_run(store, "payer", "hello", owner=ADMIN)
        worker = _worker(tmp_path, store_url)
        try:
            await _until(lambda: _finished(store, rid), "the run to fail")
        finally:
            worker.terminate()
            worker.wait(30)
        info = await get_run(store, rid, ADMIN)
        assert info.status == "failed"
        assert "budget_exceeded" in str(info.error) or "agent:payer" in str(info.error)
        assert (await upstream.stats())["requests"] == 0  # refused before any model call
    finally:
        await store.close()
        upstream.stop()


async def _served(upstream: FaultUpstreamProcess, n: int) -> bool:
    return bool((await upstream.stats())["requests"] >= n)


async def _finished(store: Store, rid: str) -> bool:
    return (await get_run(store, rid, ADMIN)).finished


async def _usage(store: Store) -> tuple[float, float]:
    row = await store.fetchone("SELECT SUM(spent), SUM(reserved) FROM budget_usage")
    assert row is not None
    return float(row[0] or 0), float(row[1] or 0)


LIMITED = """
providers: {t: {type: test}}
models: {echo: {provider: t, model: e, retry: {attempts: 1}}}
routes: {default: {chain: [echo]}}
toolsets: {calc: "tests.support.programs:calc"}
programs: ["tests.support.programs:programs"]
limits: {user: {tpm: 1000}}
"""
# Each call is estimated at a little over 545 tokens (max_tokens 545 plus the prompt bytes / 4),
# so the first of the agent's two calls fits the 1,000-token burst and the second waits ~6 s for
# the refill (1,000 tokens a minute): the run parks on a durable timer meanwhile instead of
# holding its worker.
TOOLED = (
    "instructions: Add.\nmodel: default\nsettings: {max_tokens: 545}\n"
    "tools: [{toolset: calc, allow: [add]}]\n"
)


async def test_a_run_over_its_rate_limit_parks_until_capacity_frees(
    tmp_path: Path, store_url: str
) -> None:
    (tmp_path / "elevenfactor.yaml").write_text(LIMITED)
    (tmp_path / "agents").mkdir()
    (tmp_path / "agents" / "adder.yaml").write_text(TOOLED)
    store = await open_store(store_url)
    await migrate(store)
    worker = _worker(tmp_path, store_url, ELEVENFACTOR_WORKER_CONCURRENCY="1")
    try:
        rid = await submit_run(store, "adder", "add 1 and 2", owner=ADMIN)

        async def parked() -> bool:  # the second call's limits.acquire said "wait"
            return [e.name for e in await load_events(store, rid)].count("limits.acquire") >= 2

        await _until(parked, "the run to park on its rate limit", 30)
        # The worker runs one run at a time: another run finishing while the first waits for
        # capacity shows the parked run holds no worker.
        other = await submit_run(store, "greet", {"name": "x"}, owner=ADMIN)
        await _until(lambda: _finished(store, other), "the other run to finish", 30)
        assert not (await get_run(store, rid, ADMIN)).finished
        await _until(lambda: _finished(store, rid), "the parked run to finish", 60)
        info = await get_run(store, rid, ADMIN)
        assert info.status == "succeeded", info
        names = [e.name for e in await load_events(store, rid)]
        assert names.count("model") == 2
    finally:
        worker.terminate()
        worker.wait(30)
        await store.close()


@pytest.mark.parametrize("action", ["approve", "reject"])
async def test_an_approve_budget_holds_the_run_for_a_reviewer(
    tmp_path: Path, store_url: str, action: str
) -> None:
    """A run whose call a budget with ``on_exceed: approve:finance`` cannot cover waits at an
    approval gate: approved, the call goes through once (charged past the limit); rejected, the
    run fails with the budget's error. No model call is made while it waits."""
    upstream = FaultUpstreamProcess(name="paid").start()
    store = await _setup(tmp_path, store_url, upstream)
    worker = _worker(tmp_path, store_url)
    try:
        await set_budget(
            store, ADMIN, "agent:payer", 0.1, window="run", on_exceed="approve:finance"
        )
        rid = await submit_run(store, "payer", "hello", owner=ADMIN)

        async def pending() -> bool:
            return bool(await list_approvals(store, run_id=rid))

        await _until(pending, "the budget's approval gate")
        (gate,) = await list_approvals(store, run_id=rid)
        assert gate.reviewer_group == "finance"
        assert (await upstream.stats())["requests"] == 0
        await decide_approval(store, gate.id, action, by=ADMIN, reason="month end")
        await _until(lambda: _finished(store, rid), "the run to finish")
        info = await get_run(store, rid, ADMIN)
        spent, reserved = await _usage(store)
        if action == "approve":
            assert info.status == "succeeded", info
            assert (await upstream.stats())["requests"] == 1
            (cost,) = await store.fetchone(
                "SELECT SUM(cost) FROM model_calls WHERE run_id = ?", (rid,)
            ) or (None,)
            assert spent == pytest.approx(cost) and reserved == 0  # let through, charged
        else:
            assert info.status == "failed"
            assert "rejected by user:local: month end" in str(info.error)
            assert (await upstream.stats())["requests"] == 0
            assert spent == 0
    finally:
        worker.terminate()
        worker.wait(30)
        await store.close()
        upstream.stop()


TAGGED = """
providers: {t: {type: test}}
models:
  echo:
    provider: t
    model: e
    price: {input_per_mtok: 0, output_per_mtok: 25000}
    retry: {attempts: 1}
routes: {default: {chain: [echo]}}
"""


def test_run_tags_go_with_every_call_and_into_the_cost_report(
    tmp_path: Path, store_url: str
) -> None:
    """Tags given at submission (``POST /v1/runs``) are recorded with each of the run's model
    calls and in its ledger entry; ``GET /v1/cost?by=tag`` groups the run's spend by them."""
    asyncio.run(migrated(store_url))
    (tmp_path / "agents").mkdir()
    (tmp_path / "agents" / "echoer.yaml").write_text("instructions: Echo.\nmodel: default\n")
    with serving(tmp_path, store_url, TAGGED) as srv:
        bad = httpx.post(srv.base + "/v1/runs", json={"agent": "echoer", "tags": ["no spaces"]})
        assert bad.status_code == 400, bad.text
        r = httpx.post(
            srv.base + "/v1/runs",
            json={"agent": "echoer", "input": "hi", "tags": ["campaign-7", "env:prod"]},
        )
        assert r.status_code == 201, r.text
        rid = r.json()["id"]
        wait_for(
            lambda: httpx.get(f"{srv.base}/v1/runs/{rid}").json()["status"] == "succeeded",
            "the run to succeed",
        )

        def by_tag() -> dict[str, float]:
            rows = httpx.get(srv.base + "/v1/cost", params={"by": "tag"}).json()["data"]
            return {row["group"]["tag"]: row["cost"] for row in rows if row["group"]["tag"]}

        costs = wait_for(lambda: by_tag() or None, "the call record to be written")
    assert set(costs) == {"campaign-7", "env:prod"}
    assert costs["campaign-7"] == costs["env:prod"] > 0
    ledger = asyncio.run(_ledger_body(store_url, rid))
    assert ledger["tags"] == ["campaign-7", "env:prod"]


async def _ledger_body(url: str, rid: str) -> dict[str, Any]:
    store = await open_store(url)
    try:
        row = await store.fetchone(
            "SELECT body FROM ledger WHERE subject = ? AND kind = 'run.created'", (rid,)
        )
        assert row is not None
        return dict(orjson.loads(row[0]))
    finally:
        await store.close()
