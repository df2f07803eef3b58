"""``GET /v1/evals/online``: how online evaluation scores trend, per rule and scorer and per
time bucket, as ``elevenfactor eval online`` prints it.

The caller's scope is part of the query: an admin sees the scores of its organisation's runs,
a member those of its own runs (its team's where the team shares); another organisation's
scores are never counted. The query string is validated by ``OnlineSummaryQuery``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, Field
from pydantic import StringConstraints as SC
from starlette.responses import Response

from elevenfactor.config._evals import RULE_NAME
from elevenfactor.evals._online_summary import online_summary
from elevenfactor.governance import parse_when
from elevenfactor.server._op_types import Operation
from elevenfactor.server._runs_api import _Call, endpoint
from elevenfactor.server._schemas import When, _Schema

__all__ = ["OPERATIONS", "ROUTES", "OnlineSummaryDoc", "OnlineSummaryQuery"]


class OnlineSummaryQuery(_Schema):
    """``GET /v1/evals/online`` query string."""

    rule: Annotated[str, SC(pattern=RULE_NAME)] | None = Field(
        default=None, description="Only this online rule (`evals.online[].name`)."
    )
    per: Literal["hour", "day", "week", "month"] | None = Field(
        default="day",
        description="Time bucket (UTC; weeks start on Monday); `totals` always come along.",
    )
    since: When | None = Field(
        default=None,
        description="From (inclusive): a duration back from now (`7d`, `12h`, `30m`, `2w`), an"
        " ISO date or date-time (UTC unless it names a zone), or epoch seconds.",
    )
    until: When | None = Field(default=None, description="To (exclusive), as `since`.")


class OnlineRowDoc(BaseModel):
    """One rule and scorer, in one bucket (or over the whole range, in ``totals``)."""

    bucket: str | None = Field(description="Start of the bucket (`2026-12-01`); null in totals.")
    rule: str
    scorer: str = Field(description="The scorer's name (its `name:`, else its type).")
    runs: int = Field(description="Runs scored.")
    scores: int
    passed: int
    failed: int
    errors: int = Field(description="Scores the scorer could not give (a failed judge, ...).")
    pass_rate: float | None = Field(description="Passed / (passed + failed); null if none.")
    mean_score: float | None = Field(description="Mean score (0-1) of passed and failed rows.")


class OnlineSummaryDoc(BaseModel):
    """Online evaluation scores by bucket, rule and scorer."""

    object: Literal["online_eval_summary"]
    bucket: str | None
    since: float | None
    until: float | None
    rule: str | None
    data: list[OnlineRowDoc] = Field(description="By bucket, then rule, then scorer.")
    totals: list[OnlineRowDoc] = Field(description="Per rule and scorer over the whole range.")


@endpoint
async def show_online(call: _Call) -> Response:
    """``GET /v1/evals/online``: online evaluation scores per rule, scorer and bucket."""
    q = call.query(OnlineSummaryQuery)
    summary = await online_summary(
        call.store,
        call.principal,
        rule=q.rule,
        bucket=q.per,
        since=parse_when(q.since, "since") if q.since else None,
        until=parse_when(q.until, "until") if q.until else None,
    )
    return Response(orjson.dumps(summary.to_dict()), media_type="application/json")


ROUTES: list[tuple[str, Any, list[str]]] = [("/v1/evals/online", show_online, ["GET"])]

OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "/v1/evals/online", "get", "Online evaluation scores", "evals", OnlineSummaryDoc,
        "Per online rule and scorer, and per time bucket: runs scored, scores passed, failed"
        " and erred, pass rate and mean score. An admin sees its organisation's runs' scores, a"
        " member its own runs' (its team's where the team shares). A malformed parameter is"
        " 400 naming it.",
        query=OnlineSummaryQuery,
    ),
)  # fmt: skip
