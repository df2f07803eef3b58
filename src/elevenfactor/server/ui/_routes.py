"""Every dashboard route, gathered from the page modules."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from elevenfactor.server.ui._pages_auth import ROUTES as AUTH_ROUTES

__all__ = ["ROUTES", "is_ui_path"]

Endpoint = Callable[..., Awaitable[Any]]

ROUTES: list[tuple[str, Any, list[str]]] = [
    *AUTH_ROUTES,
]
"""``(path, endpoint, methods)`` of every dashboard page."""


def is_ui_path(path: str) -> bool:
    """Whether ``path`` is served by the dashboard (HTML pages and url-encoded forms)."""
    return path == "/ui" or path.startswith("/ui/")
