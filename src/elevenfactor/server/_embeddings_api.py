"""POST /v1/embeddings: OpenAI-compatible embeddings from the configured embedder."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response

from elevenfactor.server._op_types import Operation

__all__ = ["OPERATIONS", "ROUTES"]

ROUTES: list[tuple[str, Callable[[Request], Awaitable[Response]], list[str]]] = []
OPERATIONS: tuple[Operation, ...] = ()
