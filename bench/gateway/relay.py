"""The floor: a bare Starlette + aiohttp relay with no features, run as its own process.

One Starlette endpoint forwards the POST body to the mock upstream with one shared aiohttp
``ClientSession`` and returns the upstream's answer; a ``text/event-stream`` answer is relayed
chunk by chunk as it arrives (Starlette's ``StreamingResponse``). No auth, no logging, no
validation, no records. It runs under the same ASGI server and settings as ``elevenfactor
serve`` (``elevenfactor.server._runner``: uvicorn, uvloop, httptools, no access log, keep-alive
30 s, no server/date headers), one process. Whatever elevenfactor adds beyond this is the cost
of its features and of its own code.

Run: ``python -m bench.gateway.relay --port 9001 --upstream http://127.0.0.1:9000/v1``.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import AsyncIterator

import aiohttp
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

__all__ = ["build_app", "main"]


def build_app(upstream: str) -> Starlette:
    """The relay app forwarding ``POST /v1/chat/completions`` to ``{upstream}/chat/completions``."""
    url = upstream.rstrip("/") + "/chat/completions"
    state: dict[str, aiohttp.ClientSession] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        state["session"] = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),
            timeout=aiohttp.ClientTimeout(total=None),
            skip_auto_headers=("User-Agent",),
        )
        try:
            yield
        finally:
            await state["session"].close()

    async def chat(request: Request) -> Response:
        body = await request.body()
        resp = await state["session"].post(
            url, data=body, headers={"Content-Type": "application/json"}
        )
        ctype = resp.headers.get("Content-Type", "application/json")
        if ctype.startswith("text/event-stream"):

            async def relay() -> AsyncIterator[bytes]:
                try:
                    async for piece in resp.content.iter_any():
                        yield piece
                finally:
                    resp.release()

            return StreamingResponse(relay(), status_code=resp.status, media_type=ctype)
        data = await resp.read()
        resp.release()
        return Response(data, status_code=resp.status, media_type=ctype)

    async def healthz(request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
        ],
        lifespan=lifespan,
    )


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--upstream", required=True, help="base URL, e.g. http://127.0.0.1:9000/v1")
    args = ap.parse_args(argv)
    # The settings of elevenfactor.server._runner.serve, minus the app-specific parts.
    config = uvicorn.Config(
        build_app(args.upstream),
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_config=None,
        lifespan="on",
        timeout_keep_alive=30,
        server_header=False,
        date_header=False,
    )
    with contextlib.suppress(KeyboardInterrupt):
        uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
