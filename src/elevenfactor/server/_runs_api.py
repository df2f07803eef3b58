"""``/v1/runs`` and ``/v1/approvals``: submit, inspect, stream, cancel runs; decide approvals."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from elevenfactor.errors import ElevenFactorError, RequestError
from elevenfactor.runtime import (
    ApprovalInfo,
    RunInfo,
    cancel_run,
    decide_approval,
    describe_steps,
    get_run,
    list_approvals,
    list_runs,
    run_result,
    submit_run,
)
from elevenfactor.server._auth import authenticate, read_body
from elevenfactor.server._errors import error_response
from elevenfactor.server._state import Gateway
from elevenfactor.store import Store

__all__ = ["ROUTES"]

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
        "parent_id": info.parent_id,
        "created_at": info.created_at,
        "updated_at": info.updated_at,
        "error": info.error_dict(),
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


async def _body(request: Request, gw: Gateway) -> dict[str, Any]:
    raw = await read_body(request, gw.settings.max_body_bytes)
    try:
        body = orjson.loads(raw or b"{}")
    except orjson.JSONDecodeError as exc:
        raise RequestError(
            f"the body is not valid JSON: {exc}", code="invalid_json", param="body"
        ) from None
    if not isinstance(body, dict):
        raise RequestError("the body must be a JSON object", code="invalid_type", param="body")
    return body


def _field(body: dict[str, Any], name: str, kind: type | tuple[type, ...], default: Any) -> Any:
    value = body.get(name, default)
    if value is not None and (
        not isinstance(value, kind)
        or (isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)))
    ):
        raise RequestError(f"'{name}' has the wrong type", code="invalid_type", param=name)
    return value


@dataclass(frozen=True, slots=True)
class _Call:
    """An authenticated API request."""

    request: Request
    gw: Gateway
    store: Store
    key_id: str | None


def _endpoint(
    handler: Callable[[_Call], Awaitable[Response]],
) -> Callable[[Request], Awaitable[Response]]:
    """Authenticate, run ``handler``, and turn library errors into OpenAI-style error objects."""

    @functools.wraps(handler)
    async def wrapped(request: Request) -> Response:
        gw: Gateway = request.app.state.gateway
        assert gw.store is not None
        try:
            key_id = await authenticate(request, gw)
            return await handler(_Call(request, gw, gw.store, key_id))
        except ElevenFactorError as exc:
            return error_response(exc)

    return wrapped


_RUN_FIELDS = frozenset(
    {
        "program",
        "agent",
        "input",
        "queue",
        "priority",
        "id",
        "max_attempts",
        "deadline_seconds",
        "session_id",
    }
)


@_endpoint
async def create_run(call: _Call) -> Response:
    """``POST /v1/runs``: queue a run of an agent or workflow."""
    body = await _body(call.request, call.gw)
    unknown = sorted(set(body) - _RUN_FIELDS)
    if unknown:
        raise RequestError(
            f"unknown field {unknown[0]!r}", code="unknown_parameter", param=unknown[0]
        )
    program = _field(body, "program", str, None) or _field(body, "agent", str, None)
    if not program:
        raise RequestError(
            "'program' (or 'agent') is required",
            code="missing_required_parameter",
            param="program",
        )
    if call.gw.programs is not None:
        call.gw.programs.get(program)
    rid = await submit_run(
        call.store,
        program,
        body.get("input"),
        queue=_field(body, "queue", str, "default"),
        priority=_field(body, "priority", int, 0),
        run_id=_field(body, "id", str, None),
        max_attempts=_field(body, "max_attempts", int, 1),
        deadline=_field(body, "deadline_seconds", (int, float), None),
        session_id=_field(body, "session_id", str, None),
    )
    if call.gw.worker is not None:
        call.gw.worker.notify()
    return _json(_run(await get_run(call.store, rid)), 201)


@_endpoint
async def show_run(call: _Call) -> Response:
    """``GET /v1/runs/{id}``: status, steps and result."""
    info = await get_run(call.store, call.request.path_params["run_id"])
    return _json(
        {
            **_run(info),
            "result": await run_result(call.store, info),
            "steps": await describe_steps(call.store, info.id),
        }
    )


@_endpoint
async def index_runs(call: _Call) -> Response:
    """``GET /v1/runs``: newest first; filter by ``status`` and ``program``."""
    q = call.request.query_params
    limit = q.get("limit", "50")
    if not limit.isdigit() or not 1 <= int(limit) <= 1000:
        raise RequestError("'limit' must be an integer from 1 to 1000", param="limit")
    found = await list_runs(
        call.store, status=q.get("status"), program=q.get("program"), limit=int(limit)
    )
    return _json({"object": "list", "data": [_run(r) for r in found]})


@_endpoint
async def cancel(call: _Call) -> Response:
    """``POST /v1/runs/{id}/cancel``."""
    run_id = call.request.path_params["run_id"]
    return _json(_run(await cancel_run(call.store, run_id, "cancelled through the API")))


@_endpoint
async def run_events(call: _Call) -> Response:
    """``GET /v1/runs/{id}/events``: server-sent events — every journal step as it is written
    (``event: step``), each status change (``event: status``), and ``event: end``."""
    store = call.store
    info = await get_run(store, call.request.path_params["run_id"])

    async def stream() -> AsyncIterator[bytes]:
        seen, status = 0, None
        while True:
            current = await get_run(store, info.id)
            for step in await describe_steps(store, info.id, seen):
                seen += 1
                yield b"event: step\ndata: " + orjson.dumps(step) + b"\n\n"
            if current.status != status:
                status = current.status
                yield b"event: status\ndata: " + orjson.dumps(_run(current)) + b"\n\n"
            if current.finished:
                result = await run_result(store, current)
                end = {**_run(current), "result": result}
                yield b"event: end\ndata: " + orjson.dumps(end) + b"\n\n"
                return
            await asyncio.sleep(_POLL)

    return StreamingResponse(
        stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
    )


@_endpoint
async def index_approvals(call: _Call) -> Response:
    """``GET /v1/approvals``: pending by default; filter by ``status``, ``group``, ``run_id``."""
    q = call.request.query_params
    status = q.get("status", "pending")
    found = await list_approvals(
        call.store,
        status=None if status == "all" else status,
        group=q.get("group"),
        run_id=q.get("run_id"),
    )
    return _json({"object": "list", "data": [_approval(a) for a in found]})


@_endpoint
async def decide(call: _Call) -> Response:
    """``POST /v1/approvals/{id}``: ``{"action": approve|reject|edit|answer, "by", "reason",
    "arguments", "answer"}``."""
    body = await _body(call.request, call.gw)
    action = _field(body, "action", str, None)
    if not action:
        raise RequestError(
            "'action' is required", code="missing_required_parameter", param="action"
        )
    by = _field(body, "by", str, None) or (f"api-key:{call.key_id}" if call.key_id else "dev")
    decided = await decide_approval(
        call.store,
        call.request.path_params["approval_id"],
        action,
        by=by,
        reason=_field(body, "reason", str, None),
        arguments=_field(body, "arguments", dict, None),
        answer=body.get("answer"),
    )
    if call.gw.worker is not None:
        call.gw.worker.notify()
    return _json(_approval(decided))


ROUTES: list[tuple[str, Any, list[str]]] = [
    ("/v1/runs", create_run, ["POST"]),
    ("/v1/runs", index_runs, ["GET"]),
    ("/v1/runs/{run_id}", show_run, ["GET"]),
    ("/v1/runs/{run_id}/events", run_events, ["GET"]),
    ("/v1/runs/{run_id}/cancel", cancel, ["POST"]),
    ("/v1/approvals", index_approvals, ["GET"]),
    ("/v1/approvals/{approval_id}", decide, ["POST"]),
]
