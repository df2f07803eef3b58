"""``SSEResponse``: a lean server-sent-events response for the hot path.

Starlette's StreamingResponse spawns an anyio task group per response; at thousands of chunks a
second that shows. This one writes the stream from the request's own task and watches for the
client going away with one plain task, cancelling the stream (and so the upstream call) then.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

from starlette.types import Receive, Scope, Send

__all__ = ["SSEResponse"]


class SSEResponse:
    """An ASGI response that sends ``body``'s byte strings as they come."""

    def __init__(self, body: AsyncGenerator[bytes, None], headers: dict[str, str]) -> None:
        self.body = body
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

        await send({"type": "http.response.start", "status": 200, "headers": self.headers})
        watcher = asyncio.create_task(watch())
        try:
            async for chunk in self.body:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if not gone:
                raise
            task.uncancel()
        finally:
            watcher.cancel()
            await self.body.aclose()
