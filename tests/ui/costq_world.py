"""A seeded store and an in-process dashboard for the cost and quality page tests.

Two organisations: ``default`` with ``root`` (admin), ``ann`` and ``bob`` (members of team
``red``, which does not share), ``kim`` (a member), ``sam`` and ``tom`` (team ``blue``, which
shares); ``two`` with ``eve`` (its admin). Each
owns model calls (ann's on a deployment whose name is markup, to prove escaping), guard
verdicts, runs with feedback, guard steps and online scores, and eval results; there are
budgets with spend and reservations, and kill switches. Markers such as ``bob-secret`` name what
only its owner (and its admins) may see, so a test can prove another member's page lacks them.

Everything is written through the library (the call recorder, ``save_result``,
``add_feedback``, ``record_scores``, ``set_budget``, ``kill``, the journal's ``append_event``
under a real lease); only the budget windows' spent and reserved amounts are written as rows,
as the budget gate keeps them.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from starlette.testclient import TestClient

from elevenfactor.config import Settings, parse_project
from elevenfactor.evals import CaseResult, Score, SuiteResult
from elevenfactor.evals._store import save_result
from elevenfactor.governance import (
    Principal,
    kill,
    local_admin,
    principal_for_user,
    set_budget,
)
from elevenfactor.governance._windows import window_key
from elevenfactor.observe import CallRecord, CallRecorder
from elevenfactor.runtime import claim_run, submit_run
from elevenfactor.runtime._feedback import ScorerRow, add_feedback, record_scores
from elevenfactor.runtime._journal import append_event
from elevenfactor.server import create_app
from elevenfactor.store import Store, migrate, open_store
from tests.support.principals import add_people

PROJECT = {
    "providers": {"t": {"type": "test"}},
    "models": {"echo": {"provider": "t", "model": "e"}},
}
NOW = time.time()
MARKUP = "<script>alert(1)</script>"
"""ann's deployment name: it must come out escaped wherever it is shown."""


@dataclass
class World:
    """The seeded store's URL, each user's API key, and ids made while seeding."""

    url: str
    keys: dict[str, str]
    ids: dict[str, str]
    app: Any = None

    @contextmanager
    def client(self) -> Iterator[TestClient]:
        """An in-process client of the dashboard (the gateway opened by its lifespan)."""
        with TestClient(self.app, follow_redirects=False) as c:
            yield c

    def auth(self, who: str) -> dict[str, str]:
        """The ``Authorization`` header of ``who``'s key."""
        return {"Authorization": f"Bearer {self.keys[who]}"}

    def sql(self, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Rows of ``query`` on the store (a connection of its own)."""

        async def go() -> list[tuple[Any, ...]]:
            db = await open_store(self.url)
            try:
                return [tuple(r) for r in await db.fetchall(query, params)]
            finally:
                await db.close()

        return asyncio.run(go())


def error_code(html: str) -> str:
    """The error code an error page shows."""
    found = re.search(r"Error code <code>([a-z_]+)</code>", html)
    assert found, html[:3000]
    return found.group(1)


def csrf_of(html: str) -> str:
    """The CSRF token a page's forms carry."""
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html[:2000]
    return found.group(1)


def _call(who: Principal, deployment: str, cost: float, at: float, **kw: Any) -> CallRecord:
    return CallRecord(
        trace_id="t", route="default", stream=False, status="ok", tokens_in=100, tokens_out=20,
        latency_ms=5.0, provider="t", deployment=deployment, model=deployment, cost=cost,
        org_id=who.org_id, team_id=who.team_id, user_id=who.user_id, created_at=at, **kw,
    )  # fmt: skip


def _verdict(action: str, policy: str, rule: str, stage: str = "input") -> dict[str, Any]:
    return {"stage": stage, "action": action, "policy": policy, "rule": rule, "findings": [],
            "fired": [], "elapsed_us": 10}  # fmt: skip


def _guard(*verdicts: dict[str, Any]) -> dict[str, Any]:
    return {"policies": sorted({v["policy"] for v in verdicts}), "verdicts": list(verdicts)}


def _suite(run_id: str, suite: str, finished: float, second: bool) -> SuiteResult:
    """Cases ``c1`` (passes) and ``c2`` (passes if ``second``)."""
    return SuiteResult(
        suite, "v1",
        results=[CaseResult("c1", 0, (Score("exact", True, 1.0),), output="ok", cost_usd=0.01),
                 CaseResult("c2", 0, (Score("exact", second, float(second), "c2 reason"),),
                            cost_usd=0.02)],
        thresholds={"c1": 1.0, "c2": 1.0},
        metadata={"run_id": run_id, "target": "greet", "model": "echo",
                  "started_at": finished - 5, "finished_at": finished},
    )  # fmt: skip


async def _guard_steps(db: Store, owner: Principal, queue: str, records: list[Any]) -> str:
    """A run of ``owner`` whose journal holds a guard step per record (the last one large
    enough to go to the blob table)."""
    rid = await submit_run(db, "greet", {"name": "x"}, owner=owner, queue=queue)
    lease = await claim_run(db, "costq-test", [queue], 60)
    assert lease is not None and lease.run_id == rid
    prev = lease.genesis_hash
    for n, record in enumerate(records):
        output = orjson.dumps(record, option=orjson.OPT_SORT_KEYS)
        event = await append_event(
            db, run_id=rid, n=n, step_id=f"g{n}", kind="guard", name=f"guard.{record['stage']}",
            status="ok", output=output, error=None, fence=lease.fence, prev_hash=prev,
        )  # fmt: skip
        prev = event.hash
    return rid


async def seed(url: str) -> World:
    """Fill a fresh store (see the module docstring)."""
    db = await open_store(url)
    try:
        await migrate(db)
        admin = local_admin("cli")
        ids: dict[str, str] = {}
        keys = await add_people(
            db, [("red", False), ("blue", True)],
            [("root", None, ("admin",)), ("ann", "red", ("member",)),
             ("bob", "red", ("member",)), ("kim", None, ("member",)),
             ("sam", "blue", ("member",)), ("tom", "blue", ("member",))],
            alien=("eve", ("admin",)),
        )  # fmt: skip
        ann, bob = await principal_for_user(db, "ann"), await principal_for_user(db, "bob")
        eve = await principal_for_user(db, "eve", org="two")
        hour = NOW - 3600
        recorder = CallRecorder(db)
        for rec in (
            _call(ann, MARKUP, 0.25, hour, guard=_guard(_verdict("block", "pii@1", "ann-rule"))),
            _call(ann, "ann-model", 0.5, hour - 86400, guard=_guard(_verdict("allow", "p@1", ""))),
            _call(bob, "bob-secret-model", 1.0, hour,
                  guard=_guard(_verdict("redact", "pii@1", "bob-rule", "output"))),
            _call(eve, "eve-secret-model", 2.0, hour),
        ):  # fmt: skip
            recorder.record(rec)
        assert await recorder.flush() == 4
        ids["ann_run"] = await _guard_steps(db, ann, "q-ann", [
            {**_verdict("allow", "", ""), "checked": 1, "items": [], "policies": ["runpol@2"]},
            {**_verdict("block", "runpol@2", "ann-run-rule"), "padding": "x" * 20_000},
        ])  # fmt: skip
        ids["bob_run"] = await _guard_steps(
            db, bob, "q-bob", [_verdict("escalate", "runpol@2", "bob-run-rule", "tool_call")]
        )
        tom = await principal_for_user(db, "tom")
        ids["tom_run"] = await _guard_steps(
            db, tom, "q-tom", [_verdict("block", "runpol@2", "tom-team-rule", "output")]
        )
        await add_feedback(db, tom, ids["tom_run"], label="team-shared", comment="tom-team-note")
        await add_feedback(db, ann, ids["ann_run"], score=0.5, label="helpful",
                           comment="ann-comment <b>bold</b>")  # fmt: skip
        await add_feedback(db, bob, ids["bob_run"], score=-1, comment="bob-secret-comment")
        await record_scores(db, ids["ann_run"], "scorer:tone", [
            ScorerRow("fb_online_ann", 1.0, "pass", None, None, rule="ann-online", scorer="judge"),
        ])  # fmt: skip
        await record_scores(db, ids["bob_run"], "scorer:tone", [
            ScorerRow("fb_online_bob", 0.0, "fail", None, None, rule="bob-online-secret",
                      scorer="judge"),
        ])  # fmt: skip
        for rid, who, suite, at, second in (
            ("ev_ann_1", ann, "qa", NOW - 7200, True),
            ("ev_ann_2", ann, "qa", NOW - 600, False),
            ("ev_bob_1", bob, "bob-secret-suite", NOW - 600, True),
            ("ev_eve_1", eve, "eve-secret-suite", NOW - 600, True),
        ):
            await save_result(db, who, _suite(rid, suite, at, second), tokens=42)
        for scope, limit in (("org", 10.0), ("user:ann", 1.0), ("user:bob", 2.0)):
            budget = await set_budget(db, admin, scope, limit, window="day")
            ids[f"budget_{scope}"] = budget.id
        key = window_key("day", time.time()) or ""
        await db.execute(
            "INSERT INTO budget_usage (budget_id, window_key, spent, reserved) VALUES (?, ?, ?, ?)",
            (ids["budget_user:ann"], key, 0.75, 0.5),
        )
        ids["kill_bob"] = (await kill(db, admin, "user:bob", "bob-secret-kill-reason")).switch.id
        ids["kill_ann"] = (await kill(db, admin, "user:ann", "ann stopped for review")).switch.id
        return World(url, keys, ids)
    finally:
        await db.close()


def make_world(url: str, data_dir: Path) -> World:
    """Seed ``url`` and build the app (not started: ``World.client`` runs its lifespan)."""
    world = asyncio.run(seed(url))
    settings = Settings(database_url=url, data_dir=data_dir, dev=False, in_process_worker=False)
    world.app = create_app(settings, parse_project(PROJECT))
    return world
