"""The agent loop as a durable program: model -> tool calls (in parallel) -> model, until a
final answer or a limit. Every model request, tool listing, tool call, approval and delegation is
a journaled step, so a crashed run resumes without repeating any of them."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jsonschema
import orjson
from pydantic import TypeAdapter

from elevenfactor.errors import AgentLimitExceeded, ModelError, RequestError
from elevenfactor.governance import Meter, Principal, price_book
from elevenfactor.models import (
    AssistantMessage,
    Call,
    Limiter,
    Message,
    ModelRegistry,
    ModelSettings,
    Response,
    ResponseFormat,
    SystemMessage,
    ToolDefinition,
    ToolMessage,
    UserMessage,
)
from elevenfactor.observe import CallRecord, CallRecorder
from elevenfactor.runtime._agent_spec import AgentSpec, ApprovalRule
from elevenfactor.runtime._agent_spend import metered_call
from elevenfactor.runtime._approvals import approval
from elevenfactor.runtime._context import RunContext, step_key
from elevenfactor.runtime._policy import model_rule, tool_rule
from elevenfactor.runtime._subruns import run_child
from elevenfactor.tools import Combined, Filtered, Prefixed, ToolContext, Toolset, WithTimeout

__all__ = ["Agent", "AgentDeps"]

_MESSAGES = TypeAdapter(list[Message])
DELEGATE, HANDOFF = "delegate_to_", "handoff_to_"


@dataclass
class AgentDeps:
    """What agents share: the models, the project's named toolsets, every agent's spec, the
    recorder their model calls are recorded with (as the gateway's are), the meter that
    checks kill switches and reserves budgets around each call, and the limiter that applies
    the owner's rate limits (a run over a limit parks until capacity frees), if any."""

    registry: ModelRegistry
    toolsets: Mapping[str, Toolset] = field(default_factory=dict)
    specs: Mapping[str, AgentSpec] = field(default_factory=dict)
    recorder: CallRecorder | None = None
    meter: Meter | None = None
    limiter: Limiter | None = None


def _initial_messages(spec: AgentSpec, payload: Any) -> list[Message]:
    system: list[Message] = [SystemMessage(content=spec.instructions)] if spec.instructions else []
    if isinstance(payload, str):
        return [*system, UserMessage(content=payload)]
    if isinstance(payload, dict) and isinstance(payload.get("input"), str):
        return [*system, UserMessage(content=payload["input"])]
    if isinstance(payload, dict) and isinstance(payload.get("messages"), list):
        msgs = _MESSAGES.validate_python(payload["messages"])
        if system and not any(isinstance(m, SystemMessage) for m in msgs):
            return [*system, *msgs]
        return msgs
    raise RequestError(
        'an agent\'s input is a string, {"input": string} or {"messages": [...]}', param="input"
    )


class Agent:
    """A durable program that runs ``spec`` (register it in ``Programs`` under its name)."""

    def __init__(self, spec: AgentSpec, deps: AgentDeps) -> None:
        self.spec = spec
        self.deps = deps
        parts: list[Toolset] = []
        for ref in spec.tools:
            ts: Toolset = deps.toolsets[ref.toolset]
            if ref.allow is not None or ref.deny:
                ts = Filtered(ts, allow=ref.allow, deny=ref.deny)
            if ref.prefix:
                ts = Prefixed(ts, ref.prefix)
            if ref.timeout is not None:
                ts = WithTimeout(ts, ref.timeout)
            parts.append(ts)
        self.toolset: Toolset | None = Combined(parts) if parts else None

    # -- effects, each run inside a journaled step ------------------------------------------

    async def _list_tools(self, run_id: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if self.toolset is not None:
            ctx = ToolContext(run_id=run_id, caller=self.spec.name)
            for t in await self.toolset.list_tools(ctx):
                out.append(
                    {
                        "name": t.name,
                        "description": t.description,
                        "parameters": t.parameters,
                        "risk": t.risk,
                    }
                )
        for other in self.spec.delegates:
            desc = self.deps.specs[other].description or f"the {other} agent"
            out.append(
                {
                    "name": DELEGATE + other,
                    "risk": "write",
                    "description": f"Ask {desc} to do a task; returns its answer.",
                    "parameters": {
                        "type": "object",
                        "required": ["task"],
                        "properties": {"task": {"type": "string"}},
                    },
                }
            )
        for other in self.spec.handoffs:
            desc = self.deps.specs[other].description or f"the {other} agent"
            out.append(
                {
                    "name": HANDOFF + other,
                    "risk": "write",
                    "description": f"Hand the whole conversation over to {desc}.",
                    "parameters": {"type": "object", "properties": {"reason": {"type": "string"}}},
                }
            )
        return out

    async def _model(
        self,
        messages: list[Message],
        settings: ModelSettings,
        run_id: str,
        owner: Principal | None = None,
    ) -> Response:
        resolved = self.deps.registry.resolve(
            self.spec.model, settings.tags, messages=messages, settings=settings
        )
        call = Call(trace_id=run_id, route=resolved.route)
        try:
            response = await resolved.model.request(messages, settings, call)
        except Exception as exc:
            error_class = exc.error_class if isinstance(exc, ModelError) else "error"
            self._record(
                call, messages, owner, settings.tags, status="error", error_class=error_class
            )
            raise
        self._record(call, messages, owner, settings.tags, response=response)
        final = call.final
        return response.model_copy(
            update={"deployment": final.deployment if final else None, "cache_hit": call.cache_hit}
        )

    def _record(
        self,
        call: Call,
        messages: list[Message],
        owner: Principal | None,
        tags: list[str],
        *,
        response: Response | None = None,
        status: str = "ok",
        error_class: str | None = None,
    ) -> None:
        """Record a model call made inside a step as the gateway records its calls: a log line
        now, a ``model_calls`` row (run id, owner, tokens, cost) soon after. Replayed steps never
        get here, so a resumed run records only the calls it makes."""
        recorder = self.deps.recorder
        if recorder is None:
            return
        key = step_key()
        request = {"model": call.route, "messages": [m.model_dump(mode="json") for m in messages]}
        usage = response.usage if response is not None else None
        recorder.record(
            CallRecord.from_call(
                call,
                usage,
                price_book(self.deps.registry.project),
                tokens_in=0,  # replaced by ``usage``'s counts when there is one
                tokens_out=0,
                stream=False,
                status=status,
                error_class=error_class,
                run_id=call.trace_id,
                api_key_id=owner.key_id if owner is not None else None,
                org_id=owner.org_id if owner is not None else None,
                team_id=owner.team_id if owner is not None else None,
                user_id=owner.user_id if owner is not None else None,
                request=orjson.dumps(request),
                response=response.model_dump_json().encode() if response is not None else None,
                agent=self.spec.name,
                step=key.rpartition(":")[2] if key else None,
                tags=list(tags),  # the agent's settings.tags and the run's tags
            )
        )

    async def _call_tool(
        self, name: str, args: dict[str, Any], run_id: str, owner: Mapping[str, Any]
    ) -> dict[str, Any]:
        assert self.toolset is not None
        result = await self.toolset.call_tool(
            name,
            args,
            ToolContext(run_id=run_id, step_key=step_key(), caller=self.spec.name, owner=owner),
        )
        return {
            "content": result.content,
            "is_error": result.is_error,
            "error_code": result.error_code,
            "structured": result.structured,
        }

    # -- the loop -----------------------------------------------------------------------------

    def _settings(self, tools: list[dict[str, Any]]) -> ModelSettings:
        settings = (
            ModelSettings.model_validate(self.spec.settings)
            if self.spec.settings
            else (ModelSettings())
        )
        updates: dict[str, Any] = {
            "tools": [
                ToolDefinition(
                    name=t["name"], description=t["description"], parameters=t["parameters"]
                )
                for t in tools
            ]
        }
        if self.spec.output_schema is not None:
            updates["response_format"] = ResponseFormat(
                type="json_schema",
                name=f"{self.spec.name}_output",
                json_schema=self.spec.output_schema,
            )
        return settings.model_copy(update=updates)

    async def __call__(self, ctx: RunContext, payload: Any) -> dict[str, Any]:
        spec, limits = self.spec, self.spec.limits
        messages = _initial_messages(spec, payload)
        start = await ctx.now()
        tools = await ctx.step("list", self._list_tools, ctx.run_id, kind="tools")
        risk = {t["name"]: t["risk"] for t in tools}
        settings = self._settings(tools)
        if ctx.lease.tags:  # the run's tags go with each of its calls (routing rules, costs)
            merged = list(dict.fromkeys([*settings.tags, *ctx.lease.tags]))
            settings = settings.model_copy(update={"tags": merged})
        gate = model_rule(spec.approval)
        calls_made, usage_in, usage_out = 0, 0, 0
        for turn in range(limits.max_steps):
            if limits.max_wall_time is not None and await ctx.now() - start > limits.max_wall_time:
                raise AgentLimitExceeded(f"agent {spec.name}: over {limits.max_wall_time:g}s")
            if gate is not None:
                decision = await self._gate(
                    ctx,
                    gate,
                    "model",
                    {
                        "agent": spec.name,
                        "turn": turn,
                        "last_message": messages[-1].model_dump(mode="json"),
                    },
                )
                if not decision.approved:
                    return {"output": None, "stopped": "rejected", "reason": decision.reason}
            response = await metered_call(
                ctx, self.deps, self.spec, messages, settings, self._model
            )
            usage_in += response.usage.input_tokens
            usage_out += response.usage.output_tokens
            messages.append(response.message)
            calls = response.message.tool_calls
            if not calls:
                output, problem = self._final(response.message)
                if problem is None:
                    return {
                        "output": output,
                        "turns": turn + 1,
                        "tool_calls": calls_made,
                        "usage": {"input_tokens": usage_in, "output_tokens": usage_out},
                    }
                messages.append(UserMessage(content=problem))
                continue
            calls_made += len(calls)
            if calls_made > limits.max_tool_calls:
                raise AgentLimitExceeded(
                    f"agent {spec.name}: more than {limits.max_tool_calls} tool calls"
                )
            handoff = next((c for c in calls if c.name.startswith(HANDOFF)), None)
            if handoff is not None:
                target = handoff.name[len(HANDOFF) :]
                history = [
                    m.model_dump(mode="json")
                    for m in messages[:-1]
                    if not isinstance(m, SystemMessage)
                ]
                result: dict[str, Any] = await run_child(ctx, target, {"messages": history})
                return {**result, "handed_off_to": target}
            results = await ctx.parallel(
                [self._bind(c.name, c.arguments, risk) for c in calls], name="tools"
            )
            messages.extend(
                ToolMessage(content=text, tool_call_id=c.id)
                for c, text in zip(calls, results, strict=True)
            )
        raise AgentLimitExceeded(f"agent {spec.name}: no answer within {limits.max_steps} steps")

    def _bind(
        self, name: str, arguments: str, risk: Mapping[str, str]
    ) -> Callable[[RunContext], Awaitable[str]]:
        return lambda branch: self._tool(branch, name, arguments, risk)

    def _final(self, message: AssistantMessage) -> tuple[Any, str | None]:
        text = message.content or ""
        if self.spec.output_schema is None:
            return text, None
        try:
            value = json.loads(text)
            jsonschema.validate(value, self.spec.output_schema)
        except (ValueError, jsonschema.ValidationError) as exc:
            reason = exc.message if isinstance(exc, jsonschema.ValidationError) else str(exc)
            return None, (
                f"Your answer must be JSON matching the output schema; it was not "
                f"({reason}). Answer again with only the JSON."
            )
        return value, None

    async def _gate(
        self, ctx: RunContext, rule: ApprovalRule, name: str, request: dict[str, Any]
    ) -> Any:
        return await approval(
            ctx,
            name,
            request,
            group=rule.group,
            expires_after=rule.timeout,
            on_timeout=rule.on_timeout,
        )

    async def _tool(
        self, ctx: RunContext, name: str, raw_args: str, risk: Mapping[str, str]
    ) -> str:
        try:
            args = json.loads(raw_args or "{}")
        except ValueError as exc:
            return f"Error: the arguments are not valid JSON ({exc}); send a JSON object."
        if not isinstance(args, dict):
            return "Error: the arguments must be a JSON object."
        if name not in risk:
            return f"Error: there is no tool named {name!r}; use one of: {', '.join(risk)}."
        rule = tool_rule(self.spec.approval, name, risk[name], args)
        if rule is not None:
            decision = await self._gate(
                ctx,
                rule,
                f"tool:{name}",
                {"agent": self.spec.name, "tool": name, "arguments": args, "risk": risk[name]},
            )
            if decision.action == "reject":
                return f"The reviewer rejected this call: {decision.reason or 'no reason given'}"
            if decision.action == "answer":
                answer = decision.answer
                return answer if isinstance(answer, str) else json.dumps(answer)
            if decision.action == "edit" and decision.arguments is not None:
                args = decision.arguments
        if name.startswith(DELEGATE):
            result = await run_child(ctx, name[len(DELEGATE) :], {"input": str(args.get("task"))})
            output = result.get("output") if isinstance(result, dict) else result
            return output if isinstance(output, str) else json.dumps(output)
        owner = ctx.lease.owner.actor() if ctx.lease.owner is not None else {}
        out = await ctx.step(
            f"tool:{name}", self._call_tool, name, args, ctx.run_id, owner, kind="tool"
        )
        return f"Error: {out['content']}" if out["is_error"] else str(out["content"])


def agent_programs(specs: Mapping[str, AgentSpec], deps: AgentDeps) -> dict[str, Agent]:
    """An ``Agent`` for every spec."""
    return {name: Agent(spec, deps) for name, spec in specs.items()}
