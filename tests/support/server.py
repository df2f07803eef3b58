"""Run the gateway on a loopback port inside the test process (a uvicorn thread)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import uvicorn

from elevenfactor.config import ProjectConfig, Settings
from elevenfactor.server import Gateway, create_app
from tests.conftest import free_port

T = TypeVar("T")


@contextmanager
def running_gateway(settings: Settings, project: ProjectConfig) -> Iterator[tuple[str, Gateway]]:
    """Serve on a free port; yield the base URL (``http://127.0.0.1:N``) and the gateway."""
    port = free_port()
    app = create_app(settings.model_copy(update={"port": port}), project)
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_config=None,
        access_log=False,
        lifespan="on",
        loop="asyncio",
    )
    server = uvicorn.Server(config)
    errors: list[BaseException] = []

    async def serve() -> None:
        _LOOPS[id(app.state.gateway)] = asyncio.get_running_loop()
        await server.serve()

    def target() -> None:
        try:
            asyncio.run(serve())
        except BaseException as exc:  # pragma: no cover - surfaced below
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if errors or not thread.is_alive():
            raise RuntimeError(f"the gateway did not start: {errors}")
        if time.monotonic() > deadline:
            raise TimeoutError("the gateway did not start within 20 s")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}", app.state.gateway
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        _LOOPS.pop(id(app.state.gateway), None)


_LOOPS: dict[int, asyncio.AbstractEventLoop] = {}


async def on_gateway(gw: Gateway, job: Callable[[], Awaitable[T]]) -> T:
    """Run ``job()`` on the loop of the gateway ``running_gateway`` serves, and wait for it
    here: its store and recorder belong to that loop (an asyncio lock or future used from two
    loops at once can hang)."""
    loop = _LOOPS[id(gw)]
    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(_call(job), loop))


async def _call(job: Callable[[], Awaitable[T]]) -> T:
    return await job()
