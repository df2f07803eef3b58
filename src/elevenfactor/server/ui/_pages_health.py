"""The health page (``/ui/health``): readiness, providers and their circuit breakers, queue
depth, workers and their leases, agent breakers and kill switches.

Every signed-in user sees it. What is global is shown as numbers only (runs per queue and
status, leases per worker: no ids, no owners); run ids appear only for the viewer's own
running runs (an admin: its organisation's), and agent breakers and kill switches are those
of the viewer's organisation. Details of kill switches stay on the admins' cost page.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict
from starlette.responses import Response

from elevenfactor.server._schemas import parse_query
from elevenfactor.server.ui._health_data import health
from elevenfactor.server.ui._page import Page, ui_page

__all__ = ["ROUTES"]


class HealthQuery(BaseModel):
    """``GET /ui/health`` takes no parameters (any is refused, as a malformed one would be)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@ui_page("health")
async def health_page(page: Page) -> Response:
    """``GET /ui/health``."""
    parse_query(HealthQuery, page.request.query_params.multi_items())
    me = page.user.principal
    data = await health(page.gw, page.store, me)
    # 200 even when not ready: the page itself works; ``/readyz`` is what probes read.
    return page.render("health.html", h=data, admin=me.is_admin)


ROUTES: list[tuple[str, Any, list[str]]] = [
    ("/ui/health", health_page, ["GET"]),
]
