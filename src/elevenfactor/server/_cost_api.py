"""``GET /v1/cost``: the cost report for dashboards, as ``elevenfactor cost report`` prints it.

The caller's scope is part of the report's query: a member sees its own spend, an admin its
organisation's. The query string is validated by ``CostQuery``; an unknown dimension, bucket or
filter is a 400 naming the parameter.
"""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import BaseModel, Field
from starlette.responses import Response

from elevenfactor.governance import cost_report, parse_filters, parse_when
from elevenfactor.server._runs_api import _Call, endpoint
from elevenfactor.server._schemas import CostQuery

__all__ = ["ROUTES", "CostReportDoc"]


class CostFiguresDoc(BaseModel):
    """What a group of calls did and cost (money in the prices' currency, USD by default)."""

    calls: int
    errors: int = Field(description="Calls that failed.")
    tokens_in: int
    tokens_out: int
    tokens_cached: int = Field(description="Input tokens read from the provider's prompt cache.")
    cost: float
    saved: float = Field(
        description="What caching saved: prompt-cache discounts and response-cache hits."
    )
    unpriced: int = Field(description="Successful calls on a deployment with no price.")


class CostRowDoc(CostFiguresDoc):
    """One group of the report."""

    bucket: str | None = Field(
        description="Start of the time bucket (`2026-12-01T13:00`, `2026-12-01`, `2026-12`)."
    )
    group: dict[str, str | None] = Field(
        description="Each grouped dimension's value (an id for org, team, user and key)."
    )
    names: dict[str, str | None] = Field(
        description="The names of the org, team, user and key where grouped."
    )


class CostReportDoc(BaseModel):
    """The cost report."""

    object: str = "cost_report"
    group_by: list[str]
    bucket: str | None
    since: float | None
    until: float | None
    filters: dict[str, str]
    data: list[CostRowDoc] = Field(description="By bucket, then most expensive first.")
    totals: CostFiguresDoc = Field(
        description="Over every call (a call with two tags counts once)."
    )


@endpoint
async def show_cost(call: _Call) -> Response:
    """``GET /v1/cost``: spend grouped by dimensions and time buckets, JSON or CSV."""
    q = call.query(CostQuery)
    report = await cost_report(
        call.store,
        call.principal,
        group_by=q.by.split(",") if q.by else (),
        bucket=q.per,
        since=parse_when(q.since, "since") if q.since else None,
        until=parse_when(q.until, "until") if q.until else None,
        filters=parse_filters(q.where.split(",")) if q.where else {},
    )
    if q.format == "csv":
        return Response(report.to_csv(), media_type="text/csv; charset=utf-8")
    body: Any = report.to_dict()
    return Response(orjson.dumps(body), media_type="application/json")


ROUTES = [("/v1/cost", show_cost, ["GET"])]
