"""``/v1/runs/{id}/feedback``: give and list human feedback on a run.

Whoever may read the run may give feedback on it and read all of it; for anyone else the run is
``404 run_not_found``, as if absent (the library's queries carry the caller's scope).
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

from elevenfactor.governance import ID_PATTERN
from elevenfactor.runtime._feedback import add_feedback, list_feedback
from elevenfactor.server import _feedback_schemas as fs
from elevenfactor.server import _responses as r
from elevenfactor.server._op_types import Operation, PathParam
from elevenfactor.server._runs_api import _Call, endpoint

__all__ = ["OPERATIONS", "ROUTES"]


def _json(obj: object, status: int = 200) -> Response:
    return Response(orjson.dumps(obj), status_code=status, media_type="application/json")


@endpoint
async def post_feedback(call: _Call) -> Response:
    """``POST /v1/runs/{id}/feedback``: a judgement of the run by the caller."""
    run_id = call.path_id("run_id")
    body = await call.body(fs.FeedbackCreate)
    feedback = await add_feedback(
        call.store,
        call.principal,
        run_id,
        score=body.score,
        label=body.label,
        comment=body.comment,
        metadata=body.metadata,
    )
    return _json(feedback.to_dict(), 201)


@endpoint
async def index_feedback(call: _Call) -> Response:
    """``GET /v1/runs/{id}/feedback``: the run's feedback, newest first."""
    run_id = call.path_id("run_id")
    q = call.query(fs.FeedbackQuery)
    page = await list_feedback(
        call.store, call.principal, run_id, limit=q.limit, before=q.before, source=q.source
    )
    return _json(
        {"object": "list", "data": [f.to_dict() for f in page.data], "has_more": page.has_more}
    )


ROUTES: list[tuple[str, Any, list[str]]] = [
    ("/v1/runs/{run_id}/feedback", post_feedback, ["POST"]),
    ("/v1/runs/{run_id}/feedback", index_feedback, ["GET"]),
]

_RUN_ID = PathParam("run_id", "The run's id.", ID_PATTERN)
_WHO = (
    " Whoever may read the run (its owner; its team where the team shares; an admin of its"
    " organisation) may; others get 404 `run_not_found`."
)

OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "/v1/runs/{run_id}/feedback", "post", "Give feedback on a run", "runs",
        r.FeedbackObject,
        "A human judgement — a score (no imposed scale), a label and/or a comment — recorded"
        " as the caller's, with a ledger entry." + _WHO + " A body without score, label or"
        " comment is 400 `missing_required_parameter`.",
        body=fs.FeedbackCreate, params=(_RUN_ID,), status=201,
    ),
    Operation(
        "/v1/runs/{run_id}/feedback", "get", "List a run's feedback", "runs", r.FeedbackList,
        "Newest first; page with `before`; `source` keeps one source (online scorers'"
        " rows carry `metadata.rule` and `metadata.scorer`)." + _WHO,
        query=fs.FeedbackQuery, params=(_RUN_ID,),
    ),
)  # fmt: skip
