"""What the quality page shows about evals and feedback, as plain data.

- Eval pass rates over time: the stored results (``eval_results``, m023) finished in the
  range, newest 2,000, a line per suite.
- The latest result of each suite against the one before it (its baseline): pass rate, and
  the cases that regressed, judged as ``evals.compare`` judges them (a case that passed and now
  fails; a case that still passes with a lower pass rate) from the per-case rows
  (``eval_case_results``), without loading either result's JSON.
- Feedback on runs in the range: the newest few and the mean score per source and label (an
  organisation's from the covering index ``run_feedback_quality``, m030; a member's from
  m032's by the run's owner, ``runtime._feedback_scope``).
- Online evaluation: ``evals._online_summary`` totals per rule and scorer (``/v1/evals/online``).

Every query carries the principal's scope on the rows it reads (results and runs, as the JSON
API does); each is one statement over an indexed time range, bounded by a ``LIMIT``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from elevenfactor.evals import CaseStats
from elevenfactor.evals._online_summary import OnlineRow, online_summary
from elevenfactor.governance import Principal
from elevenfactor.runtime._feedback_scope import scoped_feedback
from elevenfactor.server.ui._charts import Chart, PointSeries, lines
from elevenfactor.server.ui._ranges import TimeRange
from elevenfactor.store import Store

__all__ = [
    "MAX_POINTS",
    "CaseRegression",
    "FeedbackAverage",
    "FeedbackItem",
    "SuiteLatest",
    "eval_chart",
    "feedback_averages",
    "latest_by_suite",
    "online_totals",
    "recent_feedback",
]

MAX_POINTS = 500
"""Eval results drawn at most (the newest)."""
MAX_SUITES = 100
"""Suites listed at most in the results table."""
MAX_LINES = 8
"""Suites drawn at most (the most recently run); the table lists every suite."""
_EPS = 1e-9


def _percent(value: float) -> str:
    return f"{value * 100:.0f}%"


async def eval_chart(
    store: Store,
    principal: Principal,
    span: TimeRange,
    suite: str | None,
    limit: int = MAX_POINTS,
) -> tuple[Chart, int]:
    """The pass rate of each suite's results in ``span`` (a line per suite, the most recently
    run first), and how many results there were (the newest ``limit`` at most)."""
    scope, params = principal.scope()
    where = f"{scope} AND finished_at >= ? AND finished_at < ?"
    args: list[Any] = [*params, span.since, span.until]
    if suite is not None:
        where += " AND suite = ?"
        args.append(suite)
    rows = await store.fetchall(
        "SELECT suite, pass_rate, status, finished_at, id FROM eval_results"
        f" WHERE {where} ORDER BY finished_at DESC, id DESC LIMIT ?",
        (*args, min(limit, MAX_POINTS)),
    )
    by_suite: dict[str, list[tuple[float, float, str]]] = {}
    for name, rate, status, finished, ident in rows:
        by_suite.setdefault(str(name), []).append(
            (float(finished), float(rate), f"{status}, {ident}")
        )
    series = [
        PointSeries(name, tuple((t, r) for t, r, _ in reversed(points)),
                    tuple(n for _, _, n in reversed(points)))
        for name, points in list(by_suite.items())[:MAX_LINES]
    ]  # fmt: skip
    chart = lines(
        "Eval pass rate over time",
        series,
        since=span.since,
        until=span.until,
        fmt=_percent,
        y_max=1.0,
    )
    return chart, len(rows)


@dataclass(frozen=True, slots=True)
class CaseRegression:
    """A case of the latest result that did worse than in the baseline."""

    case_id: str
    kind: str
    before: float
    after: float


@dataclass(frozen=True, slots=True)
class SuiteLatest:
    """A suite's latest result in the range, its baseline (the result before it, if any) and
    the cases that regressed between the two."""

    suite: str
    id: str
    status: str
    pass_rate: float
    cases: int
    cases_passed: int
    finished_at: float
    baseline_id: str | None
    baseline_rate: float | None
    regressions: tuple[CaseRegression, ...]

    @property
    def change(self) -> float | None:
        """The pass rate's change against the baseline."""
        return None if self.baseline_rate is None else self.pass_rate - self.baseline_rate


def _regressions(
    before: dict[str, CaseStats], after: dict[str, CaseStats]
) -> tuple[CaseRegression, ...]:
    out = []
    for case_id, now in sorted(after.items()):
        then = before.get(case_id)
        if then is None or then.runs == 0:
            continue
        if then.passed and not now.passed:
            out.append(CaseRegression(case_id, "now failing", then.pass_rate, now.pass_rate))
        elif now.passed and then.pass_rate - now.pass_rate > _EPS:
            out.append(CaseRegression(case_id, "pass rate dropped", then.pass_rate, now.pass_rate))
    return tuple(out)


async def latest_by_suite(
    store: Store, principal: Principal, span: TimeRange, suite: str | None
) -> list[SuiteLatest]:
    """Each suite's latest result finished in ``span`` with its baseline and regressions,
    the most recently run suite first (at most ``MAX_SUITES``)."""
    scope, params = principal.scope()
    where = f"{scope} AND finished_at < ?"
    args: list[Any] = [*params, span.until]
    if suite is not None:
        where += " AND suite = ?"
        args.append(suite)
    rows = await store.fetchall(
        "SELECT suite, id, status, pass_rate, cases, cases_passed, finished_at, rn FROM ("
        " SELECT suite, id, status, pass_rate, cases, cases_passed, finished_at,"
        " ROW_NUMBER() OVER (PARTITION BY suite ORDER BY finished_at DESC, id DESC) AS rn"
        f" FROM eval_results WHERE {where}) t WHERE rn <= 2 ORDER BY suite, rn",
        args,
    )
    latest: dict[str, Sequence[Any]] = {}
    baseline: dict[str, Sequence[Any]] = {}
    for r in rows:
        (latest if int(r[7]) == 1 else baseline)[str(r[0])] = r
    shown = sorted(
        (r for r in latest.values() if float(r[6]) >= span.since),
        key=lambda r: (-float(r[6]), str(r[0])),
    )[:MAX_SUITES]
    ids = [str(r[1]) for r in shown] + [str(baseline[str(r[0])][1]) for r in shown
                                        if str(r[0]) in baseline]  # fmt: skip
    cases = await _case_stats(store, ids)
    out = []
    for top in shown:
        name, base = str(top[0]), baseline.get(str(top[0]))
        base_id = str(base[1]) if base is not None else None
        found = _regressions(cases.get(base_id or "", {}), cases.get(str(top[1]), {}))
        out.append(SuiteLatest(
            name, str(top[1]), str(top[2]), float(top[3]), int(top[4]), int(top[5]),
            float(top[6]), base_id, float(base[3]) if base is not None else None, found,
        ))  # fmt: skip
    return out


async def _case_stats(store: Store, ids: list[str]) -> dict[str, dict[str, CaseStats]]:
    """The per-case rows of the results ``ids`` (already checked against the principal's
    scope), in one query per 500 ids."""
    out: dict[str, dict[str, CaseStats]] = {}
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        marks = ", ".join("?" for _ in chunk)
        rows = await store.fetchall(
            "SELECT result_id, case_id, runs, passes, threshold FROM eval_case_results"
            f" WHERE result_id IN ({marks})",
            chunk,
        )
        for result_id, case_id, runs, passes, threshold in rows:
            stats = CaseStats(str(case_id), int(runs), int(passes), float(threshold))
            out.setdefault(str(result_id), {})[str(case_id)] = stats
    return out


@dataclass(frozen=True, slots=True)
class FeedbackItem:
    """One judgement of a run, with the name of who gave it when it is a user."""

    id: str
    run_id: str
    score: float | None
    label: str | None
    comment: str | None
    source: str
    created_at: float
    by: str


@dataclass(frozen=True, slots=True)
class FeedbackAverage:
    """Feedback of one source and label: how many, how many with a score, the mean score."""

    source: str
    label: str | None
    count: int
    scored: int
    mean: float | None


_ITEM = ("id", "run_id", "score", "label", "comment", "source", "created_at", "user_id")
_FIGURE = ("source", "label", "score")
_IN_SPAN = "f.created_at >= ? AND f.created_at < ?"


async def recent_feedback(
    store: Store, principal: Principal, span: TimeRange, limit: int = 50
) -> list[FeedbackItem]:
    """The newest feedback in ``span`` on the runs ``principal`` may read."""
    newest = " ORDER BY f.created_at DESC, f.id DESC LIMIT ?"
    source, where, args = scoped_feedback(
        principal, _ITEM, _IN_SPAN, [span.since, span.until], each=newest, each_params=[limit]
    )
    rows = await store.fetchall(
        "SELECT f.id, f.run_id, f.score, f.label, f.comment, f.source, f.created_at,"
        f" COALESCE(u.name, f.user_id) FROM {source}"
        f" LEFT JOIN users u ON u.id = f.user_id WHERE {where}{newest}",
        (*args, limit),
    )
    return [
        FeedbackItem(str(r[0]), str(r[1]), None if r[2] is None else float(r[2]), r[3], r[4],
                     str(r[5]), float(r[6]), str(r[7]))
        for r in rows
    ]  # fmt: skip


async def feedback_averages(
    store: Store, principal: Principal, span: TimeRange, limit: int = 30
) -> list[FeedbackAverage]:
    """Per source and label (the most frequent ``limit``), the feedback in ``span`` on the
    runs ``principal`` may read: count, scored, mean score."""
    source, where, args = scoped_feedback(principal, _FIGURE, _IN_SPAN, [span.since, span.until])
    rows = await store.fetchall(
        "SELECT f.source, f.label, COUNT(*), COUNT(f.score), AVG(f.score)"
        f" FROM {source} WHERE {where}"
        " GROUP BY f.source, f.label ORDER BY 3 DESC, 1, 2 LIMIT ?",
        (*args, limit),
    )
    return [
        FeedbackAverage(str(r[0]), r[1], int(r[2]), int(r[3]),
                        None if r[4] is None else float(r[4]))
        for r in rows
    ]  # fmt: skip


async def online_totals(store: Store, principal: Principal, span: TimeRange) -> list[OnlineRow]:
    """Online evaluation scores in ``span`` per rule and scorer (``GET /v1/evals/online``)."""
    summary = await online_summary(
        store, principal, since=span.since, until=span.until, bucket=None
    )
    return summary.totals
