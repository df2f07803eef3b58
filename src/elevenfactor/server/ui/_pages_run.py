"""The run page, ``/ui/runs/{id}``: a run's facts, its trace as a waterfall, each step's input
and output (redacted by policy), its context manifests, the audit status of its chain, and
buttons to cancel, retry or replay it (``_run_actions``).

While the run is not finished the page keeps itself current: ``static/run.js`` listens to
``GET /ui/runs/{id}/events`` (server-sent events from the same generator as
``GET /v1/runs/{id}/events``, with only ids, kinds, names and statuses: no payloads) and swaps in
``GET /ui/runs/{id}?part=live`` (the page's live part) when something happened.

Another member's run is the same 404 page as an unknown id. Query strings are validated
(``RunPageQuery``, ``RunEventsQuery``): anything else is a 400 page.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

import orjson
from pydantic import Field
from starlette.responses import Response, StreamingResponse

from elevenfactor.governance import check_id
from elevenfactor.runtime import get_run
from elevenfactor.server._runs_api import run_event_stream
from elevenfactor.server._schemas import Id, _Schema, parse_query
from elevenfactor.server.ui._page import Page, ui_page
from elevenfactor.server.ui._run_actions import ACTION_ROUTES, Notice, Reason
from elevenfactor.server.ui._run_view import run_context

__all__ = ["ROUTES", "RunEventsQuery", "RunPageQuery"]

_POLL = 0.5
"""Seconds between two looks at a run a page watches."""
_Count = Annotated[int, Field(ge=0, le=10**9)]


class RunPageQuery(_Schema):
    """``GET /ui/runs/{id}`` query string."""

    part: Literal["live"] | None = Field(
        default=None, description="`live`: only the part that changes while the run goes on."
    )
    from_: _Count = Field(default=0, alias="from", description="The first journal step shown.")
    notice: Notice | None = Field(default=None, description="What a button just did.")
    run: Id | None = Field(default=None, description="The run a retry submitted.")
    step: Id | None = Field(default=None, description="Where a replay diverged.")
    reason: Reason | None = Field(default=None, description="Why a replay diverged.")


class RunEventsQuery(_Schema):
    """``GET /ui/runs/{id}/events`` query string."""

    after: _Count = Field(default=0, description="Journal steps the page shows already.")


def _run_id(page: Page) -> str:
    return check_id(page.request.path_params["run_id"], "run_id")


@ui_page("runs")
async def run_page(page: Page) -> Response:
    """``GET /ui/runs/{id}``: the run page (``?part=live``: its live part only)."""
    run_id = _run_id(page)
    q = parse_query(RunPageQuery, page.request.query_params.multi_items())
    context = await run_context(page, run_id, q)
    return page.render("run_live.html" if q.part else "run.html", **context)


def _public(kind: str, data: dict[str, Any]) -> dict[str, Any]:
    """What the page's script needs of a run event: no payloads, no result."""
    if kind == "step":
        return {k: data[k] for k in ("n", "step_id", "kind", "name", "status")}
    return {
        "id": data["id"],
        "status": data["status"],
        "cancel_requested": data["cancel_requested"],
    }


@ui_page("runs")
async def run_events(page: Page) -> Response:
    """``GET /ui/runs/{id}/events``: server-sent events while the run goes on — ``status``,
    ``step`` (id, kind, name, status) and ``end``."""
    run_id = _run_id(page)
    q = parse_query(RunEventsQuery, page.request.query_params.multi_items())
    store = page.store
    info = await get_run(store, run_id, page.user.principal)

    async def stream() -> AsyncIterator[bytes]:
        yield b"retry: 3000\n\n"
        async for kind, data in run_event_stream(store, info, poll=_POLL, start=q.after):
            body = orjson.dumps(_public(kind, data))
            yield b"event: " + kind.encode() + b"\ndata: " + body + b"\n\n"

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


ROUTES: list[tuple[str, object, list[str]]] = [
    ("/ui/runs/{run_id}", run_page, ["GET"]),
    ("/ui/runs/{run_id}/events", run_events, ["GET"]),
    *ACTION_ROUTES,
]
"""The run page's routes."""
