"""elevenfactor as an MCP server: its agents (each a tool that runs the agent durably) and the
tools the project selects, over streamable HTTP at ``/mcp`` (stateless, so any replica can
answer) and over stdio (``elevenfactor mcp serve``).

Every request acts for a ``Principal``: over HTTP the API key's user (``GatewayApp`` puts it in
the ASGI scope under ``PRINCIPAL_SCOPE_KEY``; the handlers read it from the request the SDK
hands them), over stdio the user ``mcp serve --as`` names. Agent runs are owned by it and read
back through its scope. Tool calls follow the approval policy of ``McpTools``: a gated call is a
durable ``mcp.tool`` run owned by the caller; others go straight to the toolset.

Besides tools it serves resources (``agent://NAME`` cards; ``run://ID``, the result of a finished
run the caller owns), an honest empty prompt list, ``logging/setLevel`` and progress: an agent
call that carries a ``progressToken`` hears of each new journal step while it waits. Those
notifications ride the call's own response stream: stdio, or an SSE response. The gateway answers
``/mcp`` with JSON responses, where the SDK drops them (the call itself is unaffected)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import mcp_types as types
import orjson
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel.server import Server
from mcp.shared.exceptions import MCPError

from elevenfactor._version import __version__
from elevenfactor.config import McpServerSettings
from elevenfactor.errors import AuthenticationFailed, ElevenFactorError, RunNotFound
from elevenfactor.governance import Principal
from elevenfactor.observe._trace_mcp import traced_tool_call
from elevenfactor.runtime import (
    RunInfo,
    Runtime,
    Worker,
    describe_steps,
    get_run,
    list_approvals,
    run_result,
    submit_run,
)
from elevenfactor.runtime._mcp_tools import MCP_TOOL, McpTools
from elevenfactor.server._mcp_notify import (
    CallReporter,
    RunReporter,
    Session,
    levels_for,
    report_end,
    session,
)
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
RESOURCE_NOT_FOUND = -32002
"""The JSON-RPC error code MCP gives an unknown (or unreadable) resource."""


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

    def agent_card(self, name: str) -> dict[str, Any]:
        """What a client may know about an exposed agent (not its instructions)."""
        spec = self.runtime.agents[name]
        return {
            "name": name,
            "description": spec.description,
            "input_schema": _AGENT_INPUT,
            "output_schema": spec.output_schema,
            "model": spec.model,
            "tools": [ref.model_dump(exclude_none=True) for ref in spec.tools],
            "delegates": list(spec.delegates),
            "handoffs": list(spec.handoffs),
        }

    def list_resources(self) -> list[types.Resource]:
        """An ``agent://NAME`` card for each exposed agent."""
        return [
            types.Resource(
                name=name,
                uri=f"agent://{name}",
                description=f"The {name} agent's card: what it does, its input and its tools.",
                mime_type="application/json",
            )
            for name in self._agents()
        ]

    async def read_resource(self, uri: str, principal: Principal) -> str:
        """The JSON text of ``agent://NAME`` or of ``run://ID`` (a finished run ``principal``
        may see); an ``MCPError`` for anything else."""
        scheme, _, rest = uri.partition("://")
        if scheme == "agent" and rest in self._agents():
            return orjson.dumps(self.agent_card(rest)).decode()
        if scheme != "run" or not rest:
            raise MCPError(RESOURCE_NOT_FOUND, f"no resource {uri}", {"uri": uri})
        try:
            info = await get_run(self.store, rest, principal)
        except RunNotFound:
            raise MCPError(RESOURCE_NOT_FOUND, f"no run {rest}", {"uri": uri}) from None
        if not info.finished:
            raise MCPError(
                RESOURCE_NOT_FOUND,
                f"run {rest} is still {info.status}; its result is readable once it ends",
                {"uri": uri, "status": info.status},
            )
        body: dict[str, Any] = {"run_id": info.id, "program": info.program, "status": info.status}
        if info.status == "succeeded":
            body["result"] = await run_result(self.store, info)
        else:
            body["error"] = info.error_dict()
        return orjson.dumps(body).decode()

    async def call_tool(
        self,
        name: str,
        arguments: dict[str, Any],
        principal: Principal,
        reporter: RunReporter | None = None,
    ) -> types.CallToolResult:
        """Run an agent (telling ``reporter`` how it goes), or call a selected tool, on behalf
        of ``principal``."""
        if name in self._agents():
            return await self._run_agent(name, arguments, principal, reporter)
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

    async def _submit(
        self, program: str, payload: Any, principal: Principal, reporter: RunReporter | None = None
    ) -> RunInfo:
        """Submit a run owned by ``principal`` and wait for it up to ``wait_seconds``, telling
        ``reporter`` of its start, each new journal step and its end."""
        run_id = await submit_run(self.store, program, payload, owner=principal)
        if self.worker is not None:
            self.worker.notify()
        if reporter is not None:
            await reporter.log(
                "info", {"event": "run_started", "run_id": run_id, "program": program}
            )
        deadline = time.monotonic() + self.settings.wait_seconds
        seen = 0
        while True:
            info = await get_run(self.store, run_id, principal)
            if reporter is not None and reporter.wants_steps:
                # Read after the status: a finished run's steps are all written by now.
                for step in await describe_steps(self.store, run_id, seen):
                    seen = step["n"] + 1
                    await reporter.progress(seen, f"{step['kind']} {step['name']}")
            if info.finished or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.05)
        if reporter is not None:
            await report_end(reporter, info, seen)
        return info

    async def _run_agent(
        self,
        name: str,
        arguments: dict[str, Any],
        principal: Principal,
        reporter: RunReporter | None,
    ) -> types.CallToolResult:
        task = arguments.get("input")
        if not isinstance(task, str):
            return _text("`input` (a string) is required.", error=True)
        info = await self._submit(name, {"input": task}, principal, reporter)
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
    """A low-level MCP server whose tools and resources come from ``bridge``. Each request
    acts for the principal in its HTTP request's scope (see ``PRINCIPAL_SCOPE_KEY``), else for
    ``principal`` (stdio); with neither, it is refused."""

    def who(ctx: ServerRequestContext[Session]) -> Principal:
        scope = getattr(ctx.request, "scope", None)
        found = scope.get(PRINCIPAL_SCOPE_KEY) if isinstance(scope, dict) else None
        if isinstance(found, Principal):
            return found
        if principal is not None:
            return principal
        raise AuthenticationFailed("this MCP request was not authenticated")

    async def on_list_tools(
        ctx: ServerRequestContext[Session], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return types.ListToolsResult(tools=await bridge.list_tools(who(ctx)))

    async def on_call_tool(
        ctx: ServerRequestContext[Session], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        try:
            caller = who(ctx)
        except ElevenFactorError as exc:
            return _text(str(exc), error=True)
        args = dict(params.arguments or {})
        result = bridge.call_tool(params.name, args, caller, CallReporter(ctx, levels_for(ctx)))
        return await traced_tool_call(params.name, ctx.request, params, result)  # off: awaited

    async def on_list_resources(
        ctx: ServerRequestContext[Session], params: types.PaginatedRequestParams | None
    ) -> types.ListResourcesResult:
        return types.ListResourcesResult(resources=bridge.list_resources())

    async def on_list_templates(
        ctx: ServerRequestContext[Session], params: types.PaginatedRequestParams | None
    ) -> types.ListResourceTemplatesResult:
        run = types.ResourceTemplate(
            name="run",
            uri_template="run://{run_id}",
            description="The result (or error) of a finished run you own, as JSON.",
            mime_type="application/json",
        )
        return types.ListResourceTemplatesResult(resource_templates=[run])

    async def on_read_resource(
        ctx: ServerRequestContext[Session], params: types.ReadResourceRequestParams
    ) -> types.ReadResourceResult:
        try:
            text = await bridge.read_resource(params.uri, who(ctx))
        except ElevenFactorError as exc:
            raise MCPError(types.INVALID_REQUEST, str(exc)) from None
        contents = types.TextResourceContents(
            uri=params.uri, mime_type="application/json", text=text
        )
        return types.ReadResourceResult(contents=[contents])

    async def on_list_prompts(
        ctx: ServerRequestContext[Session], params: types.PaginatedRequestParams | None
    ) -> types.ListPromptsResult:
        return types.ListPromptsResult(prompts=[])  # prompt files are not served yet

    async def on_get_prompt(
        ctx: ServerRequestContext[Session], params: types.GetPromptRequestParams
    ) -> types.GetPromptResult:
        raise MCPError(types.INVALID_PARAMS, f"no prompt {params.name!r}: this server has none")

    async def on_set_level(
        ctx: ServerRequestContext[Session], params: types.SetLevelRequestParams
    ) -> types.EmptyResult:
        # Over stdio the lifespan state is the connection's. Over HTTP (stateless) each request
        # is its own session, so the level lasts for this request: nothing is stored.
        if ctx.request is None:
            ctx.lifespan_context.log_level = params.level
        return types.EmptyResult()

    server: Server[Session] = Server(
        "elevenfactor",
        version=__version__,
        instructions="Agents run durably: each call is a journaled run. Tool calls that need"
        " a reviewer's approval run durably too, owned by the caller. Read a finished run's"
        " result at run://ID and an agent's card at agent://NAME.",
        lifespan=session,
        on_list_tools=on_list_tools,
        on_call_tool=on_call_tool,
        on_list_resources=on_list_resources,
        on_list_resource_templates=on_list_templates,
        on_read_resource=on_read_resource,
        on_list_prompts=on_list_prompts,
        on_get_prompt=on_get_prompt,
    )
    # Registered directly: the constructor's `on_set_logging_level` warns that the capability
    # is gone at 2026-07-28; handshake-era clients still use it.
    server.add_request_handler("logging/setLevel", types.SetLevelRequestParams, on_set_level)
    return server
