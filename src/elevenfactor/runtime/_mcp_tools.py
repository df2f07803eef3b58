"""The toolset tools elevenfactor's MCP server exposes, the approval policy that governs them,
and ``mcp.tool``: the built-in durable program a gated call runs as.

A call of an exposed tool ``<toolset>.<tool>`` is gated by the first rule that matches among

1. the ``mcp_server.approval`` rules, matched against ``<toolset>.<tool>``;
2. the ``approval`` rules of every agent (in name order) whose ``tools`` use that toolset,
   matched against the tool's name as that agent sees it (with the agent's ``prefix``).

A gated call is a run of ``mcp.tool`` owned by the caller: it waits (durably) for a reviewer's
decision, then calls the tool in a journaled step; reject, edit and answer work as in an agent.
A destructive tool that no rule governs is neither listed nor callable unless
``mcp_server.allow_destructive`` names it. The program re-reads the policy itself, so submitting
``mcp.tool`` directly (``POST /v1/runs``) cannot reach a tool the MCP server would not.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from fnmatch import fnmatchcase
from typing import Any

from pydantic import ValidationError

from elevenfactor.config import McpServerSettings
from elevenfactor.errors import ConfigError, RequestError
from elevenfactor.runtime._agent_spec import AgentSpec, ApprovalRule
from elevenfactor.runtime._approvals import approval
from elevenfactor.runtime._context import RunContext, step_key
from elevenfactor.runtime._policy import tool_rule
from elevenfactor.tools import Tool, ToolContext, Toolset

__all__ = ["MCP_TOOL", "McpToolProgram", "McpTools", "parse_rules"]

MCP_TOOL = "mcp.tool"
"""The program name of a gated MCP tool call."""


def parse_rules(
    data: Sequence[Mapping[str, Any]], *, key: str, source: str | None = None
) -> list[ApprovalRule]:
    """Validate approval rules for tools (an agent's ``approval:`` schema, without
    ``before_model``); errors name the rule's index and key."""
    rules: list[ApprovalRule] = []
    for i, item in enumerate(data):
        try:
            rule = ApprovalRule.model_validate(item)
        except ValidationError as exc:
            err = exc.errors(include_url=False)[0]
            loc = ".".join(str(p) for p in err["loc"])
            message = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
            raise ConfigError(
                message, source=source, key=f"{key}.{i}" + (f".{loc}" if loc else "")
            ) from None
        if rule.before_model:
            raise ConfigError(
                "before_model gates an agent's model requests, not tools",
                source=source,
                key=f"{key}.{i}.before_model",
            )
        rules.append(rule)
    return rules


def _may_gate(rule: ApprovalRule, name: str, risk: str) -> bool:
    """Whether ``rule`` gates some call of tool ``name`` (its ``when`` aside)."""
    if rule.before_model:
        return False
    if rule.tools is not None and not any(fnmatchcase(name, p) for p in rule.tools):
        return False
    return rule.risk is None or risk in rule.risk


class McpTools:
    """Which toolset tools the MCP server exposes, and which rule gates a call of one."""

    def __init__(
        self,
        settings: McpServerSettings,
        toolsets: Mapping[str, Toolset],
        agents: Mapping[str, AgentSpec],
        *,
        source: str | None = None,
    ) -> None:
        self.settings = settings
        self.toolsets = toolsets
        self.agents = agents
        self.rules = parse_rules(settings.approval, key="mcp_server.approval", source=source)

    def _policies(self, ts_name: str, tool: Tool) -> list[tuple[str, Sequence[ApprovalRule]]]:
        """``(name as seen, rules)``: the MCP server's rules, then each agent's."""
        out: list[tuple[str, Sequence[ApprovalRule]]] = [(f"{ts_name}.{tool.name}", self.rules)]
        for agent in sorted(self.agents):
            spec = self.agents[agent]
            for ref in spec.tools:
                if ref.toolset == ts_name and spec.approval:
                    out.append(((ref.prefix or "") + tool.name, spec.approval))
        return out

    def rule(self, ts_name: str, tool: Tool, args: dict[str, Any]) -> ApprovalRule | None:
        """The first rule that gates this call, or None."""
        for seen, rules in self._policies(ts_name, tool):
            found = tool_rule(rules, seen, tool.risk, args)
            if found is not None:
                return found
        return None

    def governed(self, ts_name: str, tool: Tool) -> bool:
        """Some rule gates calls of the tool (at least for some arguments)."""
        return any(
            _may_gate(r, seen, tool.risk)
            for seen, rules in self._policies(ts_name, tool)
            for r in rules
        )

    def allowed(self, ts_name: str, tool: Tool) -> bool:
        """Not destructive, governed by a rule, or named in ``allow_destructive``."""
        if tool.risk != "destructive" or self.governed(ts_name, tool):
            return True
        full = f"{ts_name}.{tool.name}"
        return any(fnmatchcase(full, p) for p in self.settings.allow_destructive)

    async def exposed(self, ctx: ToolContext) -> dict[str, tuple[str, Tool]]:
        """``<toolset>.<tool>`` -> (toolset name, tool), for the selected and allowed tools."""
        exposed: dict[str, tuple[str, Tool]] = {}
        if not self.settings.tools:
            return exposed
        for ts_name, toolset in self.toolsets.items():
            for tool in await toolset.list_tools(ctx):
                full = f"{ts_name}.{tool.name}"
                if any(fnmatchcase(full, p) for p in self.settings.tools) and self.allowed(
                    ts_name, tool
                ):
                    exposed[full] = (ts_name, tool)
        return exposed

    async def plan(self, name: str, args: dict[str, Any], run_id: str) -> dict[str, Any]:
        """How a call of exposed tool ``name`` goes: its toolset, tool, risk and gating rule.
        Raises ``RequestError`` for a tool the MCP server does not expose."""
        exposed = await self.exposed(ToolContext(run_id=run_id, caller="mcp"))
        if name not in exposed:
            raise RequestError(
                f"tool {name!r} is not exposed by the MCP server",
                code="tool_not_found",
                status=404,
                param="tool",
                hint="select it in `mcp_server.tools` (destructive tools also need an approval"
                " rule or `mcp_server.allow_destructive`)",
            )
        ts_name, tool = exposed[name]
        rule = self.rule(ts_name, tool, args)
        return {
            "toolset": ts_name,
            "name": tool.name,
            "risk": tool.risk,
            "rule": rule.model_dump(mode="json") if rule is not None else None,
        }


class McpToolProgram:
    """``mcp.tool``: one call of an exposed tool, behind the approval its policy asks for.

    Input: ``{"tool": "<toolset>.<tool>", "arguments": {...}}``. Result: ``{"content",
    "is_error", "error_code", "structured", "decision"}`` (``decision`` is the reviewer's action,
    or None when no rule gated the call)."""

    def __init__(self, tools: McpTools) -> None:
        self.tools = tools

    async def _call(
        self, ts_name: str, tool: str, args: dict[str, Any], run_id: str
    ) -> dict[str, Any]:
        ctx = ToolContext(run_id=run_id, step_key=step_key(), caller="mcp")
        result = await self.tools.toolsets[ts_name].call_tool(tool, args, ctx)
        return {
            "content": result.content,
            "is_error": result.is_error,
            "error_code": result.error_code,
            "structured": result.structured,
        }

    async def __call__(self, ctx: RunContext, payload: Any) -> dict[str, Any]:
        if not (
            isinstance(payload, dict)
            and isinstance(payload.get("tool"), str)
            and isinstance(payload.get("arguments"), dict)
        ):
            raise RequestError(
                f'the input of {MCP_TOOL} is {{"tool": "<toolset>.<tool>", "arguments": {{}}}}',
                param="input",
            )
        name: str = payload["tool"]
        args: dict[str, Any] = payload["arguments"]
        plan = await ctx.step("policy", self.tools.plan, name, args, ctx.run_id, kind="tools")
        action: str | None = None
        if plan["rule"] is not None:
            rule = ApprovalRule.model_validate(plan["rule"])
            decision = await approval(
                ctx,
                f"tool:{name}",
                {"tool": name, "arguments": args, "risk": plan["risk"], "via": "mcp"},
                group=rule.group,
                expires_after=rule.timeout,
                on_timeout=rule.on_timeout,
            )
            action = decision.action
            if decision.action == "reject":
                reason = decision.reason or "no reason given"
                return _outcome(f"The reviewer rejected this call: {reason}", "reject", True)
            if decision.action == "answer":
                answer = decision.answer
                text = answer if isinstance(answer, str) else json.dumps(answer)
                return _outcome(text, "answer", False)
            if decision.action == "edit" and decision.arguments is not None:
                args = decision.arguments
        out = await ctx.step(
            f"tool:{name}", self._call, plan["toolset"], plan["name"], args, ctx.run_id, kind="tool"
        )
        return {**out, "decision": action}


def _outcome(text: str, action: str, is_error: bool) -> dict[str, Any]:
    return {
        "content": text,
        "is_error": is_error,
        "error_code": "rejected" if action == "reject" else None,
        "structured": None,
        "decision": action,
    }
