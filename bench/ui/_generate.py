"""Fill a fresh SQLite file: migrate it, make the people with the project's functions, then
generate runs (with their journals, approvals, calls and children), eval runs and results,
gateway calls, feedback and budget usage in bulk, and seal the ledger."""

from __future__ import annotations

import random
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.ui._calls_gen import gateway_calls
from bench.ui._extras_gen import SUITES, breakers, budget_usage, eval_result, feedback
from bench.ui._ledger import LedgerWriter, seal_all
from bench.ui._migrate import defer_new_migrations
from bench.ui._people import Cast, make_people
from bench.ui._plan import AGENTS, RARE_TAG, SEED, TAGS, WORKFLOWS, SeedPlan
from bench.ui._runs_gen import RunFactory, RunSpec
from bench.ui._sink import SqliteSink
from elevenfactor.store import migrate, open_store

__all__ = ["generate"]

_DAY = 86400.0
_DECISIONS = ("approve",) * 11 + ("reject",) * 3 + ("edit", "answer", "timeout") * 2
_TURNS = (1,) * 8 + (2,) * 7 + (3,) * 3 + (4,) * 2
LONG_TURNS = 7
"""The turns of the run the run page is measured on: 4 + 7 * 4 + 6 * 3 + 1 = 51 events."""


async def _people(path: Path) -> tuple[Cast, list[tuple[str, str, str, float]], int]:
    store = await open_store(f"sqlite:///{path}")
    try:
        await defer_new_migrations(store)  # the harness runs them as they are then
        await migrate(store)
        cast = await make_people(store)
        rows = await store.fetchall("SELECT id, org_id, time_window, limit_usd FROM budgets")
        seq = await store.fetchone("SELECT COALESCE(MAX(seq), 0) FROM ledger")
    finally:
        await store.close()
    budgets = [(str(r[0]), str(r[1]), str(r[2]), float(r[3])) for r in rows]
    return cast, budgets, int(seq[0]) if seq else 0


class _Specs:
    """Draws the top-level runs: program, owner, status, tags and shape."""

    def __init__(self, rng: random.Random, cast: Cast) -> None:
        self.rng = rng
        self.members = list(cast.members.values())
        self.weights = [m.person.weight for m in self.members]
        self.programs = {**AGENTS, **WORKFLOWS}

    def draw(self, at: float) -> RunSpec:
        rng = self.rng
        program = rng.choices(list(self.programs), list(self.programs.values()))[0]
        member = rng.choices(self.members, self.weights)[0]
        tags = [t for t, share in TAGS.items() if rng.random() < share]
        if rng.random() < 0.003:
            tags.append(RARE_TAG)
        kind = "agent" if program in AGENTS else "workflow"
        spec = RunSpec(program, kind, member, at, "succeeded", tags)
        roll = rng.random()
        if roll < 0.08:
            spec.status = "failed"
        elif roll < 0.115:
            spec.status = "cancelled"
        if kind == "agent":
            spec.turns = rng.choice(_TURNS)
            if program == "support" and rng.random() < 0.5:
                spec.session_id = f"sess-{member.person.name}-{rng.randrange(400)}"
            if spec.status == "cancelled" and spec.turns >= 2 and rng.random() < 0.5:
                spec.approval = "cancel"
            elif spec.turns >= 2 and spec.status != "cancelled" and rng.random() < 0.07:
                spec.approval = rng.choice(_DECISIONS)
            elif program == "research" and spec.turns >= 2 and rng.random() < 0.3:
                spec.child = "summarizer"
        elif program == "nightly-report" and rng.random() < 0.4:
            spec.child = "ingest"
        return spec


def _mark(specs: list[RunSpec], plan: SeedPlan, anchor: float, rng: random.Random) -> int:
    """Make ``plan.pending_approvals`` recent agent runs wait on an approval, and the newest
    ``research`` run of ``mia`` (a day old or more) the long one; its index."""
    recent = [
        i for i, s in enumerate(specs)
        if s.kind == "agent" and s.status == "succeeded" and s.created_at > anchor - 3 * _DAY
        and s.created_at < anchor - 600
    ]  # fmt: skip
    for i in rng.sample(recent, min(plan.pending_approvals, len(recent))):
        s = specs[i]
        s.status, s.approval, s.child, s.turns = "waiting", "pending", None, max(2, s.turns)
    long_at = next(
        i for i in range(len(specs) - 1, -1, -1)
        if specs[i].member.person.name == "mia" and specs[i].status == "succeeded"
        and specs[i].created_at < anchor - _DAY
    )  # fmt: skip
    s = specs[long_at]
    s.program, s.kind, s.turns, s.approval, s.child = "research", "agent", LONG_TURNS, None, None
    s.session_id = None
    return long_at


async def generate(
    path: Path, plan: SeedPlan, progress: Callable[[str, float], None]
) -> dict[str, Any]:
    """Seed ``path`` (a new file) with ``plan``; what the bench needs to know about it."""
    started = time.perf_counter()
    rng = random.Random(SEED)
    cast, budgets, seq = await _people(path)
    anchor = time.time()
    start = anchor - plan.days * _DAY
    sink = SqliteSink(path)
    ledger = LedgerWriter(sink, seq)
    factory = RunFactory(rng, sink, ledger, cast)
    draw = _Specs(rng, cast)
    top = int((plan.runs - plan.eval_results) / 1.035)
    times = sorted(rng.uniform(start, anchor - 120) for _ in range(top))
    specs = [draw.draw(at) for at in times]
    for k, spec in enumerate(specs[-max(2, top // 250) :]):  # the newest: not started or running
        spec.status, spec.approval, spec.child = ("running", "queued")[k % 2], None, None
    long_at = _mark(specs, plan, anchor, rng)
    judged: list[tuple[str, str, float]] = []
    suites = list(SUITES)
    evals_every = max(1, top // plan.eval_results)
    svc = cast.members["svc-ci"]
    long_run = ""
    for i, spec in enumerate(specs):
        rid, end, _ = factory.emit(spec)
        if i == long_at:
            long_run = rid
        if spec.kind == "agent" and spec.status == "succeeded" and len(judged) < 50_000:
            judged.append((rid, spec.member.principal.org_id, end))
        if i % evals_every == 0 and i // evals_every < plan.eval_results:
            suite = suites[(i // evals_every) % len(suites)]
            cases = SUITES[suite][2]
            ev = RunSpec("elevenfactor.eval", "eval", svc, spec.created_at, "succeeded",
                         ["eval"], suite=suite, cases=cases)  # fmt: skip
            erid, eend, _ = factory.emit(ev)
            regressed = suite == "refund-policy" and spec.created_at > anchor - 3 * _DAY
            eval_result(rng, sink, erid, suite, svc, spec.created_at, eend, regressed)
        if i % 5000 == 0:
            progress("runs", i / len(specs))
    progress("runs", 1.0)
    run_calls = sink.counts["model_calls"] + len(sink.buffers["model_calls"])
    members = list(cast.members.values())
    gateway = max(0, plan.calls - run_calls)
    gateway_calls(rng, sink, members, [m.person.weight for m in members], gateway, start, anchor)
    progress("calls", 1.0)
    feedback(rng, sink, ledger, cast, judged, plan.feedback)
    budget_usage(rng, sink, budgets, anchor, plan.days)
    breakers(sink, anchor)
    counts = sink.close()
    conn = sqlite3.connect(path, isolation_level=None)
    blocks = seal_all(conn)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    pending = conn.execute(
        "SELECT id FROM approvals WHERE status = 'pending' AND org_id = 'org_default'"
        " ORDER BY created_at LIMIT 1"
    ).fetchone()
    conn.close()
    progress("sealed", 1.0)
    return {
        "anchor": anchor,
        "seconds": time.perf_counter() - started,
        "counts": {**counts, "ledger_blocks": blocks, "runs": factory.runs},
        "secrets": cast.secrets(),
        "admin": "ada",
        "member": "mia",
        "long_run": long_run,
        "pending_approval": pending[0] if pending else None,
    }
