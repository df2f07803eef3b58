"""``SSEResponse``: a lean server-sent-events response for the hot path.

Starlette's StreamingResponse spawns an anyio task group per response; at thousands of chunks a
second that shows. This one writes the stream from the request's own task and watches for the
client going away with one plain task, cancelling the stream (and so the upstream call) then.
The body is a writer coroutine that sends its chunks itself (``more_body`` messages), not a
generator the response iterates: one generator hop fewer for every chunk.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from starlette.types import Receive, Scope, Send

__all__ = ["SSEResponse"]


class SSEResponse:
    """An ASGI response whose ``write(send)`` sends the body's ``http.response.body`` messages
    (each with ``more_body``); the response ends the body after it."""

    def __init__(
        self,
        write: Callable[[Send], Awaitable[None]],
        headers: dict[str, str],
        abandon: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.write = write
        self.abandon = abandon  # run when the body can never be written (the start failed)
        self.headers = [
            (b"content-type", b"text/event-stream"),
            (b"cache-control", b"no-cache"),
            *((k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        task = asyncio.current_task()
        assert task is not None
        gone = False

        async def watch() -> None:
            nonlocal gone
            while (await receive())["type"] != "http.disconnect":
                pass
            gone = True
            task.cancel()

        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.headers})
        except BaseException:
            if self.abandon is not None:
                await self.abandon()
            raise
        watcher = asyncio.create_task(watch())
        try:
            await self.write(send)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if not gone:
                raise
            task.uncancel()
        finally:
            watcher.cancel()
