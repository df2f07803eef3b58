"""Toolsets that wrap toolsets: ``Filtered``, ``Prefixed`` and ``Combined``.

Each implements the same ``Toolset`` protocol, so they stack:
``Combined([Prefixed(Filtered(fs, deny=["write_*"]), "fs_"), functions])``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from fnmatch import fnmatchcase
from typing import Any

from elevenfactor.errors import ToolNameConflict
from elevenfactor.tools._base import Tool, ToolContext, ToolResult, Toolset, aclose_toolset

__all__ = ["Combined", "Filtered", "Prefixed"]

log = logging.getLogger("elevenfactor.tools")


def _not_found(name: str) -> ToolResult:
    return ToolResult.error(f"No tool named {name!r}.", code="tool_not_found")


class Filtered:
    """Only the tools of ``inner`` that ``allow`` admits (all, when ``None``) and ``deny`` does
    not. Both take names or shell-style patterns (``"read_*"``). Calling a filtered-out tool is
    a ``tool_not_found`` result; the inner toolset never sees it."""

    def __init__(
        self, inner: Toolset, *, allow: Iterable[str] | None = None, deny: Iterable[str] = ()
    ) -> None:
        self.inner = inner
        self.allow = None if allow is None else tuple(allow)
        self.deny = tuple(deny)
        self._warned = False

    def __repr__(self) -> str:
        return f"Filtered({self.inner!r}, allow={self.allow!r}, deny={self.deny!r})"

    def permits(self, name: str) -> bool:
        """Whether ``name`` passes the filter."""
        if any(fnmatchcase(name, pattern) for pattern in self.deny):
            return False
        return self.allow is None or any(fnmatchcase(name, pattern) for pattern in self.allow)

    async def list_tools(self, ctx: ToolContext) -> list[Tool]:
        tools = await self.inner.list_tools(ctx)
        if self.allow is not None and not self._warned:
            self._warned = True
            names = {t.name for t in tools}
            missing = [p for p in self.allow if not any(fnmatchcase(n, p) for n in names)]
            if missing:
                log.warning(
                    "tools: %r: allow-list entries match no tool: %s (available: %s)",
                    self.inner,
                    ", ".join(missing),
                    ", ".join(sorted(names)),
                )
        return [t for t in tools if self.permits(t.name)]

    async def call_tool(self, name: str, args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        if not self.permits(name):
            return _not_found(name)
        return await self.inner.call_tool(name, args, ctx)

    async def aclose(self) -> None:
        await aclose_toolset(self.inner)


class Prefixed:
    """The tools of ``inner`` with ``prefix`` in front of their names (``fs_`` + ``read_file``),
    so toolsets with overlapping names can be combined."""

    def __init__(self, inner: Toolset, prefix: str) -> None:
        if not prefix:
            raise ValueError("Prefixed needs a non-empty prefix")
        self.inner = inner
        self.prefix = prefix

    def __repr__(self) -> str:
        return f"Prefixed({self.inner!r}, {self.prefix!r})"

    async def list_tools(self, ctx: ToolContext) -> list[Tool]:
        return [t.renamed(self.prefix + t.name) for t in await self.inner.list_tools(ctx)]

    async def call_tool(self, name: str, args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        if not name.startswith(self.prefix):
            return _not_found(name)
        result = await self.inner.call_tool(name[len(self.prefix) :], args, ctx)
        if result.error_code == "tool_not_found":
            return _not_found(name)  # name the tool as the model knows it
        return result

    async def aclose(self) -> None:
        await aclose_toolset(self.inner)


class Combined:
    """Several toolsets as one. Two toolsets offering the same name is a ``ToolNameConflict``
    (raised by ``list_tools``): prefix or filter one of them."""

    def __init__(self, toolsets: Sequence[Toolset]) -> None:
        self.toolsets = list(toolsets)
        self._routes: dict[str, Toolset] = {}

    def __repr__(self) -> str:
        return f"Combined({self.toolsets!r})"

    async def list_tools(self, ctx: ToolContext) -> list[Tool]:
        listings = await asyncio.gather(*(ts.list_tools(ctx) for ts in self.toolsets))
        routes: dict[str, Toolset] = {}
        tools: list[Tool] = []
        for toolset, listing in zip(self.toolsets, listings, strict=True):
            for tool in listing:
                if tool.name in routes:
                    raise ToolNameConflict(
                        f"tool name {tool.name!r} is offered by both {routes[tool.name]!r} "
                        f"and {toolset!r}",
                        hint="give one of them a prefix (Prefixed, or `prefix:` in config) "
                        "or filter the tool out (Filtered, or `deny:`)",
                        tool=tool.name,
                    )
                routes[tool.name] = toolset
                tools.append(tool)
        self._routes = routes
        return tools

    async def call_tool(self, name: str, args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        toolset = self._routes.get(name)
        if toolset is None:
            await self.list_tools(ctx)
            toolset = self._routes.get(name)
        if toolset is None:
            return _not_found(name)
        return await toolset.call_tool(name, args, ctx)

    async def aclose(self) -> None:
        results = await asyncio.gather(
            *(aclose_toolset(ts) for ts in self.toolsets), return_exceptions=True
        )
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise errors[0]
