"""Every dashboard route, gathered from the page modules."""

from __future__ import annotations

from typing import Any

from elevenfactor.server.ui._pages_approvals import ROUTES as APPROVAL_ROUTES
from elevenfactor.server.ui._pages_auth import ROUTES as AUTH_ROUTES
from elevenfactor.server.ui._pages_cost import ROUTES as COST_ROUTES
from elevenfactor.server.ui._pages_health import ROUTES as HEALTH_ROUTES
from elevenfactor.server.ui._pages_quality import ROUTES as QUALITY_ROUTES
from elevenfactor.server.ui._pages_run import ROUTES as RUN_ROUTES
from elevenfactor.server.ui._pages_runs_list import ROUTES as RUNS_LIST_ROUTES

__all__ = ["ROUTES", "is_ui_path"]

ROUTES: list[tuple[str, Any, list[str]]] = [
    *AUTH_ROUTES,
    *RUN_ROUTES,
    *RUNS_LIST_ROUTES,
    *COST_ROUTES,
    *QUALITY_ROUTES,
    *APPROVAL_ROUTES,
    *HEALTH_ROUTES,
]
"""``(path, endpoint, methods)`` of every dashboard page."""


def is_ui_path(path: str) -> bool:
    """Whether ``path`` is served by the dashboard (HTML pages and url-encoded forms)."""
    return path == "/ui" or path.startswith("/ui/")
