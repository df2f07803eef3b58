"""How an MCP call hears about the agent run it waits for: progress notifications (one per new
journal step) and log messages at the levels the caller asked for (``logging/setLevel`` on a
session before protocol 2026-07-28, the request's own opt-in after)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import mcp_types as types
from mcp.server.connection import allowed_log_levels
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel.server import Server
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from elevenfactor.runtime import RunInfo

__all__ = [
    "LEVELS",
    "CallReporter",
    "RunReporter",
    "Session",
    "levels_for",
    "report_end",
    "session",
]

LEVELS: tuple[types.LoggingLevel, ...] = (
    "debug",
    "info",
    "notice",
    "warning",
    "error",
    "critical",
    "alert",
    "emergency",
)


class RunReporter(Protocol):
    """Who hears about an agent run while a call waits for it."""

    @property
    def wants_steps(self) -> bool:
        """Whether ``progress`` is heard (worth reading the journal for)."""

    async def progress(self, done: int, message: str, total: int | None = None) -> None:
        """``done`` steps so far; ``total`` once the run has ended."""

    async def log(self, level: types.LoggingLevel, data: dict[str, Any]) -> None:
        """A log entry, sent if the caller asked for that level."""


async def report_end(reporter: RunReporter, info: RunInfo, steps: int) -> None:
    """The last progress (the end counts as one more step) and the run's end in the log."""
    event = {"run_id": info.id, "program": info.program, "status": info.status}
    if not info.finished:
        await reporter.log("notice", {"event": "run_waiting", **event})
        return
    await reporter.progress(steps + 1, f"run {info.status}", total=steps + 1)
    if info.status == "succeeded":
        await reporter.log("info", {"event": "run_finished", **event})
    else:
        await reporter.log("error", {"event": "run_finished", **event, "error": info.error_dict()})


@dataclass
class Session:
    """What one MCP session remembers: the log level it set (``logging/setLevel``)."""

    log_level: types.LoggingLevel | None = None


@asynccontextmanager
async def session(_: Server[Session]) -> AsyncIterator[Session]:
    # Entered once per ``Server.run`` (a stdio connection); the HTTP session manager enters
    # it once for every request, so over HTTP it is never written (see ``on_set_level``).
    yield Session()


@dataclass
class CallReporter:
    """Progress and log notifications on one request's own stream."""

    ctx: ServerRequestContext[Session]
    levels: frozenset[types.LoggingLevel]

    @property
    def wants_steps(self) -> bool:
        return "progress_token" in (self.ctx.meta or {})

    async def progress(self, done: int, message: str, total: int | None = None) -> None:
        await self.ctx.session.report_progress(done, total, message)

    async def log(self, level: types.LoggingLevel, data: dict[str, Any]) -> None:
        if level in self.levels:
            note = types.LoggingMessageNotification(
                params=types.LoggingMessageNotificationParams(
                    level=level, logger="elevenfactor.mcp", data=data
                )
            )
            await self.ctx.session.send_notification(note, related_request_id=self.ctx.request_id)


def levels_for(ctx: ServerRequestContext[Session]) -> frozenset[types.LoggingLevel]:
    """The log levels this request may be sent: on 2026-07-28+ its own ``_meta`` opt-in, before
    that the session's ``logging/setLevel`` (none until one is set)."""
    if ctx.protocol_version in MODERN_PROTOCOL_VERSIONS:
        return allowed_log_levels(ctx.protocol_version, ctx.meta)
    level = ctx.lifespan_context.log_level
    return frozenset() if level is None else frozenset(LEVELS[LEVELS.index(level) :])
