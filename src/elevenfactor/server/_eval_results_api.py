"""``/v1/evals``: the stored eval results (``evals._store``) over HTTP — list them, read one
with its cases (as JSON or as the self-contained HTML report), and a suite's history, the
points a trend chart needs.

Results are seen under the rules of runs, in the query (``Principal.scope``): a member sees
its own (its team's where the team shares), an admin its organisation's; another's result is
``404 eval_not_found``, as a missing one. ``ROUTES`` must be registered after
``_evals_api``'s so that ``/v1/evals/online`` is not taken for a result id
(``/v1/evals/history`` comes before ``/v1/evals/{result_id}`` here for the same reason).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, Field
from starlette.responses import Response

from elevenfactor.evals._html import html_report
from elevenfactor.evals._store import EvalRecord, get_result, list_results, suite_history
from elevenfactor.governance import ID_PATTERN
from elevenfactor.server._op_types import Operation, PathParam
from elevenfactor.server._runs_api import _Call, endpoint
from elevenfactor.server._schemas import Id, _Schema

__all__ = [
    "OPERATIONS",
    "ROUTES",
    "EvalHistoryQuery",
    "EvalListQuery",
    "EvalShowQuery",
]

MAX_LIMIT = 500
Limit = Annotated[int, Field(ge=1, le=MAX_LIMIT, description=f"1-{MAX_LIMIT}.")]

_HTML_HEADERS = {
    "content-security-policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:;"
    " frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "x-content-type-options": "nosniff",
}


class EvalListQuery(_Schema):
    """``GET /v1/evals`` query string."""

    suite: Id | None = Field(default=None, description="Only results of this suite (its id).")
    limit: Limit = 50
    before: Id | None = Field(
        default=None,
        description="Only results older than this one (the last id of the previous page).",
    )


class EvalShowQuery(_Schema):
    """``GET /v1/evals/{result_id}`` query string."""

    format: Literal["json", "html"] = Field(
        default="json",
        description="`html`: the self-contained HTML report (`text/html`), as `elevenfactor"
        " eval show --html` writes it.",
    )


class EvalHistoryQuery(_Schema):
    """``GET /v1/evals/history`` query string."""

    suite: Id = Field(description="The suite (its id).")
    limit: Limit = 50


class EvalOwnerDoc(BaseModel):
    """Who ran the eval."""

    org_id: str
    user_id: str | None


class EvalResultDoc(BaseModel):
    """One stored eval result (its id is its eval run's id)."""

    id: str
    object: Literal["eval.result"]
    run_id: str
    suite: str
    suite_version: str
    target: str
    model: str | None
    prompt: str | None
    release: str | None
    status: Literal["passed", "failed", "error"]
    error: str | None
    passed: bool
    cases: int
    cases_passed: int
    cases_failed: int
    pass_rate: float = Field(description="Share of cases that reached their threshold (0-1).")
    cost_usd: float | None = Field(description="Null when no case's cost was known.")
    tokens: int
    duration_ms: float | None
    started_at: float
    finished_at: float
    owner: EvalOwnerDoc
    result: dict[str, Any] | None = Field(
        default=None,
        description="Only on `GET /v1/evals/{result_id}`: the whole suite result — `cases`"
        " (per case: runs, passes, pass rate, threshold, passed), `results` (every repeat"
        " with its scores, output, cost and latency), `thresholds` and `metadata`.",
    )


class EvalResultList(BaseModel):
    """Stored eval results, newest first."""

    object: Literal["list"]
    data: list[EvalResultDoc]
    has_more: bool = Field(description="Older results follow: ask with `before` = last id.")


class EvalPointDoc(BaseModel):
    """One result of the suite, as a point of its trend."""

    id: str
    finished_at: float
    status: Literal["passed", "failed", "error"]
    passed: bool
    pass_rate: float
    cases: int
    cases_passed: int
    cases_failed: int
    cost_usd: float | None
    tokens: int
    duration_ms: float | None
    suite_version: str
    model: str | None
    prompt: str | None
    release: str | None


class EvalHistoryDoc(BaseModel):
    """A suite's results over time, oldest first."""

    object: Literal["eval.history"]
    suite: str
    data: list[EvalPointDoc] = Field(description="Oldest first: the last `limit` results.")


def _json(obj: object, status: int = 200) -> Response:
    return Response(orjson.dumps(obj), status_code=status, media_type="application/json")


def _point(r: EvalRecord) -> dict[str, Any]:
    return {
        "id": r.id,
        "finished_at": r.finished_at,
        "status": r.status,
        "passed": r.passed,
        "pass_rate": r.pass_rate,
        "cases": r.cases,
        "cases_passed": r.cases_passed,
        "cases_failed": r.cases_failed,
        "cost_usd": r.cost_usd,
        "tokens": r.tokens,
        "duration_ms": r.duration_ms,
        "suite_version": r.suite_version,
        "model": r.model,
        "prompt": r.prompt,
        "release": r.release,
    }


@endpoint
async def index_results(call: _Call) -> Response:
    """``GET /v1/evals``: the results the caller may see, newest first."""
    q = call.query(EvalListQuery)
    found = await list_results(
        call.store, call.principal, suite=q.suite, limit=q.limit + 1, before=q.before
    )
    return _json(
        {
            "object": "list",
            "data": [r.to_dict() for r in found[: q.limit]],
            "has_more": len(found) > q.limit,
        }
    )


@endpoint
async def show_result(call: _Call) -> Response:
    """``GET /v1/evals/{result_id}``: one result with its cases, as JSON or HTML."""
    result_id = call.path_id("result_id")
    q = call.query(EvalShowQuery)
    record = await get_result(call.store, call.principal, result_id)
    if q.format == "json":
        return _json(record.to_dict())
    assert record.result is not None
    history = await suite_history(call.store, call.principal, record.suite)
    page = html_report(
        record.result,
        status=record.status,
        history=[(r.finished_at, r.pass_rate) for r in history if r.status != "error"],
    )
    # The report holds model outputs (escaped); the policy keeps a page that slipped one
    # through from running anything: no script, no fetch, no frame, inline styles only.
    return Response(page, media_type="text/html; charset=utf-8", headers=_HTML_HEADERS)


@endpoint
async def show_history(call: _Call) -> Response:
    """``GET /v1/evals/history``: a suite's results over time, oldest first."""
    q = call.query(EvalHistoryQuery)
    found = await suite_history(call.store, call.principal, q.suite, limit=q.limit)
    return _json({"object": "eval.history", "suite": q.suite, "data": [_point(r) for r in found]})


ROUTES: list[tuple[str, Any, list[str]]] = [
    ("/v1/evals", index_results, ["GET"]),
    ("/v1/evals/history", show_history, ["GET"]),
    ("/v1/evals/{result_id}", show_result, ["GET"]),
]

_WHO = (
    " A member sees its own results (its team's where the team shares), an admin its"
    " organisation's."
)

OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "/v1/evals", "get", "List eval results", "evals", EvalResultList,
        "Stored eval results (one per eval run), newest first; `suite` keeps one suite; page"
        " with `before`." + _WHO + " A malformed parameter, or a `before` that is not a"
        " result the caller sees, is 400 naming it.",
        query=EvalListQuery,
    ),
    Operation(
        "/v1/evals/history", "get", "An eval suite's history", "evals", EvalHistoryDoc,
        "The suite's last `limit` results, oldest first: pass rate, cases, cost, tokens and"
        " what varied (version, model, prompt, release) — the points of a trend chart."
        + _WHO + " No result is an empty `data`.",
        query=EvalHistoryQuery,
    ),
    Operation(
        "/v1/evals/{result_id}", "get", "Get an eval result", "evals", EvalResultDoc,
        "One stored result with its cases and every repeat's scores; `format=html` answers"
        " the self-contained HTML report instead (`text/html`, with the suite's pass-rate"
        " trend)." + _WHO + " Anyone else gets 404 `eval_not_found`, as for a missing one.",
        query=EvalShowQuery,
        params=(PathParam("result_id", "The result's id (its eval run's id).", ID_PATTERN),),
    ),
)  # fmt: skip
