"""A seeded store for the quality page's SQL tests (``test_quality_sql``,
``test_quality_online_sql``), and the Python way of counting guard trips they check against.

Two organisations: ``default`` with ``root`` (admin), ``ann`` and ``bob`` (team ``red``, which
does not share), ``sam`` and ``tom`` (team ``blue``, which shares); ``two`` with ``eve``. Each
owns gateway calls with the guard records of ``GATEWAY`` (and one older than the range), a run
with the guard steps of ``RUN_STEPS`` (inline, in ``blobs``, unsorted, erased; and a step that is
no guard check) and, but root, online scores. Everything is written through the library (the
call recorder, ``append_event`` under a real lease, ``erase``, ``record_scores``).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from elevenfactor.config import Settings, parse_project
from elevenfactor.governance import (
    Principal,
    principal_for_user,
)
from elevenfactor.governance._retention_erase import Erasure, erase
from elevenfactor.observe import CallRecord, CallRecorder
from elevenfactor.runtime import claim_run, submit_run
from elevenfactor.runtime._codec import encode
from elevenfactor.runtime._feedback import ScorerRow, record_scores
from elevenfactor.runtime._journal import append_event
from elevenfactor.server import create_app
from elevenfactor.server.ui import _quality_guards as qg
from elevenfactor.server.ui._ranges import TimeRange
from elevenfactor.store import Store, migrate, open_store
from tests.support.principals import add_people

NOW = time.time()
# NOW is taken when the tests are collected and the world may be built tens of minutes later
# in a full run (runs and journal events carry the real time): the range ends a day ahead.
SPAN = TimeRange(NOW - 30 * 86400, NOW + 86400, "30d")
PEOPLE = ("root", "ann", "bob", "sam", "tom", "eve")
SEEN = {"root": 5, "ann": 1, "bob": 1, "sam": 2, "tom": 2, "eve": 1}
"""Whose calls and runs each one sees: root (admin) the organisation's five; ann and bob
(team red, which does not share) their own; sam and tom (team blue, which shares) both."""
PROJECT = {
    "providers": {"t": {"type": "test"}},
    "models": {"echo": {"provider": "t", "model": "e"}},
}


def _v(action: Any, policy: str = "pol@1", rule: str = "r", stage: str = "input") -> dict[str, Any]:
    return {"stage": stage, "action": action, "policy": policy, "rule": rule, "findings": [],
            "fired": [], "elapsed_us": 3}  # fmt: skip


def _guard(*verdicts: dict[str, Any]) -> dict[str, Any]:
    return {"policies": ["pol@1"], "verdicts": list(verdicts)}


GATEWAY: list[dict[str, Any] | None] = [
    _guard(_v("allow")),
    _guard(_v("block", rule="pii.card")),
    _guard(_v("allow"), _v("redact", rule="pii.email", stage="output")),
    _guard(_v("monitor", rule="tone"), _v("escalate", rule="refund", stage="output")),
    _guard(_v("block", policy="", rule="")),  # no policy or rule: shown as "?"
    _guard(_v("redact", rule="pii.email"), _v("redact", rule="pii.email", stage="output")),
    _guard(_v(None, rule="odd")),  # an action of null is no trip
    _guard(_v(None, rule="odd"), _v("block", rule="pii.card")),  # ... even beside one
    None,  # no guard policy applied
]
"""Each owner's gateway calls' guard records, one call each (newest first)."""

RUN_STEPS: list[Any] = [
    _v("allow"),
    _v("block", rule="pii.card"),
    {**_v("redact", rule="pii.email"), "checked": 3, "policies": ["pol@1"],
     "items": [{"index": 1, "id": "1", **_v("redact", rule="pii.email")}]},  # check_many
    _v("escalate", rule="refund", stage="tool_call"),
    _v("monitor", rule="tone", stage="output"),
    {**_v("block", rule="big"), "padding": "x" * 20_000},  # stored in blobs
    "unsorted-allow",
    "unsorted-block",
    "erased-block",
]  # fmt: skip
"""Each owner's run's guard steps (``unsorted-*``: JSON with its keys in writing order, not
sorted as the journal writes them; ``erased-*``: erased after it is written)."""


@dataclass
class World:
    """The seeded database, everyone's principal and API key, and the app."""

    url: str
    people: dict[str, Principal]
    keys: dict[str, str]
    app: Any


def _output(step: Any) -> bytes:
    if step == "unsorted-allow":
        return orjson.dumps(_v("allow"))  # {"stage": ...}: not an "allow" prefix
    if step == "unsorted-block":
        return orjson.dumps(_v("block", rule="order"))
    if step == "erased-block":
        return encode(_v("block", rule="gone"))
    return encode(step)


async def _guard_run(db: Store, owner: Principal, queue: str) -> str:
    """A run of ``owner`` with a guard step per ``RUN_STEPS`` (one erased), and one step that
    is no guard check."""
    rid = await submit_run(db, "greet", {"name": "x"}, owner=owner, queue=queue)
    lease = await claim_run(db, "sql-test", [queue], 60)
    assert lease is not None and lease.run_id == rid
    prev, erased = lease.genesis_hash, None
    for n, step in enumerate([*RUN_STEPS, "model"]):
        kind = "model" if step == "model" else "guard"
        out = encode(_v("block", rule="not-a-guard")) if step == "model" else _output(step)
        event = await append_event(
            db, run_id=rid, n=n, step_id=f"s{n}", kind=kind, name=f"{kind}.x", status="ok",
            output=out, error=None, fence=lease.fence, prev_hash=prev,
        )  # fmt: skip
        prev = event.hash
        if step == "erased-block":
            erased = Erasure(rid, f"event:{n}", event.output_hash or "")
    assert erased is not None
    async with db.transaction() as tx:
        await erase(tx, db.dialect, [erased], kind="test.erase", subject=rid, actor="t", body={})
    return rid


async def _seed(url: str) -> tuple[dict[str, Principal], dict[str, str]]:
    db = await open_store(url)
    try:
        await migrate(db)
        keys = await add_people(
            db, [("red", False), ("blue", True)],
            [("root", None, ("admin",)), ("ann", "red", ("member",)), ("bob", "red", ("member",)),
             ("sam", "blue", ("member",)), ("tom", "blue", ("member",))],
        )  # fmt: skip
        people = {n: await principal_for_user(db, n, org="two" if n == "eve" else "default")
                  for n in PEOPLE}  # fmt: skip
        recorder = CallRecorder(db)
        at = NOW - 600
        for name in PEOPLE:
            who = people[name]
            for guard, when in [*((g, at - 37.0 * i) for i, g in enumerate(GATEWAY)),
                                (GATEWAY[1], NOW - 40 * 86400)]:  # fmt: skip
                recorder.record(CallRecord(
                    trace_id="t", route="default", stream=False, status="ok", tokens_in=1,
                    tokens_out=1, latency_ms=1.0, org_id=who.org_id, team_id=who.team_id,
                    user_id=who.user_id, guard=guard, created_at=when,
                ))  # fmt: skip
            at -= 600
        await recorder.flush()
        runs = {}
        for name in PEOPLE:
            runs[name] = await _guard_run(db, people[name], f"q-{name}")
        # Online scores (and a human judgement, which the summary leaves out).
        for i, name in enumerate(("ann", "bob", "sam", "tom", "eve")):
            rows = [ScorerRow(f"fb_{name}_{j}", score, label, None, None, rule=rule, scorer=sc)
                    for j, (score, label, rule, sc) in enumerate([
                        (1.0, "pass", "quality", "judge"), (0.0, "fail", "quality", "judge"),
                        (0.5, "error", "quality", "contains"), (0.25 * i, "pass", "tone", "judge"),
                    ])]  # fmt: skip
            await record_scores(db, runs[name], "scorer:x", rows)
        return people, keys
    finally:
        await db.close()


def make_world(url: str, data_dir: Path) -> World:
    """Seed ``url`` and build the app (not started: a ``TestClient`` runs its lifespan)."""
    people, keys = asyncio.run(_seed(url))
    settings = Settings(database_url=url, data_dir=data_dir, dev=False, in_process_worker=False)
    return World(url, people, keys, create_app(settings, parse_project(PROJECT)))


def python_trips(record: Any) -> list[tuple[str, str, str, str]]:
    """``(policy, rule, stage, action)`` of each verdict of a record that tripped, as the page
    decoded them before counting moved into SQL."""
    verdicts = record.get("verdicts") if isinstance(record, dict) else None
    items = verdicts if isinstance(verdicts, list) else [record]
    return [
        (str(v.get("policy") or "?"), str(v.get("rule") or "?"), str(v.get("stage") or "?"),
         str(v.get("action")))
        for v in items
        if isinstance(v, dict) and v.get("action") not in (None, "allow")
    ]  # fmt: skip


@dataclass
class Expected:
    checked: dict[str, int]
    tripped: dict[str, int]
    trips: Counter[tuple[str, str, str, str, str]]
    timeline: Counter[tuple[float, str]]


async def expected(db: Store, who: Principal, gateway_after: float, runs_after: float) -> Expected:
    """What the page should count, read row by row: gateway calls created after
    ``gateway_after``, and the guard steps of runs started after ``runs_after``."""
    width = qg.bucket_seconds(SPAN)
    checked, tripped = {"gateway": 0, "runs": 0}, {"gateway": 0, "runs": 0}
    trips: Counter[tuple[str, str, str, str, str]] = Counter()
    timeline: Counter[tuple[float, str]] = Counter()
    scope, params = who.scope("c")
    calls = await db.fetchall(
        f"SELECT c.created_at, c.guard FROM model_calls c WHERE {scope} AND c.guard IS NOT NULL"
        " AND c.created_at >= ? AND c.created_at > ? AND c.created_at < ?",
        (*params, SPAN.since, gateway_after, SPAN.until),
    )
    scope, params = who.scope("r")
    steps = await db.fetchall(
        "SELECT j.created_at, COALESCE(j.output, b.content) FROM runs r"
        " JOIN journal j ON j.run_id = r.id LEFT JOIN blobs b ON b.hash = j.output_hash"
        f" WHERE {scope} AND j.kind = 'guard' AND r.created_at >= ? AND r.created_at > ?"
        " AND r.created_at < ? AND j.created_at >= ? AND j.created_at < ?",
        (*params, SPAN.since, runs_after, SPAN.until, SPAN.since, SPAN.until),
    )
    for source, rows in (("gateway", calls), ("runs", steps)):
        for at, raw in rows:
            checked[source] += 1
            found = python_trips(orjson.loads(bytes(raw) if not isinstance(raw, str) else raw)
                                  if raw is not None else None)  # fmt: skip
            tripped[source] += bool(found)
            for policy, rule, stage, action in found:
                trips[(source, policy, rule, stage, action)] += 1
                timeline[(math.floor(float(at) / width) * width, f"{policy} {rule}")] += 1
    return Expected(checked, tripped, trips, timeline)


def counted(rates: qg.GuardRates) -> Expected:
    trips = Counter({(r.source, r.policy, r.rule, r.stage, r.action): r.trips for r in rates.rates})
    timeline: Counter[tuple[float, str]] = Counter()
    for at, rule, n in rates.timeline:
        timeline[(at, rule)] += n
    return Expected(rates.checked, rates.tripped, trips, timeline)
