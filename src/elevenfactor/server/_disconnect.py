"""Stop local-model work when the client goes away, and read the client's time budget.

A model run on this machine holds a scarce instance while it works, so a call that nobody waits
for any more must stop. Starlette does not cancel a handler when its client disconnects; around
calls that may reach a local model (and only those: remote routes pay nothing) the handler is
cancelled when the ASGI ``receive`` channel reports ``http.disconnect``, which stops generation.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable
from typing import TypeVar

from starlette.types import Receive, Scope

from elevenfactor.errors import ClientDisconnected, RequestError
from elevenfactor.server._auth import header

__all__ = ["TIMEOUT_HEADER", "client_timeout_from", "runs_locally", "unless_disconnected"]

T = TypeVar("T")

#: Seconds the client is willing to wait; shortens a local model's admission and generation.
TIMEOUT_HEADER = b"x-elevenfactor-timeout"

_LOCAL: dict[int, tuple[object, bool]] = {}


def runs_locally(model: object) -> bool:
    """Whether calls to ``model`` (a wrapper stack or route) may reach a local model.

    Walks ``inner`` and ``candidates`` once per model object and remembers the answer.
    """
    hit = _LOCAL.get(id(model))
    if hit is not None and hit[0] is model:
        return hit[1]
    found = _walk(model, set())
    if len(_LOCAL) >= 4096:  # registries were rebuilt many times: forget the old ones
        _LOCAL.clear()
    _LOCAL[id(model)] = (model, found)
    return found


def _walk(model: object, seen: set[int]) -> bool:
    if id(model) in seen:
        return False
    seen.add(id(model))
    if getattr(model, "runs_locally", False) is True:
        return True
    inner = getattr(model, "inner", None)
    if inner is not None and _walk(inner, seen):
        return True
    return any(_walk(c, seen) for c in getattr(model, "candidates", ()))


def client_timeout_from(scope: Scope) -> float | None:
    """The ``x-elevenfactor-timeout`` header in seconds, or None; 400 if it is not a number."""
    raw = header(scope, TIMEOUT_HEADER)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (value > 0 and math.isfinite(value)):
        raise RequestError(
            f"x-elevenfactor-timeout must be a positive number of seconds, got {raw!r}",
            code="invalid_header",
            param="x-elevenfactor-timeout",
        )
    return value


async def unless_disconnected(receive: Receive, work: Awaitable[T]) -> T:
    """Await ``work``; if the client disconnects first, cancel it and raise ``ClientDisconnected``.

    The request body must have been read already: the next ``receive`` then only reports the
    disconnect.
    """
    task = asyncio.current_task()
    assert task is not None
    gone = False

    async def watch() -> None:
        nonlocal gone
        while (await receive())["type"] != "http.disconnect":
            pass
        gone = True
        task.cancel()

    watcher = asyncio.create_task(watch())
    try:
        return await work
    except asyncio.CancelledError:
        if not gone:
            raise
        task.uncancel()
        raise ClientDisconnected(
            "the client closed the connection; the local model stopped working on the request"
        ) from None
    finally:
        watcher.cancel()
