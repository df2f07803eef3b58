"""Eval results in the store (``eval_results``, ``eval_case_results``: migration
m023_eval_results), for ``eval list``/``show``/``history`` and trend charts.

A result is written once, by its eval run's ``results`` step (an insert that does nothing if
the row exists, so a step re-run after a crash writes nothing twice). Reading takes the
principal: results are seen under the rules of runs (``Principal.scope``: its own, its team's
where the team shares, its organisation's for an admin); another's is ``EvalNotFound``-like
``RequestError`` ``eval_not_found`` (404), the same answer as a missing one.

When a case ran as a child run (an agent or workflow target), each of its scores is also a
``run_feedback`` row of that run with ``source='offline'`` (label: the scorer's name, score:
its value, metadata: the eval run, suite, case, repeat, passed and reason, and the child
run's owner, m032), so one query reads every score of a run; each with its ledger entry, as
feedback given by hand.
"""

from __future__ import annotations

import hashlib
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from elevenfactor.errors import RequestError
from elevenfactor.evals._results import SuiteResult
from elevenfactor.governance import Principal, append_entry, canonical, local_admin
from elevenfactor.store import Executor, Store

__all__ = ["EvalRecord", "get_result", "list_results", "save_result", "suite_history"]

_COLUMNS = (
    "id, run_id, suite, suite_version, target, model, prompt, release_label, status, error,"
    " passed, cases, cases_passed, cases_failed, pass_rate, cost_usd, tokens, duration_ms,"
    " started_at, finished_at, org_id, user_id"
)
_LABEL_BAD = re.compile(r"[^A-Za-z0-9._-]")
_RUN_OWNER = (
    "(SELECT user_id FROM runs WHERE id = ? AND org_id = ?),"
    " (SELECT team_id FROM runs WHERE id = ? AND org_id = ?)"
)
"""A child run's owner (``run_user_id``, ``run_team_id``, m032) for its offline scores, if it
is in the row's organisation (parameters: run id, organisation, twice)."""


@dataclass(frozen=True, slots=True)
class EvalRecord:
    """One stored eval result (``result`` only when asked for)."""

    id: str
    run_id: str
    suite: str
    suite_version: str
    target: str
    model: str | None
    prompt: str | None
    release: str | None
    status: str
    error: str | None
    passed: bool
    cases: int
    cases_passed: int
    cases_failed: int
    pass_rate: float
    cost_usd: float | None
    tokens: int
    duration_ms: float | None
    started_at: float
    finished_at: float
    org_id: str
    user_id: str | None
    result: SuiteResult | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the whole ``SuiteResult`` under ``result`` when loaded)."""
        out = {
            "id": self.id,
            "object": "eval.result",
            "run_id": self.run_id,
            "suite": self.suite,
            "suite_version": self.suite_version,
            "target": self.target,
            "model": self.model,
            "prompt": self.prompt,
            "release": self.release,
            "status": self.status,
            "error": self.error,
            "passed": self.passed,
            "cases": self.cases,
            "cases_passed": self.cases_passed,
            "cases_failed": self.cases_failed,
            "pass_rate": self.pass_rate,
            "cost_usd": self.cost_usd,
            "tokens": self.tokens,
            "duration_ms": self.duration_ms,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "owner": {"org_id": self.org_id, "user_id": self.user_id},
        }
        if self.result is not None:
            out["result"] = self.result.to_dict()
        return out


def _record(row: Any, result: Any = None) -> EvalRecord:
    v = list(row)
    parsed = SuiteResult.from_dict(orjson.loads(result)) if result is not None else None
    return EvalRecord(
        id=v[0], run_id=v[1], suite=v[2], suite_version=v[3], target=v[4], model=v[5],
        prompt=v[6], release=v[7], status=v[8], error=v[9], passed=bool(v[10]),
        cases=int(v[11]), cases_passed=int(v[12]), cases_failed=int(v[13]),
        pass_rate=float(v[14]), cost_usd=float(v[15]) if v[15] is not None else None,
        tokens=int(v[16]), duration_ms=float(v[17]) if v[17] is not None else None,
        started_at=float(v[18]), finished_at=float(v[19]), org_id=v[20], user_id=v[21],
        result=parsed,
    )  # fmt: skip


async def _feedback(
    tx: Executor,
    who: Principal,
    run_id: str,
    case: Mapping[str, Any],
    eval_run: str,
    suite: str,
    now: float,
) -> None:
    for score in case.get("scores", []):
        label = _LABEL_BAD.sub("_", str(score["name"]))[:64] or "score"
        if not label[0].isalnum():
            label = "s" + label[:63]
        meta = {
            "eval_run": eval_run,
            "suite": suite,
            "case": case["case_id"],
            "repeat": case["repeat"],
            "passed": bool(score["passed"]),
            "reason": str(score.get("reason", ""))[:500],
        }
        fid = "fb_" + uuid.uuid4().hex
        value = float(score["value"])
        org_id, _, user_id, key_id = who.owner()
        await tx.execute(
            "INSERT INTO run_feedback (id, run_id, org_id, user_id, key_id, score, label,"
            " comment, metadata, source, created_at, run_user_id, run_team_id)"
            f" VALUES (?, ?, ?, ?, ?, ?, ?, NULL, ?, 'offline', ?, {_RUN_OWNER})",
            (fid, run_id, org_id, user_id, key_id, value, label, orjson.dumps(meta).decode(), now,
             run_id, org_id, run_id, org_id),
        )  # fmt: skip
        digest = hashlib.sha256(canonical([value, label, None, meta, "offline"]).encode())
        await append_entry(
            tx,
            "run.feedback",
            fid,
            who.actor(),
            {"run_id": run_id, "source": "offline", "content_hash": digest.hexdigest()},
        )


async def save_result(
    store: Store,
    owner: Principal | None,
    result: SuiteResult,
    *,
    tokens: int = 0,
    error: str | None = None,
    children: Mapping[str, tuple[str, int]] | None = None,
) -> dict[str, Any]:
    """Store ``result`` (its metadata names the run, target, overrides and times) once, with
    its per-case rows and, for ``children`` (child run id → case id and repeat), the child
    runs' scores as offline feedback; return the summary row as a dict."""
    who = owner or local_admin("system")
    meta = result.metadata
    run_id = str(meta["run_id"])
    stats = result.cases()
    started, finished = float(meta["started_at"]), float(meta["finished_at"])
    priced = [r.cost_usd for r in result.results if r.cost_usd is not None]
    cost = sum(priced) if priced else None
    status = "error" if error is not None else "passed" if result.passed else "failed"
    passed_n = sum(1 for s in stats if s.passed)
    org_id, team_id, user_id, key_id = who.owner()
    now = time.time()
    async with store.transaction() as tx:
        inserted = await tx.execute(
            f"INSERT INTO eval_results ({_COLUMNS.replace(', org_id, user_id', '')},"
            " org_id, team_id, user_id, key_id, result)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?,"
            " ?) ON CONFLICT (id) DO NOTHING",
            (
                run_id, run_id, result.suite_id, result.suite_version, str(meta.get("target")),
                meta.get("model"), meta.get("prompt"), meta.get("release"), status, error,
                int(status == "passed"), len(stats), passed_n, len(stats) - passed_n,
                result.pass_rate, cost, tokens, (finished - started) * 1000.0, started,
                finished, org_id, team_id, user_id, key_id,
                orjson.dumps(result.to_dict()).decode(),
            ),
        )  # fmt: skip
        if inserted == 1:
            for s in stats:
                mine = [r for r in result.results if r.case_id == s.case_id]
                costs = [r.cost_usd for r in mine if r.cost_usd is not None]
                lats = [r.latency_ms for r in mine if r.latency_ms is not None]
                await tx.execute(
                    "INSERT INTO eval_case_results (result_id, case_id, org_id, suite, runs,"
                    " passes, pass_rate, threshold, passed, cost_usd, latency_ms, finished_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        run_id, s.case_id, org_id, result.suite_id, s.runs, s.passes,
                        s.pass_rate, s.threshold, int(s.passed),
                        sum(costs) if costs else None,
                        sum(lats) / len(lats) if lats else None, finished,
                    ),
                )  # fmt: skip
            by_case = {(r.case_id, r.repeat): r.to_dict() for r in result.results}
            for child, (case_id, repeat) in (children or {}).items():
                case = by_case.get((case_id, int(repeat)))
                if case is not None:
                    await _feedback(tx, who, child, case, run_id, result.suite_id, now)
    return {
        "id": run_id,
        "suite": result.suite_id,
        "suite_version": result.suite_version,
        "status": status,
        "passed": status == "passed",
        "pass_rate": result.pass_rate,
        "cases": len(stats),
        "cases_passed": passed_n,
        "cases_failed": len(stats) - passed_n,
        "cost_usd": cost,
        "tokens": tokens,
    }


async def get_result(store: Store, principal: Principal, result_id: str) -> EvalRecord:
    """The stored result ``result_id`` (an eval run's id) if ``principal`` may see it."""
    scope, params = principal.scope()
    row = await store.fetchone(
        f"SELECT {_COLUMNS}, result FROM eval_results WHERE id = ? AND {scope}",
        (result_id, *params),
    )
    if row is None:
        raise RequestError(
            f"no eval result {result_id!r}",
            code="eval_not_found",
            status=404,
            hint="`elevenfactor eval list`",
        )
    return _record(row[:-1], row[-1])


async def list_results(
    store: Store,
    principal: Principal,
    *,
    suite: str | None = None,
    limit: int = 50,
    before: str | None = None,
) -> list[EvalRecord]:
    """The results ``principal`` may see, newest first, optionally of one suite; with
    ``before`` (the id of a result it may see: the last of the previous page) only older ones,
    else ``invalid_value`` (400) naming ``before``."""
    if not 1 <= limit <= 1000:
        raise RequestError("'limit' must be 1-1000", code="invalid_value", param="limit")
    scope, params = principal.scope()
    where, args = scope, [*params]
    if suite:
        where += " AND suite = ?"
        args.append(suite)
    if before is not None:
        cursor = await store.fetchone(
            f"SELECT finished_at, id FROM eval_results WHERE id = ? AND {scope}",
            (before, *params),
        )
        if cursor is None:
            raise RequestError(
                f"'before': no eval result {before!r}",
                code="invalid_value",
                param="before",
                hint="pass the id of the last result of the previous page",
            )
        where += " AND (finished_at < ? OR (finished_at = ? AND id < ?))"
        args += [cursor[0], cursor[0], cursor[1]]
    rows = await store.fetchall(
        f"SELECT {_COLUMNS} FROM eval_results WHERE {where}"
        " ORDER BY finished_at DESC, id DESC LIMIT ?",
        (*args, limit),
    )
    return [_record(r) for r in rows]


async def suite_history(
    store: Store, principal: Principal, suite: str, *, limit: int = 50
) -> list[EvalRecord]:
    """The results of ``suite`` ``principal`` may see, oldest first (the last ``limit``)."""
    return list(reversed(await list_results(store, principal, suite=suite, limit=limit)))
