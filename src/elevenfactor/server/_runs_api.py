"""``/v1/runs`` and ``/v1/approvals``: submit, inspect, stream, cancel runs; decide approvals."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
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
    get_run,
    list_approvals,
    list_runs,
    load_events,
    run_result,
    submit_run,
)
from elevenfactor.server._auth import authenticate, read_body
from elevenfactor.server._errors import error_response
from elevenfactor.server._state import Gateway
from elevenfactor.store import Store, get_blob

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


async def _steps(store: Store, run_id: str, start: int = 0) -> list[dict[str, Any]]:
    out = []
    for ev in (await load_events(store, run_id))[start:]:
        data = await get_blob(store, ev.output_hash) if ev.output_hash else None
        out.append(
            {
                "n": ev.n,
                "step_id": ev.step_id,
                "kind": ev.kind,
                "name": ev.name,
                "status": ev.status,
                "created_at": ev.created_at,
                "hash": ev.hash,
                "output": orjson.loads(data) if data else None,
                "error": orjson.loads(ev.error) if ev.error else None,
            }
        )
    return out


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


def _gw(request: Request) -> tuple[Gateway, Store]:
    gw: Gateway = request.app.state.gateway
    assert gw.store is not None
    return gw, gw.store


async def create_run(request: Request) -> Response:
    """``POST /v1/runs``: queue a run of an agent or workflow."""
    gw, store = _gw(request)
    try:
        await authenticate(request, gw)
        body = await _body(request, gw)
        known = {
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
        unknown = sorted(set(body) - known)
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
        if gw.programs is not None:
            gw.programs.get(program)
        rid = await submit_run(
            store,
            program,
            body.get("input"),
            queue=_field(body, "queue", str, "default"),
            priority=_field(body, "priority", int, 0),
            run_id=_field(body, "id", str, None),
            max_attempts=_field(body, "max_attempts", int, 1),
            deadline=_field(body, "deadline_seconds", (int, float), None),
            session_id=_field(body, "session_id", str, None),
        )
        if gw.worker is not None:
            gw.worker.notify()
        return _json(_run(await get_run(store, rid)), 201)
    except ElevenFactorError as exc:
        return error_response(exc)


async def show_run(request: Request) -> Response:
    """``GET /v1/runs/{id}``: status, steps and result."""
    gw, store = _gw(request)
    try:
        await authenticate(request, gw)
        info = await get_run(store, request.path_params["run_id"])
        return _json(
            {
                **_run(info),
                "result": await run_result(store, info),
                "steps": await _steps(store, info.id),
            }
        )
    except ElevenFactorError as exc:
        return error_response(exc)


async def index_runs(request: Request) -> Response:
    """``GET /v1/runs``: newest first; filter by ``status`` and ``program``."""
    gw, store = _gw(request)
    try:
        await authenticate(request, gw)
        q = request.query_params
        limit = q.get("limit", "50")
        if not limit.isdigit() or not 1 <= int(limit) <= 1000:
            raise RequestError("'limit' must be an integer from 1 to 1000", param="limit")
        found = await list_runs(
            store, status=q.get("status"), program=q.get("program"), limit=int(limit)
        )
        return _json({"object": "list", "data": [_run(r) for r in found]})
    except ElevenFactorError as exc:
        return error_response(exc)


async def cancel(request: Request) -> Response:
    """``POST /v1/runs/{id}/cancel``."""
    gw, store = _gw(request)
    try:
        await authenticate(request, gw)
        return _json(
            _run(
                await cancel_run(store, request.path_params["run_id"], "cancelled through the API")
            )
        )
    except ElevenFactorError as exc:
        return error_response(exc)


async def run_events(request: Request) -> Response:
    """``GET /v1/runs/{id}/events``: server-sent events — every journal step as it is written
    (``event: step``), each status change (``event: status``), and ``event: end``."""
    gw, store = _gw(request)
    try:
        await authenticate(request, gw)
        info = await get_run(store, request.path_params["run_id"])
    except ElevenFactorError as exc:
        return error_response(exc)

    async def stream() -> AsyncIterator[bytes]:
        seen, status = 0, None
        while True:
            current = await get_run(store, info.id)
            for step in await _steps(store, info.id, seen):
                seen += 1
                yield b"event: step\ndata: " + orjson.dumps(step) + b"\n\n"
            if current.status != status:
                status = current.status
                yield b"event: status\ndata: " + orjson.dumps(_run(current)) + b"\n\n"
            if current.finished:
                result = await run_result(store, current)
                yield (
                    b"event: end\ndata: "
                    + orjson.dumps({**_run(current), "result": result})
                    + b"\n\n"
                )
                return
            await asyncio.sleep(_POLL)

    return StreamingResponse(
        stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
    )


async def index_approvals(request: Request) -> Response:
    """``GET /v1/approvals``: pending by default; filter by ``status``, ``group``, ``run_id``."""
    gw, store = _gw(request)
    try:
        await authenticate(request, gw)
        q = request.query_params
        status = q.get("status", "pending")
        found = await list_approvals(
            store,
            status=None if status == "all" else status,
            group=q.get("group"),
            run_id=q.get("run_id"),
        )
        return _json({"object": "list", "data": [_approval(a) for a in found]})
    except ElevenFactorError as exc:
        return error_response(exc)


async def decide(request: Request) -> Response:
    """``POST /v1/approvals/{id}``: ``{"action": approve|reject|edit|answer, "by", "reason",
    "arguments", "answer"}``."""
    gw, store = _gw(request)
    try:
        key_id = await authenticate(request, gw)
        body = await _body(request, gw)
        action = _field(body, "action", str, None)
        if not action:
            raise RequestError(
                "'action' is required", code="missing_required_parameter", param="action"
            )
        by = _field(body, "by", str, None) or (f"api-key:{key_id}" if key_id else "dev")
        decided = await decide_approval(
            store,
            request.path_params["approval_id"],
            action,
            by=by,
            reason=_field(body, "reason", str, None),
            arguments=_field(body, "arguments", dict, None),
            answer=body.get("answer"),
        )
        if gw.worker is not None:
            gw.worker.notify()
        return _json(_approval(decided))
    except ElevenFactorError as exc:
        return error_response(exc)


ROUTES: list[tuple[str, Any, list[str]]] = [
    ("/v1/runs", create_run, ["POST"]),
    ("/v1/runs", index_runs, ["GET"]),
    ("/v1/runs/{run_id}", show_run, ["GET"]),
    ("/v1/runs/{run_id}/events", run_events, ["GET"]),
    ("/v1/runs/{run_id}/cancel", cancel, ["POST"]),
    ("/v1/approvals", index_approvals, ["GET"]),
    ("/v1/approvals/{approval_id}", decide, ["POST"]),
]
