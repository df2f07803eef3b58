"""``POST /v1/runs/{id}/replay`` and ``GET /v1/replays/{id}``: replay a recorded run.

An empty object (``{}``) is a deterministic replay, answered at once (200): the run
re-executed from its journal with no call, and whether it reproduced every step and its
result. A body with one change (``model``, ``prompt``, ``policy``, ``release``; or
``live_tools`` alone) starts a what-if replay — a new run executed by the workers — and
answers 202 with the replay's id; ``GET /v1/replays/{id}`` gives its divergence report,
computed when read (``finished`` false until the new run ends). Whoever may read the run may
replay it; for anyone else it is ``404 run_not_found``. A replay is read by whoever may read
rows of its owner (404 ``replay_not_found`` otherwise); both checks are in the SQL.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, Field
from pydantic import StringConstraints as SC
from starlette.responses import Response

from elevenfactor.errors import RequestError
from elevenfactor.governance import ID_PATTERN
from elevenfactor.runtime._replay import replay_run
from elevenfactor.runtime._replay_runs import get_replay, replay_report, start_what_if
from elevenfactor.runtime._replay_whatif import REF_PATTERN, WhatIf
from elevenfactor.server._op_types import Operation, PathParam
from elevenfactor.server._runs_api import _Call, endpoint
from elevenfactor.server._schemas import _Schema

__all__ = ["OPERATIONS", "ROUTES", "ReplayCreate"]


Ref = Annotated[str, SC(pattern=REF_PATTERN)]


class ReplayCreate(_Schema):
    """``POST /v1/runs/{id}/replay``: nothing (a deterministic replay), or one change."""

    model: Ref | None = Field(default=None, description="A route or deployment for the agent.")
    prompt: Ref | None = Field(
        default=None, description="Another version of the agent's prompt: `NAME@VERSION`."
    )
    policy: Ref | None = Field(
        default=None, description="Another guard policy for the agent: `NAME@VERSION`."
    )
    release: Ref | None = Field(
        default=None, description="Run under this release (its name or id) instead."
    )
    live_tools: bool = Field(
        default=False,
        strict=True,
        description="Run the tools for real; by default they are pinned to the recording (a"
        " call it does not have fails the replay with `replay_unpinned_tool`).",
    )


class DivergenceDoc(BaseModel):
    """Where a replay first differs from the recording."""

    reason: str = Field(description="step, missing, extra, output, request, result, ...")
    step_id: str | None
    n: int | None = Field(description="The recorded step's position in the journal.")
    kind: str | None
    name: str | None
    expected_kind: str | None
    expected_name: str | None
    expected: Any
    got: Any
    message: str


class ReplayDoc(BaseModel):
    """A replay's report: deterministic (200 at once) or what-if (202, then from
    ``GET /v1/replays/{id}``)."""

    object: Literal["replay"]
    mode: Literal["deterministic", "what_if"]
    id: str | None = Field(default=None, description="The what-if replay's id.")
    run_id: str
    replay_run_id: str | None = Field(default=None, description="The what-if run.")
    identical: bool | None = Field(default=None, description="Deterministic: no divergence.")
    diverged: bool | None = Field(default=None, description="What-if: a step or the output.")
    finished: bool | None = Field(default=None, description="What-if: the new run ended.")
    divergence: DivergenceDoc | None = None
    diff: str | None = Field(default=None, description="Deterministic: of the diverging step.")
    output_diff: str | None = Field(default=None, description="What-if: of the final outputs.")
    cost_delta: float | None = None
    latency_delta_ms: float | None = None


def _json(obj: object, status: int = 200) -> Response:
    return Response(orjson.dumps(obj), status_code=status, media_type="application/json")


@endpoint
async def post_replay(call: _Call) -> Response:
    """``POST /v1/runs/{id}/replay``: a deterministic replay, or start a what-if one."""
    run_id = call.path_id("run_id")
    body = await call.body(ReplayCreate)
    programs = call.gw.programs
    if programs is None:
        raise RequestError("this server runs no programs", code="replay_unavailable", status=503)
    options = WhatIf(body.model, body.prompt, body.policy, body.release, body.live_tools)
    if not options.is_what_if:
        report = await replay_run(call.store, programs, run_id, call.principal)
        return _json(report.to_dict())
    row = await start_what_if(call.store, programs, call.principal, run_id, options.check())
    report_ = await replay_report(call.store, row)
    return _json({**report_.to_dict(), "id": row.id, "created_at": row.created_at}, 202)


@endpoint
async def show_replay(call: _Call) -> Response:
    """``GET /v1/replays/{id}``: a what-if replay's report, as it stands."""
    row = await get_replay(call.store, call.principal, call.path_id("replay_id"))
    report = await replay_report(call.store, row)
    return _json({**report.to_dict(), "id": row.id, "created_at": row.created_at})


ROUTES: list[tuple[str, Any, list[str]]] = [
    ("/v1/runs/{run_id}/replay", post_replay, ["POST"]),
    ("/v1/replays/{replay_id}", show_replay, ["GET"]),
]

OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "/v1/runs/{run_id}/replay", "post", "Replay a run", "runs", ReplayDoc,
        "An empty object replays the finished run deterministically from its journal, with no"
        " model or tool call, and answers 200 with whether every step and the result came out"
        " byte for byte (else the first diverging step and a diff). One change — `model`,"
        " `prompt`, `policy` or `release`, or `live_tools` alone — starts a what-if replay: a"
        " new run with that change, tools pinned to the recording; the answer is 202 with the"
        " replay's `id` (its report: `GET /v1/replays/{id}`). Whoever may read the run may"
        " replay it; others get 404 `run_not_found`; a run still running is 409"
        " `run_not_finished`.",
        body=ReplayCreate, params=(PathParam("run_id", "The run's id.", ID_PATTERN),),
    ),
    Operation(
        "/v1/replays/{replay_id}", "get", "Show a what-if replay", "runs", ReplayDoc,
        "The divergence report, computed now: the first step that differs, a diff of the"
        " outputs, cost and latency deltas, the status of both runs (`finished` false while"
        " the new run goes on). 404 `replay_not_found` for a replay the caller may not read.",
        params=(PathParam("replay_id", "The replay's id.", ID_PATTERN),),
    ),
)  # fmt: skip
