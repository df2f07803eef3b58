"""How online evaluation scores trend: per rule and scorer, and per time bucket (UTC), the runs
scored, how many scores passed, failed or erred, the pass rate and the mean score.

The pass rate and the mean are over the scores a scorer gave (``pass`` and ``fail`` rows); an
``error`` row (a scorer that could not judge: a judge that failed, a custom scorer that raised)
is counted apart, so a broken scorer shows as errors, not as a falling pass rate.

Who sees what is part of the query, as for runs: an admin sees the scores of its
organisation's runs; a member those of its own runs (and its team's where the team shares).
The totals are read from one covering index per part of the scope with no join to ``runs``
(see ``_scoped``): ~10 ms for an admin's 11k scores where joining each to its run took ~70.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from elevenfactor.errors import RequestError
from elevenfactor.governance import BUCKETS, Principal
from elevenfactor.runtime._feedback_scope import scoped_feedback
from elevenfactor.store import Executor

__all__ = ["OnlineRow", "OnlineSummary", "online_summary"]

_UTC = "(to_timestamp(f.created_at) AT TIME ZONE 'UTC')"
_BUCKET_SQL = {
    "sqlite": {
        "hour": "strftime('%Y-%m-%dT%H:00', f.created_at, 'unixepoch')",
        "day": "strftime('%Y-%m-%d', f.created_at, 'unixepoch')",
        "week": "date(f.created_at, 'unixepoch', 'weekday 0', '-6 days')",
        "month": "strftime('%Y-%m', f.created_at, 'unixepoch')",
    },
    "postgresql": {
        "hour": f"to_char({_UTC}, 'YYYY-MM-DD\"T\"HH24:00')",
        "day": f"to_char({_UTC}, 'YYYY-MM-DD')",
        "week": f"to_char(date_trunc('week', {_UTC}), 'YYYY-MM-DD')",
        "month": f"to_char({_UTC}, 'YYYY-MM')",
    },
}
_FIGURES = (
    "COUNT(DISTINCT f.run_id), COUNT(*),"
    " SUM(CASE WHEN f.label = 'pass' THEN 1 ELSE 0 END),"
    " SUM(CASE WHEN f.label = 'fail' THEN 1 ELSE 0 END),"
    " SUM(CASE WHEN f.label = 'error' THEN 1 ELSE 0 END),"
    " AVG(CASE WHEN f.label = 'error' THEN NULL ELSE f.score END)"
)
_RULE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,99}$")


@dataclass(frozen=True, slots=True)
class OnlineRow:
    """One rule and scorer (in one bucket, when bucketed): runs scored, scores that passed,
    failed and erred, pass rate and mean score (None when no score was given)."""

    bucket: str | None
    rule: str
    scorer: str
    runs: int
    scores: int
    passed: int
    failed: int
    errors: int
    mean_score: float | None

    @property
    def pass_rate(self) -> float | None:
        """Passed over passed and failed; None when every score erred."""
        judged = self.passed + self.failed
        return self.passed / judged if judged else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "bucket": self.bucket,
            "rule": self.rule,
            "scorer": self.scorer,
            "runs": self.runs,
            "scores": self.scores,
            "passed": self.passed,
            "failed": self.failed,
            "errors": self.errors,
            "pass_rate": self.pass_rate,
            "mean_score": self.mean_score,
        }


@dataclass(frozen=True, slots=True)
class OnlineSummary:
    """Rows by bucket then rule then scorer, and ``totals`` per rule and scorer over the
    whole range."""

    bucket: str | None
    since: float | None
    until: float | None
    rule: str | None
    data: list[OnlineRow]
    totals: list[OnlineRow]

    def to_dict(self) -> dict[str, Any]:
        """The summary as the API answers it."""
        return {
            "object": "online_eval_summary",
            "bucket": self.bucket,
            "since": self.since,
            "until": self.until,
            "rule": self.rule,
            "data": [r.to_dict() for r in self.data],
            "totals": [r.to_dict() for r in self.totals],
        }


_READ = ("run_id", "label", "score", "rule", "scorer", "created_at")
"""What the figures and the buckets read of a score (the member's parts select them)."""


def _scoped(
    principal: Principal, where: list[str], params: list[Any]
) -> tuple[str, str, list[Any]]:
    """``(FROM item, WHERE condition, parameters)`` reading, as ``f``, the online scores that
    meet ``where`` (with ``params``) of the runs ``principal`` may read.

    A score carries its run's organisation (``org_id``, copied when it is written; a run's
    feedback goes with it) and owner (``run_user_id``, ``run_team_id``, m032), so none but
    the system's needs a join (``runtime._feedback_scope``): an admin's reads the index
    ``run_feedback_quality`` (m030), a member's ``run_feedback_owner`` and, where its team
    shares, ``run_feedback_team`` too (m032), each covering the whole query."""
    if principal.unscoped:
        source = "run_feedback f JOIN runs r ON r.id = f.run_id"
        return source, " AND ".join(where), params
    return scoped_feedback(principal, _READ, " AND ".join(where), params)


def _row(values: Any, bucketed: bool) -> OnlineRow:
    v = list(values)
    bucket = str(v.pop(0)) if bucketed else None
    mean = v[7]
    return OnlineRow(
        bucket, str(v[0]), str(v[1]), int(v[2]), int(v[3]), int(v[4] or 0), int(v[5] or 0),
        int(v[6] or 0), float(mean) if mean is not None else None,
    )  # fmt: skip


async def online_summary(
    db: Executor,
    principal: Principal,
    *,
    rule: str | None = None,
    since: float | None = None,
    until: float | None = None,
    bucket: str | None = "day",
    dialect: str | None = None,
) -> OnlineSummary:
    """The scores of online rules on the runs ``principal`` may read, created in
    [``since``, ``until``), of ``rule`` only if given, per ``bucket`` (``hour``, ``day``,
    ``week``, ``month``; None: totals only). ``RequestError`` naming the parameter for an
    unknown bucket or a malformed rule name."""
    if bucket is not None and bucket not in BUCKETS:
        raise RequestError(
            f"unknown bucket {bucket!r}; use one of: {', '.join(BUCKETS)}", param="per"
        )
    if rule is not None and not _RULE.match(rule):
        raise RequestError(f"{rule!r:.60} is not a rule name", code="invalid_value", param="rule")
    dialect = dialect or getattr(db, "dialect", None)
    if dialect not in _BUCKET_SQL:
        raise TypeError(f"online_summary needs a store, or dialect= for {db!r}")
    where: list[str] = ["f.source = 'online'", "f.rule IS NOT NULL"]
    args: list[Any] = []
    for condition, value in (("f.rule = ?", rule), ("f.created_at >= ?", since),
                             ("f.created_at < ?", until)):  # fmt: skip
        if value is not None:
            where.append(condition)
            args.append(value)
    source, scope, params = _scoped(principal, where, args)
    base = f" FROM {source} WHERE {scope}"
    totals = await db.fetchall(
        f"SELECT f.rule, f.scorer, {_FIGURES}{base} GROUP BY f.rule, f.scorer"
        " ORDER BY f.rule, f.scorer",
        params,
    )
    rows: list[OnlineRow] = []
    if bucket is not None:
        b = _BUCKET_SQL[dialect][bucket]
        found = await db.fetchall(
            f"SELECT {b}, f.rule, f.scorer, {_FIGURES}{base} GROUP BY {b}, f.rule, f.scorer"
            f" ORDER BY 1, 2, 3",
            params,
        )
        rows = [_row(r, True) for r in found]
    return OnlineSummary(bucket, since, until, rule, rows, [_row(r, False) for r in totals])
