"""Run the gateway on a loopback port inside the test process (a uvicorn thread)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from elevenfactor.config import ProjectConfig, Settings
from elevenfactor.server import Gateway, create_app
from tests.conftest import free_port


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

    def target() -> None:
        try:
            asyncio.run(server.serve())
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
