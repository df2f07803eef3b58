"""Serving with uvicorn and a graceful shutdown.

On SIGTERM: readiness flips and new requests get 503 for ``drain_seconds`` (so a load balancer
stops sending), then the listener closes and in-flight requests and streams get up to
``shutdown_timeout`` seconds to finish before the process exits. SIGINT skips the drain delay;
a second signal exits at once.
"""

from __future__ import annotations

import logging
import signal
import socket
import time
from types import FrameType

import uvicorn

from elevenfactor.config import ProjectConfig, Settings
from elevenfactor.observe import log_event
from elevenfactor.server._app import create_app
from elevenfactor.server._state import Gateway

__all__ = ["serve"]

logger = logging.getLogger("elevenfactor.server")


class _Server(uvicorn.Server):
    gateway: Gateway
    drain_seconds: float
    _drain_until: float | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Not re-raised after shutdown: a clean graceful stop exits with status 0.
        if self.gateway.draining:
            if self.should_exit:
                self.force_exit = True
            self.should_exit = True
            return
        self.gateway.start_draining()
        if sig == signal.SIGTERM and self.drain_seconds > 0:
            self._drain_until = time.monotonic() + self.drain_seconds
        else:
            self.should_exit = True

    async def on_tick(self, counter: int) -> bool:
        if self._drain_until is not None and time.monotonic() >= self._drain_until:
            self.should_exit = True
        return await super().on_tick(counter)


def serve(settings: Settings, project: ProjectConfig) -> None:
    """Run the gateway on ``settings.host:settings.port`` until a signal stops it."""
    app = create_app(settings, project)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_config=None,
        lifespan="on",
        timeout_graceful_shutdown=max(1, round(settings.shutdown_timeout)),
        timeout_keep_alive=30,
        server_header=False,
        date_header=False,
    )
    server = _Server(config)
    server.gateway = app.state.gateway
    server.drain_seconds = settings.drain_seconds
    if settings.dev:
        log_event(
            logger,
            "dev_mode",
            warning="dev mode: unauthenticated requests from loopback are accepted",
        )
    log_event(logger, "serving", host=settings.host, port=settings.port)
    if settings.listen_fd is not None:
        # A socket bound by the supervising parent and shared by several server processes.
        server.run(sockets=[socket.socket(fileno=settings.listen_fd)])
    else:
        server.run()


def listening_socket(host: str, port: int) -> socket.socket:
    """A bound, listening socket that child processes can inherit."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock
