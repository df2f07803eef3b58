"""``/v1/runs`` and ``/v1/approvals``: submit, inspect, stream, cancel runs; decide approvals."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from elevenfactor.errors import ElevenFactorError, RequestError
from elevenfactor.governance import Principal, check_id
from elevenfactor.runtime import (
    ApprovalInfo,
    RunInfo,
    cancel_run,
    decide_approval,
    delete_run,
    describe_steps,
    get_run,
    list_approvals,
    list_runs,
    run_result,
    submit_run,
)
from elevenfactor.server._auth import authenticate, read_body
from elevenfactor.server._errors import error_response
from elevenfactor.server._schemas import (
    ApprovalDecision,
    ApprovalQuery,
    RunCreate,
    RunDeleteQuery,
    RunQuery,
    parse_body,
    parse_query,
)
from elevenfactor.server._state import Gateway
from elevenfactor.store import Store

__all__ = ["ROUTES", "RunEvent", "endpoint", "run_event_stream"]

M = TypeVar("M", bound=BaseModel)

_POLL = 0.1


def _json(obj: object, status: int = 200) -> Response:
    return Response(orjson.dumps(obj), status_code=status, media_type="application/json")


def _run(info: RunInfo) -> dict[str, Any]:
    return {
        "id": info.id,
        "object": "run",
        "program": info.program,
        "status": info.status,
        "queue": info.queue,
        "priority": info.priority,
        "attempt": info.attempt,
        "cancel_requested": bool(info.cancel_requested),
        "parent_id": info.parent_id,
        "owner": {"user_id": info.user_id, "team_id": info.team_id},
        "created_at": info.created_at,
        "updated_at": info.updated_at,
        "error": info.error_dict(),
        "release_id": info.release_id,
    }


def _approval(a: ApprovalInfo) -> dict[str, Any]:
    return {
        "id": a.id,
        "object": "approval",
        "run_id": a.run_id,
        "step_id": a.step_id,
        "name": a.name,
        "status": a.status,
        "request": a.request,
        "group": a.reviewer_group,
        "created_at": a.created_at,
        "timeout_at": a.timeout_at,
        "on_timeout": a.on_timeout,
        "decision": a.decision.model_dump() if a.decision else None,
    }


@dataclass(frozen=True, slots=True)
class _Call:
    """An authenticated API request."""

    request: Request
    gw: Gateway
    store: Store
    principal: Principal

    async def body(self, model: type[M]) -> M:
        """The JSON body, validated against ``model``."""
        return parse_body(model, await read_body(self.request, self.gw.settings.max_body_bytes))

    def query(self, model: type[M]) -> M:
        """The query string, validated against ``model``."""
        return parse_query(model, self.request.query_params.multi_items())

    def path_id(self, name: str) -> str:
        """A path parameter that must be an id."""
        return check_id(self.request.path_params[name], name)


def endpoint(
    handler: Callable[[_Call], Awaitable[Response]],
) -> Callable[[Request], Awaitable[Response]]:
    """Authenticate, run ``handler``, and turn library errors into OpenAI-style error objects."""

    @functools.wraps(handler)
    async def wrapped(request: Request) -> Response:
        gw: Gateway = request.app.state.gateway
        assert gw.store is not None
        try:
            principal = await authenticate(request, gw)
            return await handler(_Call(request, gw, gw.store, principal))
        except ElevenFactorError as exc:
            return error_response(exc)

    return wrapped


@endpoint
async def create_run(call: _Call) -> Response:
    """``POST /v1/runs``: queue a run of an agent or workflow, owned by the caller."""
    body = await call.body(RunCreate)
    program = body.program or body.agent
    if not program:
        raise RequestError(
            "'program' (or 'agent') is required",
            code="missing_required_parameter",
            param="program",
        )
    if call.gw.programs is not None:
        call.gw.programs.get(program)
    if call.gw.release is not None:  # the files on disk must still be the served release's
        await call.gw.release.check_disk()
    rid = await submit_run(
        call.store,
        program,
        body.input,
        queue=body.queue,
        priority=body.priority,
        run_id=body.id,
        max_attempts=body.max_attempts,
        deadline=body.deadline_seconds,
        session_id=body.session_id,
        owner=call.principal,
        tags=body.tags,
        traceparent=call.request.headers.get("traceparent"),  # the trace the run continues
    )
    if call.gw.worker is not None:
        call.gw.worker.notify()
    return _json(_run(await get_run(call.store, rid, call.principal)), 201)


@endpoint
async def show_run(call: _Call) -> Response:
    """``GET /v1/runs/{id}``: status, steps and result."""
    info = await get_run(call.store, call.path_id("run_id"), call.principal)
    return _json(
        {
            **_run(info),
            "result": await run_result(call.store, info),
            "steps": await describe_steps(call.store, info.id),
        }
    )


@endpoint
async def index_runs(call: _Call) -> Response:
    """``GET /v1/runs``: newest first; filter by ``status`` and ``program``."""
    q = call.query(RunQuery)
    found = await list_runs(
        call.store, status=q.status, program=q.program, limit=q.limit, principal=call.principal
    )
    return _json({"object": "list", "data": [_run(r) for r in found]})


@endpoint
async def cancel(call: _Call) -> Response:
    """``POST /v1/runs/{id}/cancel``: the run as it is after the request — ``cancelled``, or
    still ``running`` with ``cancel_requested`` until its worker stops it at the next step; a
    finished run is a 409 ``run_finished``."""
    run_id = call.path_id("run_id")
    reason = "cancelled through the API"
    info = await cancel_run(call.store, run_id, reason, call.principal)
    if call.gw.worker is not None and info.status == "running":
        call.gw.worker.request_cancel(run_id, reason)
    return _json(_run(info))


@endpoint
async def delete(call: _Call) -> Response:
    """``DELETE /v1/runs/{id}?reason=...``: an admin deletes a finished run (recorded in the
    ledger)."""
    q = call.query(RunDeleteQuery)
    run_id = call.path_id("run_id")
    await delete_run(call.store, run_id, call.principal, q.reason)
    return _json({"id": run_id, "object": "run", "deleted": True})


def _through_head(steps: list[dict[str, Any]], head_hash: str | None) -> list[dict[str, Any]]:
    """The leading ``steps`` up to and including the one hashed ``head_hash``, if among them."""
    for i, step in enumerate(steps):
        if step["hash"] == head_hash:
            return steps[: i + 1]
    return []


RunEvent = tuple[str, dict[str, Any]]
"""``(kind, data)`` of ``run_event_stream``: ``status`` (the run), ``step`` (a journal step) or
``end`` (the run with its ``result``)."""


async def run_event_stream(
    store: Store, info: RunInfo, *, poll: float = _POLL, start: int = 0
) -> AsyncIterator[RunEvent]:
    """What happens to the run ``info`` (already read with its reader's principal), from its
    journal step ``start`` on, until it ends: the events behind ``GET /v1/runs/{id}/events``
    (and the dashboard's live run page), polled every ``poll`` seconds.

    Events come in the order things happened: an execution's ``running`` status before its
    steps, and its steps before the status it settled in. When a whole execution happened
    between two polls, a ``running`` status (the run as it is now, marked running) still comes
    before its steps. From ``start`` 0, a run parked or finished begins with its past steps."""
    seen, status = start, None
    while True:
        current = await get_run(store, info.id)
        steps = await describe_steps(store, info.id, seen)
        seen += len(steps)
        if current.status == "running":
            if status != "running":
                status = "running"
                yield "status", _run(current)
            for step in steps:
                yield "step", step
        else:
            # Steps up to the head the run settled with were written before it settled;
            # any after it by an execution that began after the read above.
            old = _through_head(steps, current.head_hash)
            if old and status not in (None, "running"):
                yield "status", {**_run(current), "status": "running"}
            for step in old:
                yield "step", step
            if current.status != status:
                status = current.status
                yield "status", _run(current)
            if new := steps[len(old) :]:
                current = await get_run(store, info.id)
                status = "running"
                yield "status", {**_run(current), "status": "running"}
                for step in new:
                    yield "step", step
        if current.finished:
            if current.status != status:
                yield "status", _run(current)
            result = await run_result(store, current)
            yield "end", {**_run(current), "result": result}
            return
        await asyncio.sleep(poll)


@endpoint
async def run_events(call: _Call) -> Response:
    """``GET /v1/runs/{id}/events``: server-sent events — every journal step as it is written
    (``event: step``), each status change (``event: status``), and ``event: end``
    (``run_event_stream``). A stream opened on a parked or finished run starts with its past
    steps."""
    info = await get_run(call.store, call.path_id("run_id"), call.principal)

    async def stream() -> AsyncIterator[bytes]:
        async for kind, data in run_event_stream(call.store, info):
            yield b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"

    return StreamingResponse(
        stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
    )


@endpoint
async def index_approvals(call: _Call) -> Response:
    """``GET /v1/approvals``: those the caller may see (its runs'; a reviewer's groups'; an
    admin's organisation's), pending by default; filter by ``status``, ``group``, ``run_id``."""
    q = call.query(ApprovalQuery)
    found = await list_approvals(
        call.store,
        status=None if q.status == "all" else q.status,
        group=q.group,
        run_id=q.run_id,
        limit=q.limit,
        principal=call.principal,
    )
    return _json({"object": "list", "data": [_approval(a) for a in found]})


@endpoint
async def decide(call: _Call) -> Response:
    """``POST /v1/approvals/{id}``: ``{"action": approve|reject|edit|answer, "reason",
    "arguments", "answer"}``, decided by the authenticated user."""
    body = await call.body(ApprovalDecision)
    decided = await decide_approval(
        call.store,
        call.path_id("approval_id"),
        body.action,
        by=call.principal,
        reason=body.reason,
        arguments=body.arguments,
        answer=body.answer,
    )
    if call.gw.worker is not None:
        call.gw.worker.notify()
    return _json(_approval(decided))


ROUTES: list[tuple[str, Any, list[str]]] = [
    ("/v1/runs", create_run, ["POST"]),
    ("/v1/runs", index_runs, ["GET"]),
    ("/v1/runs/{run_id}", show_run, ["GET"]),
    ("/v1/runs/{run_id}", delete, ["DELETE"]),
    ("/v1/runs/{run_id}/events", run_events, ["GET"]),
    ("/v1/runs/{run_id}/cancel", cancel, ["POST"]),
    ("/v1/approvals", index_approvals, ["GET"]),
    ("/v1/approvals/{approval_id}", decide, ["POST"]),
]
