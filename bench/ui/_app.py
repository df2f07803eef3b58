"""The gateway app in-process over a store (its lifespan run by hand: httpx's ASGI transport
does not), an httpx client on it, and a tap on the store that records the SQL one request runs
(statements of the request's own task only, not the background sealer's or recorder's)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from elevenfactor.config import Settings, parse_project
from elevenfactor.server import create_app
from elevenfactor.store import Store

__all__ = ["PROJECT", "InProcess", "SqlTap", "in_process"]

PROJECT: dict[str, Any] = {
    "providers": {"t": {"type": "test"}},
    "models": {
        name: {"provider": "t", "model": name}
        for name in ("gpt-4o-mini", "gpt-4o", "claude-haiku", "claude-sonnet", "smollm2-135m")
    },
}
"""Models named as the seeded calls' deployments (on the in-library test provider: no page
may call a model, and none does)."""


class _TxTap:
    """A transaction of the store, recording its statements through the tap."""

    def __init__(self, tap: SqlTap, tx: Any) -> None:
        self._tap, self._tx = tap, tx

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tx, name)

    async def execute(self, sql: str, params: Any = ()) -> Any:
        self._tap.note("execute", sql, params)
        return await self._tx.execute(sql, params)

    async def executemany(self, sql: str, rows: Any) -> Any:
        self._tap.note("execute", sql, ())
        return await self._tx.executemany(sql, rows)

    async def fetchone(self, sql: str, params: Any = ()) -> Any:
        self._tap.note("fetchone", sql, params)
        return await self._tx.fetchone(sql, params)

    async def fetchall(self, sql: str, params: Any = ()) -> Any:
        self._tap.note("fetchall", sql, params)
        return await self._tx.fetchall(sql, params)


@dataclass(slots=True)
class SqlTap:
    """Wraps a store's statements (``fetchall``/``fetchone``/``execute``, and those of its
    transactions) to record what one task runs."""

    store: Store
    task: asyncio.Task[Any] | None = None
    log: list[tuple[str, str, tuple[Any, ...]]] = field(default_factory=list)

    def note(self, method: str, sql: str, params: Any) -> None:
        """Record a statement if the recording task runs it."""
        if self.task is not None and asyncio.current_task() is self.task:
            self.log.append((method, sql, tuple(params)))

    def install(self) -> None:
        """Replace the methods on the store instance."""
        for name in ("fetchall", "fetchone", "execute"):
            original = getattr(self.store, name)

            async def tapped(
                sql: str, params: Any = (), _orig: Any = original, _name: str = name
            ) -> Any:
                self.note(_name, sql, params)
                return await _orig(sql, params)

            setattr(self.store, name, tapped)
        begin = self.store.transaction

        @contextlib.asynccontextmanager
        async def transaction() -> AsyncIterator[Any]:
            async with begin() as tx:
                yield _TxTap(self, tx)

        setattr(self.store, "transaction", transaction)  # noqa: B010

    @contextlib.contextmanager
    def recording(self) -> Any:
        """Record the statements of the current task inside the block."""
        self.log = []
        self.task = asyncio.current_task()
        try:
            yield self.log
        finally:
            self.task = None


@dataclass(slots=True)
class InProcess:
    """The app, a client per principal, the gateway's store and its tap."""

    client: httpx.AsyncClient
    store: Store
    tap: SqlTap
    headers: dict[str, dict[str, str]]


@contextlib.asynccontextmanager
async def in_process(url: str, workdir: Path, secrets: dict[str, str]) -> AsyncIterator[InProcess]:
    """The gateway on ``url`` (no worker, no housekeeping, quiet logs), signed in per user
    with ``Authorization: Bearer``."""
    logging.getLogger("elevenfactor").setLevel(logging.WARNING)
    settings = Settings(
        database_url=url,
        data_dir=workdir,
        dev=False,
        in_process_worker=False,
        purge_interval=0,
        log_level="warning",
    )
    app = create_app(settings, parse_project(PROJECT))
    starlette = app.app
    async with starlette.router.lifespan_context(starlette):
        gw = app.state.gateway
        assert gw.store is not None
        tap = SqlTap(gw.store)
        tap.install()
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://127.0.0.1", timeout=60
        ) as client:
            headers = {name: {"Authorization": f"Bearer {s}"} for name, s in secrets.items()}
            yield InProcess(client, gw.store, tap, headers)
