"""``/ui/quality``: eval results and regressions over time, feedback, guard trip rates and
online evaluation scores; ``/ui/quality/evals/{id}``: one eval result's summary (its cases and
what regressed against the result before it) — the dashboard's own page, since the HTML report
at ``/v1/evals/{id}`` is behind the JSON API's authentication.

Each table shows its top ``TOP`` rows (the chart the newest ``TOP_POINTS`` results) with a
"Show all" link to ``?show=all``, which lists up to each query's own bound: a page of a few
dozen kilobytes renders in a few milliseconds, one of 200 KB took 40.

Every query is scoped to what the signed-in principal may read (``_quality_data``,
``_quality_guards``): a member sees its own results, feedback on its runs and its calls' and
runs' guard verdicts; another's eval result is a 404 page, as a missing one.
"""

from __future__ import annotations

from collections import Counter
from typing import Annotated, Literal
from urllib.parse import urlencode

from pydantic import Field
from pydantic import StringConstraints as SC
from starlette.responses import Response

from elevenfactor.evals import compare, get_result, list_results
from elevenfactor.evals._report import case_rows
from elevenfactor.governance import ID_PATTERN, check_id
from elevenfactor.server._schemas import parse_query
from elevenfactor.server.ui._charts import Chart, Series, stacked_bars
from elevenfactor.server.ui._page import Page, ui_page
from elevenfactor.server.ui._quality_data import (
    MAX_POINTS,
    eval_chart,
    feedback_averages,
    latest_by_suite,
    online_totals,
    recent_feedback,
)
from elevenfactor.server.ui._quality_guards import (
    MAX_RUNS,
    MAX_TRIP_CALLS,
    GuardRates,
    bucket_key,
    bucket_seconds,
    guard_rates,
)
from elevenfactor.server.ui._ranges import (
    RANGE_LABELS,
    RangeQuery,
    TimeRange,
    bucket_keys,
    bucket_label,
    resolve_range,
)

__all__ = ["ROUTES", "QualityQuery"]


TOP = 20
"""Rows each table shows (the chart: ``TOP_POINTS`` results) unless ``show=all``."""
TOP_POINTS = 150
MORE = {"feedback": 200, "averages": 100}
"""Rows the feedback tables show at most with ``show=all``."""


class QualityQuery(RangeQuery):
    """``GET /ui/quality``: the range (default the last 30 days), optionally one suite, and
    ``show=all`` for every row of each table (else the top ``TOP``)."""

    range: Literal["24h", "7d", "30d", "custom"] = Field(default="30d")
    suite: Annotated[str, SC(pattern=ID_PATTERN, max_length=200)] | None = None
    show: Literal["top", "all"] = "top"


def _all_url(q: QualityQuery) -> str:
    """This page with ``show=all``."""
    params = {k: v for k, v in q.model_dump(exclude_none=True).items() if k != "show"}
    if q.range != "custom":
        params.pop("since", None)
        params.pop("until", None)
    return "/ui/quality?" + urlencode({**params, "show": "all"})


def _trips_chart(guards: GuardRates, span: TimeRange) -> Chart:
    """Trips per bucket, a series per rule (the top 5, then ``other``)."""
    width = bucket_seconds(span)
    per = "hour" if width == 3600 else "day"
    buckets = bucket_keys(per, span)
    index = {b: i for i, b in enumerate(buckets)}
    counts: dict[str, list[float]] = {}
    for at, rule, n in guards.timeline:
        key = bucket_key(at, width)
        counts.setdefault(rule, [0.0] * len(buckets))[index.get(key, len(buckets) - 1)] += n
    order = [r for r, _ in Counter({r: sum(v) for r, v in counts.items()}).most_common()]
    series = [Series(r, tuple(counts[r])) for r in order[:5]]
    if order[5:]:
        rest = [sum(counts[r][i] for r in order[5:]) for i in range(len(buckets))]
        series.append(Series(f"other ({len(order) - 5})", tuple(rest), other=True))
    return stacked_bars(
        "Guard trips over time",
        buckets,
        series,
        fmt=lambda v: f"{v:,.0f}",
        integer=True,
        bucket_label=bucket_label,
        bucket_column=f"{per.capitalize()} (UTC)",
    )


@ui_page("quality")
async def quality_page(page: Page) -> Response:
    """``GET /ui/quality``: the pass-rate chart, latest results, feedback and guard rates."""
    q = parse_query(QualityQuery, page.request.query_params.multi_items())
    span = resolve_range(q)
    principal, store = page.user.principal, page.store
    every = q.show == "all"
    top = None if every else TOP
    chart, points = await eval_chart(
        store, principal, span, q.suite, MAX_POINTS if every else TOP_POINTS
    )
    latest = await latest_by_suite(store, principal, span, q.suite)
    feedback = await recent_feedback(store, principal, span, MORE["feedback"] if every else TOP + 1)
    averages = await feedback_averages(
        store, principal, span, MORE["averages"] if every else TOP + 1
    )
    guards = await guard_rates(store, principal, span)
    online = await online_totals(store, principal, span)
    return page.render(
        "quality.html",
        q=q,
        span=span,
        ranges=RANGE_LABELS,
        chart=chart,
        points=points,
        max_points=MAX_POINTS if every else TOP_POINTS,
        latest=latest,
        feedback=feedback,
        averages=averages,
        guards=guards,
        trips_chart=_trips_chart(guards, span) if guards.timeline else None,
        caps={"gateway": MAX_TRIP_CALLS, "runs": MAX_RUNS},
        online=online,
        top=top,
        more=MORE,
        all_url=_all_url(q),
    )


@ui_page("quality")
async def eval_page(page: Page) -> Response:
    """``GET /ui/quality/evals/{id}``: one stored eval result — its figures, every case, and
    the regressions against the suite's result before it."""
    ident = check_id(page.request.path_params["id"], "id")
    principal, store = page.user.principal, page.store
    record = await get_result(store, principal, ident)
    assert record.result is not None
    before = await list_results(store, principal, suite=record.suite, before=record.id, limit=1)
    comparison, baseline = None, None
    if before:
        baseline = await get_result(store, principal, before[0].id)
        if baseline.result is not None:
            comparison = compare(baseline.result, record.result)
    return page.render(
        "quality_eval.html",
        record=record,
        cases=case_rows(record.result),
        baseline=baseline,
        comparison=comparison,
    )


ROUTES: list[tuple[str, object, list[str]]] = [
    ("/ui/quality", quality_page, ["GET"]),
    ("/ui/quality/evals/{id}", eval_page, ["GET"]),
]
