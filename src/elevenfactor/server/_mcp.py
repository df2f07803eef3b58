"""elevenfactor as an MCP server: its agents (each a tool that runs the agent durably) and the
tools the project selects, over streamable HTTP at ``/mcp`` (stateless, so any replica can
answer) and over stdio (``elevenfactor mcp serve``).

Every request acts for a ``Principal``: over HTTP the API key's user (``GatewayApp`` puts it in
the ASGI scope under ``PRINCIPAL_SCOPE_KEY``; the handlers read it from the request the SDK
hands them), over stdio the user ``mcp serve --as`` names. Agent runs are owned by it and read
back through its scope. Tool calls follow the approval policy of ``McpTools``: a gated call is a
durable ``mcp.tool`` run owned by the caller; others go straight to the toolset."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import mcp_types as types
import orjson
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel.server import Server

from elevenfactor._version import __version__
from elevenfactor.config import McpServerSettings
from elevenfactor.errors import AuthenticationFailed, ElevenFactorError
from elevenfactor.governance import Principal
from elevenfactor.runtime import (
    RunInfo,
    Runtime,
    Worker,
    get_run,
    list_approvals,
    run_result,
    submit_run,
)
from elevenfactor.runtime._mcp_tools import MCP_TOOL, McpTools
from elevenfactor.store import Store
from elevenfactor.tools import ToolContext

__all__ = ["PRINCIPAL_SCOPE_KEY", "McpBridge", "build_mcp_server"]

PRINCIPAL_SCOPE_KEY = "elevenfactor.principal"
"""Where ``GatewayApp`` leaves the authenticated principal in the ASGI scope of ``/mcp``."""

_AGENT_INPUT = {
    "type": "object",
    "properties": {
        "input": {"type": "string", "description": "The task or question for the agent."}
    },
    "required": ["input"],
}


class McpBridge:
    """Answers MCP list/call requests from the runtime, for a principal: agents run as durable
    runs it owns; selected toolset tools are called directly, or (when a rule gates the call)
    as a durable ``mcp.tool`` run it owns."""

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
        self.tools = McpTools(settings, runtime.toolsets, runtime.agents)

    def _agents(self) -> list[str]:
        names = sorted(self.runtime.agents)
        if self.settings.agents is not None:
            names = [n for n in names if n in self.settings.agents]
        return names

    async def list_tools(self, principal: Principal) -> list[types.Tool]:
        """Agents first, then the selected tools (destructive ones only when governed or
        allowed)."""
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
        for full, (_, tool) in (await self.tools.exposed(_tool_context(principal))).items():
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

    async def call_tool(
        self, name: str, arguments: dict[str, Any], principal: Principal
    ) -> types.CallToolResult:
        """Run an agent, or call a selected tool, on behalf of ``principal``."""
        if name in self._agents():
            return await self._run_agent(name, arguments, principal)
        exposed = await self.tools.exposed(_tool_context(principal))
        if name not in exposed:
            return _text(f"Unknown tool {name!r}.", error=True)
        ts_name, tool = exposed[name]
        if self.tools.rule(ts_name, tool, arguments) is not None:
            return await self._run_gated(name, arguments, principal)
        result = await self.runtime.toolsets[ts_name].call_tool(
            tool.name, arguments, _tool_context(principal)
        )
        return types.CallToolResult(
            content=[types.TextContent(type="text", text=result.content)],
            structured_content=result.structured if isinstance(result.structured, dict) else None,
            is_error=result.is_error,
        )

    async def _submit(self, program: str, payload: Any, principal: Principal) -> RunInfo:
        """Submit a run owned by ``principal`` and wait for it up to ``wait_seconds``."""
        run_id = await submit_run(self.store, program, payload, owner=principal)
        if self.worker is not None:
            self.worker.notify()
        deadline = time.monotonic() + self.settings.wait_seconds
        info = await get_run(self.store, run_id, principal)
        while not info.finished and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            info = await get_run(self.store, run_id, principal)
        return info

    async def _run_agent(
        self, name: str, arguments: dict[str, Any], principal: Principal
    ) -> types.CallToolResult:
        task = arguments.get("input")
        if not isinstance(task, str):
            return _text("`input` (a string) is required.", error=True)
        info = await self._submit(name, {"input": task}, principal)
        summary: dict[str, Any] = {"run_id": info.id, "status": info.status}
        if info.status == "succeeded":
            result = await run_result(self.store, info)
            output = result.get("output") if isinstance(result, dict) else result
            summary["output"] = output
            text = output if isinstance(output, str) else orjson.dumps(output).decode()
            return _text(text, structured=summary)
        if info.finished:
            return _failed(info, summary)
        return _text(
            f"run {info.id} is still {info.status} (it may be waiting for an approval);"
            f" follow it at /v1/runs/{info.id}",
            structured=summary,
        )

    async def _run_gated(
        self, name: str, arguments: dict[str, Any], principal: Principal
    ) -> types.CallToolResult:
        info = await self._submit(MCP_TOOL, {"tool": name, "arguments": arguments}, principal)
        summary: dict[str, Any] = {"run_id": info.id, "status": info.status}
        if info.status == "succeeded":
            result = await run_result(self.store, info)
            assert isinstance(result, dict)
            summary["decision"] = result.get("decision")
            if isinstance(result.get("structured"), dict):
                summary["structured"] = result["structured"]
            return _text(str(result["content"]), structured=summary, error=bool(result["is_error"]))
        if info.finished:
            return _failed(info, summary)
        pending = await list_approvals(self.store, run_id=info.id, principal=principal)
        summary["approval_ids"] = [a.id for a in pending]
        return _text(
            f"{name} needs a reviewer's approval: run {info.id} is {info.status}"
            f" (approval {', '.join(summary['approval_ids']) or 'pending'});"
            f" follow it at /v1/runs/{info.id}",
            structured=summary,
        )


def _tool_context(principal: Principal) -> ToolContext:
    return ToolContext(caller="mcp", metadata={"principal": principal.actor()})


def _failed(info: RunInfo, summary: dict[str, Any]) -> types.CallToolResult:
    err = info.error_dict() or {}
    summary["error"] = err
    return _text(
        f"run {info.id} {info.status}: {err.get('message', '')}", structured=summary, error=True
    )


def _text(
    text: str, *, structured: dict[str, Any] | None = None, error: bool = False
) -> types.CallToolResult:
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=text)],
        structured_content=structured,
        is_error=error,
    )


def build_mcp_server(bridge: McpBridge, principal: Principal | None = None) -> Server[Any]:
    """A low-level MCP server whose tools come from ``bridge``. Each request acts for the
    principal in its HTTP request's scope (see ``PRINCIPAL_SCOPE_KEY``), else for
    ``principal`` (stdio); with neither, it is refused."""

    def who(ctx: ServerRequestContext[Any]) -> Principal:
        scope = getattr(ctx.request, "scope", None)
        found = scope.get(PRINCIPAL_SCOPE_KEY) if isinstance(scope, dict) else None
        if isinstance(found, Principal):
            return found
        if principal is not None:
            return principal
        raise AuthenticationFailed("this MCP request was not authenticated")

    async def on_list_tools(
        ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return types.ListToolsResult(tools=await bridge.list_tools(who(ctx)))

    async def on_call_tool(
        ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        try:
            caller = who(ctx)
        except ElevenFactorError as exc:
            return _text(str(exc), error=True)
        return await bridge.call_tool(params.name, dict(params.arguments or {}), caller)

    return Server(
        "elevenfactor",
        version=__version__,
        instructions="Agents run durably: each call is a journaled run. Tool calls that need"
        " a reviewer's approval run durably too, owned by the caller.",
        on_list_tools=on_list_tools,
        on_call_tool=on_call_tool,
    )
