"""Per-call timeouts: ``WithTimeout`` for any toolset, and the helper every toolset shares."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from elevenfactor.tools._base import Tool, ToolContext, ToolResult, Toolset, aclose_toolset

__all__ = ["WithTimeout", "call_with_timeout"]


async def call_with_timeout(
    name: str, seconds: float | None, call: Callable[[], Awaitable[ToolResult]]
) -> ToolResult:
    """Run ``call``; past ``seconds`` cancel it and return an ``is_error`` result with code
    ``tool_timeout``. A ``TimeoutError`` the tool raises itself is not mistaken for ours."""
    if seconds is None:
        return await call()
    scope = asyncio.timeout(seconds)
    try:
        async with scope:
            return await call()
    except TimeoutError:
        if not scope.expired():
            raise  # the tool's own TimeoutError, not our deadline
    return ToolResult.error(
        f"Tool {name!r} did not finish within {seconds:g} s and was stopped. "
        "Try smaller inputs or a different approach.",
        code="tool_timeout",
    )


class WithTimeout:
    """Bound every call of ``inner`` to ``seconds`` (``per_tool`` overrides by name). With
    ``seconds=None`` a tool's own ``Tool.timeout`` applies. ``list_tools`` reports the bound each
    tool now has."""

    def __init__(
        self,
        inner: Toolset,
        seconds: float | None = None,
        *,
        per_tool: Mapping[str, float] | None = None,
    ) -> None:
        self.inner = inner
        self.seconds = seconds
        self.per_tool = dict(per_tool or {})
        self._declared: dict[str, float | None] = {}

    def __repr__(self) -> str:
        return f"WithTimeout({self.inner!r}, {self.seconds!r})"

    def _bound(self, name: str, declared: float | None) -> float | None:
        return self.per_tool.get(name, self.seconds if self.seconds is not None else declared)

    async def list_tools(self, ctx: ToolContext) -> list[Tool]:
        tools = await self.inner.list_tools(ctx)
        self._declared = {t.name: t.timeout for t in tools}
        return [dataclasses.replace(t, timeout=self._bound(t.name, t.timeout)) for t in tools]

    async def call_tool(self, name: str, args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        if self.seconds is None and name not in self.per_tool and name not in self._declared:
            await self.list_tools(ctx)  # the tool's own timeout is needed
        seconds = self._bound(name, self._declared.get(name))
        return await call_with_timeout(name, seconds, lambda: self.inner.call_tool(name, args, ctx))

    async def aclose(self) -> None:
        await aclose_toolset(self.inner)
