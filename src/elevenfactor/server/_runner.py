"""Serving with uvicorn and a graceful shutdown.

Before serving, ``prepare_store`` migrates a brand-new embedded SQLite database and refuses any
other database with pending migrations. A library error while the app starts (a configuration
error, say) stops the server and is raised from ``serve``, not logged as a traceback.

On SIGTERM: readiness flips and new requests get 503 for ``drain_seconds`` (so a load balancer
stops sending), then the listener closes and in-flight requests and streams get up to
``shutdown_timeout`` seconds to finish before the process exits. SIGINT skips the drain delay;
a second signal exits at once.
"""

from __future__ import annotations

import gc
import logging
import signal
import socket
import sys
import time
from types import FrameType

import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from elevenfactor.config import ProjectConfig, Settings
from elevenfactor.errors import ElevenFactorError, MigrationRequired
from elevenfactor.observe import log_event
from elevenfactor.observe._tracing import setup_tracing, shutdown_tracing
from elevenfactor.server._app import create_app
from elevenfactor.server._state import Gateway
from elevenfactor.store import Store, migrate, open_store, pending

__all__ = ["prepare_store", "serve"]

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

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        # Everything loaded by now (modules, config, models, the store) lives as long as the
        # process: move it out of the collector's sight, so the full collections that happen
        # while serving scan only what requests allocate (shorter pauses: the gateway's p99).
        gc.collect()
        gc.freeze()

    async def on_tick(self, counter: int) -> bool:
        if self._drain_until is not None and time.monotonic() >= self._drain_until:
            self.should_exit = True
        return await super().on_tick(counter)


async def _is_new(store: Store) -> bool:
    """A SQLite database with no tables yet (or only an empty migrations table)."""
    if store.dialect != "sqlite":
        return False
    rows = await store.fetchall(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
    )
    tables = {r[0] for r in rows}
    if not tables:
        return True
    if tables != {"schema_migrations"}:
        return False
    return await store.fetchone("SELECT 1 FROM schema_migrations LIMIT 1") is None


async def prepare_store(url: str, *, auto_migrate: bool = False) -> list[str]:
    """Make the store at ``url`` ready to serve; return the migrations applied now.

    A brand-new embedded SQLite database is migrated on first start, as is any database when
    ``auto_migrate``; a database that already holds data (and every PostgreSQL database) with
    pending migrations raises ``MigrationRequired``: migrating it is an operator's decision.
    """
    store = await open_store(url)
    try:
        ran = await migrate(store) if auto_migrate or await _is_new(store) else []
        missing = await pending(store)
    finally:
        await store.close()
    if missing:
        raise MigrationRequired(
            f"the database is missing migrations: {', '.join(missing)}",
            hint="run `elevenfactor migrate` (or `elevenfactor serve --migrate`)",
        )
    return ran


class _StartupGuard:
    """Keeps a library error raised while the app starts (in its lifespan) for ``serve`` to
    raise once uvicorn has stopped, instead of letting uvicorn log its traceback."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.error: ElevenFactorError | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def quiet(message: Message) -> None:
            # Starlette sends startup.failed (with the traceback) from inside its except block.
            failing = sys.exc_info()[1]
            if message["type"] == "lifespan.startup.failed" and isinstance(
                failing, ElevenFactorError
            ):
                self.error = failing
                message = {"type": "lifespan.startup.failed", "message": ""}
            await send(message)

        try:
            await self.app(scope, receive, quiet)
        except ElevenFactorError as exc:
            if exc is not self.error:
                raise


def serve(settings: Settings, project: ProjectConfig) -> None:
    """Run the gateway on ``settings.host:settings.port`` until a signal stops it.

    Raises the library error (``ConfigError``, ``MigrationRequired``...) that stopped the app
    from starting.
    """
    app = create_app(settings, project)
    guard = _StartupGuard(app.app)
    app.lifespan = guard  # only the lifespan goes through the guard, not every request
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
    # A socket bound by the supervising parent and shared by several server processes.
    sockets = None if settings.listen_fd is None else [socket.socket(fileno=settings.listen_fd)]
    # Tracing (only when OTEL_* asks for it); its shutdown flushes within a bounded time.
    traced = setup_tracing(content=settings.trace_content and settings.record_payloads)
    try:
        server.run(sockets=sockets)
    except SystemExit:  # uvicorn exits when the app fails to start
        if guard.error is None:
            raise
    finally:
        if traced:
            shutdown_tracing()
    if guard.error is not None:
        raise guard.error


def listening_socket(host: str, port: int) -> socket.socket:
    """A bound, listening socket that child processes can inherit."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock
