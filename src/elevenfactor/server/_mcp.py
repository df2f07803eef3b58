"""elevenfactor as an MCP server: its agents (each a tool that runs the agent durably) and the
tools the project selects, over streamable HTTP at ``/mcp`` (stateless, so any replica can
answer) and over stdio (``elevenfactor mcp serve``)."""

from __future__ import annotations

import asyncio
import time
from fnmatch import fnmatchcase
from typing import Any

import mcp_types as types
import orjson
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel.server import Server

from elevenfactor._version import __version__
from elevenfactor.config import McpServerSettings
from elevenfactor.runtime import Runtime, Worker, get_run, run_result, submit_run
from elevenfactor.store import Store
from elevenfactor.tools import Tool, ToolContext

__all__ = ["McpBridge", "build_mcp_server"]

_AGENT_INPUT = {
    "type": "object",
    "properties": {
        "input": {"type": "string", "description": "The task or question for the agent."}
    },
    "required": ["input"],
}


class McpBridge:
    """Answers MCP list/call requests from the runtime: agents run as durable runs; selected
    toolset tools are called directly."""

    def __init__(
        self,
        store: Store,
        runtime: Runtime,
        settings: McpServerSettings,
        worker: Worker | None = None,
    ) -> None:
        self.store = store
        self.runtime = runtime
        self.settings = settings
        self.worker = worker

    def _agents(self) -> list[str]:
        names = sorted(self.runtime.agents)
        if self.settings.agents is not None:
            names = [n for n in names if n in self.settings.agents]
        return names

    async def _tools(self) -> dict[str, tuple[str, Tool]]:
        exposed: dict[str, tuple[str, Tool]] = {}
        if not self.settings.tools:
            return exposed
        for ts_name, toolset in self.runtime.toolsets.items():
            for tool in await toolset.list_tools(ToolContext(caller="mcp")):
                full = f"{ts_name}.{tool.name}"
                if any(fnmatchcase(full, p) for p in self.settings.tools):
                    exposed[full] = (ts_name, tool)
        return exposed

    async def list_tools(self) -> list[types.Tool]:
        """Agents first, then the selected tools."""
        out = []
        for name in self._agents():
            spec = self.runtime.agents[name]
            out.append(
                types.Tool(
                    name=name,
                    input_schema=_AGENT_INPUT,
                    description=spec.description
                    or f"Run the {name} agent durably and return its answer.",
                )
            )
        for full, (_, tool) in (await self._tools()).items():
            out.append(
                types.Tool(
                    name=full,
                    description=tool.description,
                    input_schema=tool.parameters,
                    annotations=types.ToolAnnotations(
                        read_only_hint=tool.risk == "read",
                        destructive_hint=tool.risk == "destructive",
                    ),
                )
            )
        return out

    async def call_tool(self, name: str, arguments: dict[str, Any]) -> types.CallToolResult:
        """Run an agent, or call a selected tool."""
        if name in self._agents():
            return await self._run_agent(name, arguments)
        exposed = await self._tools()
        if name not in exposed:
            return _text(f"Unknown tool {name!r}.", error=True)
        ts_name, tool = exposed[name]
        result = await self.runtime.toolsets[ts_name].call_tool(
            tool.name, arguments, ToolContext(caller="mcp")
        )
        return types.CallToolResult(
            content=[types.TextContent(type="text", text=result.content)],
            structured_content=result.structured if isinstance(result.structured, dict) else None,
            is_error=result.is_error,
        )

    async def _run_agent(self, name: str, arguments: dict[str, Any]) -> types.CallToolResult:
        task = arguments.get("input")
        if not isinstance(task, str):
            return _text("`input` (a string) is required.", error=True)
        run_id = await submit_run(self.store, name, {"input": task})
        if self.worker is not None:
            self.worker.notify()
        deadline = time.monotonic() + self.settings.wait_seconds
        info = await get_run(self.store, run_id)
        while not info.finished and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            info = await get_run(self.store, run_id)
        summary: dict[str, Any] = {"run_id": run_id, "status": info.status}
        if info.status == "succeeded":
            result = await run_result(self.store, info)
            output = result.get("output") if isinstance(result, dict) else result
            summary["output"] = output
            text = output if isinstance(output, str) else orjson.dumps(output).decode()
            return _text(text, structured=summary)
        if info.finished:
            err = info.error_dict() or {}
            summary["error"] = err
            return _text(
                f"run {run_id} {info.status}: {err.get('message', '')}",
                structured=summary,
                error=True,
            )
        return _text(
            f"run {run_id} is still {info.status} (it may be waiting for an approval);"
            f" follow it at /v1/runs/{run_id}",
            structured=summary,
        )


def _text(
    text: str, *, structured: dict[str, Any] | None = None, error: bool = False
) -> types.CallToolResult:
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=text)],
        structured_content=structured,
        is_error=error,
    )


def build_mcp_server(bridge: McpBridge) -> Server[Any]:
    """A low-level MCP server whose tools come from ``bridge``."""

    async def on_list_tools(
        ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return types.ListToolsResult(tools=await bridge.list_tools())

    async def on_call_tool(
        ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        return await bridge.call_tool(params.name, dict(params.arguments or {}))

    return Server(
        "elevenfactor",
        version=__version__,
        instructions="Agents run durably: each call is a journaled run.",
        on_list_tools=on_list_tools,
        on_call_tool=on_call_tool,
    )
