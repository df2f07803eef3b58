"""Long-term memory over HTTP: list, search, write and forget, with the ownership of the trust
issue.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response

from elevenfactor.server._op_types import Operation

__all__ = ["OPERATIONS", "ROUTES"]

ROUTES: list[tuple[str, Callable[[Request], Awaitable[Response]], list[str]]] = []
OPERATIONS: tuple[Operation, ...] = ()
