"""What the Cost, Quality and Health pages read besides runs and calls: eval results over time
(real ``SuiteResult`` objects, stored as ``save_result`` stores them), feedback (human and
online, with their ledger entries), budget usage per window with reservations in flight, and
agent circuit breakers."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence

import orjson

from bench.ui._ledger import LedgerWriter
from bench.ui._people import Cast, Member
from bench.ui._sink import SqliteSink
from elevenfactor.evals._results import CaseResult, Score, SuiteResult
from elevenfactor.governance import canonical
from elevenfactor.governance._gate_ops import windows_json
from elevenfactor.governance._windows import window_key

__all__ = ["SUITES", "breakers", "budget_usage", "eval_result", "feedback"]

SUITES = {
    # suite: (target, base pass rate, cases)
    "support-answers": ("agent:support", 0.92, 12),
    "triage-routing": ("agent:triage", 0.85, 10),
    "refund-policy": ("agent:support", 0.95, 8),
    "code-review": ("agent:coder", 0.70, 15),
    "summaries": ("agent:summarizer", 0.88, 6),
}


def eval_result(
    rng: random.Random,
    sink: SqliteSink,
    run_id: str,
    suite: str,
    member: Member,
    started: float,
    finished: float,
    regressed: bool,
) -> None:
    """The result of one eval run (``run_id``) of ``suite``, as ``save_result`` stores it."""
    target, base, cases = SUITES[suite]
    rate = max(0.0, min(1.0, base - (0.35 if regressed else 0.0) + rng.uniform(-0.08, 0.05)))
    results = []
    for c in range(cases):
        for repeat in range(2):
            ok = rng.random() < rate
            score = Score("correct", ok, 1.0 if ok else rng.uniform(0, 0.5), "checked")
            results.append(
                CaseResult(f"case-{c}", repeat, (score,), "answer text", rng.uniform(0.001, 0.02),
                           rng.uniform(300, 4000))
            )  # fmt: skip
    meta = {"run_id": run_id, "target": target, "model": None, "prompt": None, "release": None,
            "started_at": started, "finished_at": finished}  # fmt: skip
    thresholds = {f"case-{c}": 0.5 for c in range(cases)}
    result = SuiteResult(suite, "5e1f0c2a9b7d", results, thresholds, meta)
    stats = result.cases()
    passed_n = sum(1 for s in stats if s.passed)
    cost = sum(r.cost_usd or 0.0 for r in results)
    status = "passed" if result.passed else "failed"
    org, team, user, key = member.owner
    sink.add(
        "eval_results",
        (run_id, run_id, org, team, user, key, suite, "5e1f0c2a9b7d", target, None, None, None,
         status, None, int(status == "passed"), len(stats), passed_n, len(stats) - passed_n,
         result.pass_rate, cost, rng.randrange(5_000, 80_000), (finished - started) * 1000.0,
         started, finished, orjson.dumps(result.to_dict()).decode()),
    )  # fmt: skip
    for s in stats:
        sink.add(
            "eval_case_results",
            (run_id, s.case_id, org, suite, s.runs, s.passes, s.pass_rate, s.threshold,
             int(s.passed), 0.01, 1200.0, finished),
        )  # fmt: skip


def feedback(
    rng: random.Random,
    sink: SqliteSink,
    ledger: LedgerWriter,
    cast: Cast,
    runs: Sequence[tuple[str, str, float]],
    count: int,
) -> None:
    """``count`` judgements of ``runs`` (id, org, settled at): human ones by the org's users,
    online ones by scoring rules, each with its ``run.feedback`` ledger entry."""
    for _ in range(count):
        run_id, org, at = rng.choice(runs)
        fid = f"fb_{rng.getrandbits(128):032x}"
        at += rng.uniform(5, 3600)
        if rng.random() < 0.3:
            who = rng.choice(cast.of_org(org))
            score = rng.choice((0.0, 1.0, 1.0, 1.0, 0.5))
            label = "thumbs_up" if score >= 0.5 else "thumbs_down"
            comment = rng.choice((None, "great answer", "wrong order number", "too long"))
            source, rule, scorer = "human", None, None
            _, _, user, key = who.owner
            actor = who.actor
        else:
            score = round(rng.betavariate(8, 2), 3)
            label, comment, source = "relevance", None, "online"
            rule, scorer = rng.choice((("relevance", "judge"), ("toxicity", "classifier")))
            user, key = "system", None
            actor = {"org_id": org, "user_id": user, "user": user, "key_id": None, "via": "system"}
        sink.add(
            "run_feedback",
            (fid, run_id, org, user, key, score, label, comment, None, source, at, rule, scorer),
        )
        digest = hashlib.sha256(canonical([score, label, comment, None, source]).encode())
        ledger.add(
            "run.feedback", fid, actor,
            {"run_id": run_id, "source": source, "content_hash": digest.hexdigest()}, at,
        )  # fmt: skip


def budget_usage(
    rng: random.Random, sink: SqliteSink, budgets: Sequence[tuple[str, str, str, float]],
    anchor: float, days: int,
) -> None:  # fmt: skip
    """Spend per window of each budget (id, org, window, limit) over the seeded days (and a few
    days ahead, so a cached store still has current windows), and holds in flight."""
    for budget_id, org, window, limit in budgets:
        if window == "run":
            continue
        keys: dict[str, float] = {}
        for d in range(-days, 4):
            key = window_key(window, anchor + d * 86400.0)
            if key is not None:
                keys[key] = keys.get(key, 0.0)
        for key in keys:
            share = rng.uniform(0.2, 0.95) if window != "total" else rng.uniform(0.3, 0.6)
            reserved = round(rng.uniform(0.0, 0.05) * limit, 4)
            sink.add("budget_usage", (budget_id, key, round(share * limit, 4), reserved))
        current = [(budget_id, k) for k in keys][-4:]
        for _ in range(rng.randrange(2, 6)):
            hold = f"hold_{rng.getrandbits(64):016x}"
            created = anchor - rng.uniform(1, 60)
            sink.add(
                "budget_holds",
                (hold, org, round(rng.uniform(0.01, 0.5), 4), windows_json(current), "[]",
                 "held", None, created, anchor + 30 * 86400.0, None, None),
            )  # fmt: skip


def breakers(sink: SqliteSink, anchor: float) -> None:
    """Two agents' circuit breakers: one closed, one paused (tripped an hour ago)."""
    config = orjson.dumps({"window": 3600, "min_runs": 20, "max_error_rate": 0.5}).decode()
    for agent, state, reason in (
        ("support", "closed", None),
        ("coder", "paused", "error rate 0.62 over the last 3600 s (34 runs)"),
    ):
        tripped = anchor - 3600 if state == "paused" else None
        sink.add(
            "agent_breakers",
            ("org_default", agent, state, reason, tripped, None, None, None, 3600.0, 20, 0.5,
             None, "default@3f2a1b9c", config, anchor - 60),
        )  # fmt: skip
