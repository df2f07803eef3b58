"""The agent loop as a durable program: model -> tool calls (in parallel) -> model, until a
final answer or a limit. Every model request, tool listing, tool call, approval, delegation and
guard verdict (``_agent_guards``) is a journaled step, so a crashed run resumes without repeating
any of them."""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jsonschema
import orjson
from pydantic import TypeAdapter

from elevenfactor.context import PromptRegistry
from elevenfactor.context._embed_registry import EmbedderRegistry
from elevenfactor.context._index_sql import SqlBackend
from elevenfactor.errors import ModelError, RequestError
from elevenfactor.governance import Meter, Principal, price_book
from elevenfactor.governance._guard_vault import GuardVault
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
from elevenfactor.observe import _tracing as tracing
from elevenfactor.observe._trace_genai import content_events
from elevenfactor.runtime._agent_context import Turn, fit_context, instructions_for
from elevenfactor.runtime._agent_guards import AgentGuards, RunGuards
from elevenfactor.runtime._agent_memory import (
    MEMORY_TOOLS,
    extract_after,
    memory_toolset,
    recall_items,
)
from elevenfactor.runtime._agent_retrieval import cite, ground, retrieve_passages
from elevenfactor.runtime._agent_session import load_history, save_turns
from elevenfactor.runtime._agent_spec import AgentSpec, ApprovalRule
from elevenfactor.runtime._agent_spend import metered_call
from elevenfactor.runtime._agent_tools import DELEGATE, HANDOFF, delegation_tools
from elevenfactor.runtime._approvals import approval
from elevenfactor.runtime._breakers import AgentBreakers, PolicySource, RunBreakers, run_delegate
from elevenfactor.runtime._context import RunContext, step_key
from elevenfactor.runtime._policy import model_rule, tool_rule
from elevenfactor.runtime._subruns import run_child
from elevenfactor.store import Store
from elevenfactor.tools import Combined, Filtered, Prefixed, ToolContext, Toolset, WithTimeout

__all__ = ["Agent", "AgentDeps"]

_MESSAGES = TypeAdapter(list[Message])


@dataclass
class AgentDeps:
    """What agents share: the models, the project's named toolsets, every agent's spec, the
    recorder their model calls are recorded with (as the gateway's are), the meter that
    checks kill switches and reserves budgets around each call, the limiter that applies
    the owner's rate limits (a run over a limit parks until capacity frees), if any, and the
    project's prompt files (agents with ``prompt:``) and guard policies (``policies``; their
    placeholders kept in ``guard_vault``)."""

    registry: ModelRegistry
    toolsets: Mapping[str, Toolset] = field(default_factory=dict)
    specs: Mapping[str, AgentSpec] = field(default_factory=dict)
    recorder: CallRecorder | None = None
    meter: Meter | None = None
    limiter: Limiter | None = None
    prompts: PromptRegistry | None = None
    embedders: EmbedderRegistry | None = None
    """Embedding models (memory, retrieval); made from the project on first use if None."""
    retrieval_backend: SqlBackend | None = None
    """Where retrieval indexes live (agents with ``retrieval:``)."""
    policies: PolicySource | None = None
    guard_vault: GuardVault | None = None


def _input_messages(payload: Any) -> list[Message]:
    """The run's input as messages (the instructions are added by the context assembly)."""
    if isinstance(payload, str):
        return [UserMessage(content=payload)]
    if isinstance(payload, dict) and isinstance(payload.get("input"), str):
        return [UserMessage(content=payload["input"])]
    if isinstance(payload, dict) and isinstance(payload.get("messages"), list):
        return list(_MESSAGES.validate_python(payload["messages"]))
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
        self.breakers = AgentBreakers.resolve(spec.limits, spec.policy, deps.policies)
        self.guards = AgentGuards.resolve(spec.policy, deps.policies, deps.guard_vault)

    # -- effects, each run inside a journaled step ------------------------------------------

    def _memory_on(self) -> bool:
        return self.spec.memory is not None and self.spec.memory.tool

    async def _list_tools(self, run_id: str, store: Store | None = None) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        ctx = ToolContext(run_id=run_id, caller=self.spec.name)
        sets: list[Toolset] = [] if self.toolset is None else [self.toolset]
        if self._memory_on() and store is not None:
            sets.append(memory_toolset(self.deps, store))
        for toolset in sets:
            for t in await toolset.list_tools(ctx):
                out.append(
                    {
                        "name": t.name,
                        "description": t.description,
                        "parameters": t.parameters,
                        "risk": t.risk,
                    }
                )
        out += delegation_tools(self.spec, self.deps.specs)
        return out

    async def _model(
        self,
        messages: list[Message],
        settings: ModelSettings,
        run_id: str,
        owner: Principal | None = None,
        *,
        route: str | None = None,
    ) -> Response:
        resolved = self.deps.registry.resolve(
            route or self.spec.model, settings.tags, messages=messages, settings=settings
        )
        call = Call(trace_id=run_id, route=resolved.route)
        if owner is not None:  # the semantic cache's scope: the run's owner
            call.org_id, call.user_id = owner.org_id, owner.user_id
        try:
            response = await resolved.model.request(messages, settings, call)
        except Exception as exc:
            error_class = exc.error_class if isinstance(exc, ModelError) else "error"
            self._record(call, messages, owner, settings, status="error", error_class=error_class)
            raise
        self._record(call, messages, owner, settings, response=response)
        final = call.final
        return response.model_copy(
            update={"deployment": final.deployment if final else None, "cache_hit": call.cache_hit}
        )

    def _record(
        self,
        call: Call,
        messages: list[Message],
        owner: Principal | None,
        settings: ModelSettings,
        *,
        response: Response | None = None,
        status: str = "ok",
        error_class: str | None = None,
    ) -> None:
        """Record a model call made inside a step as the gateway records its calls: a log line
        now, a ``model_calls`` row (run id, owner, tokens, cost) soon after. Replayed steps never
        get here, so a resumed run records only the calls it makes."""
        recorder = self.deps.recorder
        if recorder is None and not tracing.CONTENT:
            return
        key = step_key()
        request = orjson.dumps(
            {"model": call.route, "messages": [m.model_dump(mode="json") for m in messages]}
        )
        answer = response.model_dump_json().encode() if response is not None else None
        # On the model step's span, when ELEVENFACTOR_TRACE_CONTENT allows: the messages as the
        # run's guards left them (the input stage ran before this step), as the record keeps.
        content_events(request, answer)
        if recorder is None:
            return
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
                request=request,
                response=answer,
                agent=self.spec.name,
                step=key.rpartition(":")[2] if key else None,
                tags=list(settings.tags),  # the agent's settings.tags and the run's tags
                prompt=settings.prompt_version,
            )
        )

    async def _call_tool(
        self,
        name: str,
        args: dict[str, Any],
        run_id: str,
        owner: Mapping[str, Any],
        store: Store | None = None,
    ) -> dict[str, Any]:
        toolset = self.toolset
        if name in MEMORY_TOOLS and self._memory_on() and store is not None:
            toolset = memory_toolset(self.deps, store)
        assert toolset is not None
        result = await toolset.call_tool(
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

    def _settings(
        self, tools: list[dict[str, Any]], base: Mapping[str, Any] | None = None
    ) -> ModelSettings:
        """The agent's settings over its prompt's model parameters (``base``), with its tools
        and output schema."""
        merged = {**(base or {}), **(self.spec.settings or {})}
        settings = ModelSettings.model_validate(merged) if merged else ModelSettings()
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
        spec = self.spec
        guards = RunGuards(self.guards, ctx, spec.name, self._side_call)
        messages, stop = await guards.input(ctx, _input_messages(payload))
        if stop is not None:  # blocked or rejected by a guard: a normal end of the run
            return stop
        start = await ctx.now()
        given = await instructions_for(ctx, self.deps.prompts, spec, payload)
        # A system message in the input replaces the agent's instructions.
        system = None if any(isinstance(m, SystemMessage) for m in messages) else given.text
        tools = await ctx.step("list", self._list_tools, ctx.run_id, ctx.store, kind="tools")
        risk = {t["name"]: t["risk"] for t in tools}
        settings = self._settings(tools, given.settings)
        if given.prompt is not None:  # recorded with each of its calls
            settings = settings.model_copy(update={"prompt_version": given.prompt})
        if ctx.lease.tags:  # the run's tags go with each of its calls (routing rules, costs)
            merged = list(dict.fromkeys([*settings.tags, *ctx.lease.tags]))
            settings = settings.model_copy(update={"tags": merged})
        history, summaries = await load_history(ctx)
        remembered = await recall_items(ctx, self.deps, spec, messages)
        passages, hits = await retrieve_passages(ctx, self.deps, spec, messages)
        passages, hits, remembered = await guards.retrieved(ctx, passages, hits, remembered)
        gate = model_rule(spec.approval)
        usage_in, usage_out = 0, 0
        breaker = RunBreakers(self.breakers.run, spec.name, start)  # replays from the journal
        while True:
            turn = await breaker.turn(ctx)  # a model request about to be made (its index)
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
            turn_parts = Turn(system, history, messages, remembered, passages)
            sent = await fit_context(
                ctx, self.deps.registry, spec, turn_parts, settings, summaries, self._side_call
            )
            response = await metered_call(ctx, self.deps, self.spec, sent, settings, self._model)
            breaker.response(self.deps.registry.project, response)
            usage_in += response.usage.input_tokens
            usage_out += response.usage.output_tokens
            messages.append(response.message)
            calls = response.message.tool_calls
            if not calls:
                output, problem = self._final(response.message)
                if problem is None:
                    output, stop = await guards.output(ctx, messages, output, self._final)
                    if stop is not None:
                        return stop
                    await save_turns(ctx, messages, summaries)
                    await extract_after(ctx, self.deps, spec, messages, self._side_call)
                    done: dict[str, Any] = {
                        "output": output,
                        "turns": turn + 1,
                        "tool_calls": breaker.tool_calls,
                        "usage": {"input_tokens": usage_in, "output_tokens": usage_out},
                    }
                    if spec.retrieval is not None:
                        text = messages[-1].content or ""
                        done["citations"] = cite(text, hits)
                        verdict = await ground(
                            ctx, spec, text, done["citations"], hits, self._side_call
                        )
                        if verdict is not None:
                            done["grounding"] = verdict
                    return await guards.release(ctx, done)
                messages.append(UserMessage(content=problem))
                continue
            breaker.tool_calls_of(calls)
            handoff = next((c for c in calls if c.name.startswith(HANDOFF)), None)
            if handoff is not None:
                target = handoff.name[len(HANDOFF) :]
                handed = [  # the session's conversation and this run's, but its instructions
                    m.model_dump(mode="json")
                    for m in [*history, *messages[:-1]]
                    if not isinstance(m, SystemMessage)
                ]
                result: dict[str, Any] = await run_child(ctx, target, {"messages": handed})
                return {**result, "handed_off_to": target}
            results = await ctx.parallel(
                [self._bind(c.name, c.arguments, risk, guards) for c in calls], name="tools"
            )
            messages.extend(
                ToolMessage(content=text, tool_call_id=c.id)
                for c, text in zip(calls, results, strict=True)
            )
            breaker.tool_results_of(calls, results)

    async def _side_call(
        self,
        ctx: RunContext,
        route: str,
        request: list[Message],
        settings: ModelSettings | None = None,
    ) -> str:
        """A model call besides the conversation — a summary of old turns, a grounding check,
        memory extraction — on ``route``, metered and recorded like any model call of the run."""
        spec = self.spec.model_copy(update={"model": route})
        step = functools.partial(self._model, route=route)
        response = await metered_call(
            ctx, self.deps, spec, request, settings or ModelSettings(), step
        )
        return response.message.content or ""

    def _bind(
        self, name: str, arguments: str, risk: Mapping[str, str], guards: RunGuards
    ) -> Callable[[RunContext], Awaitable[str]]:
        return lambda branch: self._tool(branch, name, arguments, risk, guards)

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
        self, ctx: RunContext, name: str, raw_args: str, risk: Mapping[str, str], guards: RunGuards
    ) -> str:
        try:
            args = json.loads(raw_args or "{}")
        except ValueError as exc:
            return f"Error: the arguments are not valid JSON ({exc}); send a JSON object."
        if not isinstance(args, dict):
            return "Error: the arguments must be a JSON object."
        if name not in risk:
            return f"Error: there is no tool named {name!r}; use one of: {', '.join(risk)}."
        args, instead = await guards.tool_call(ctx, name, args)  # before the approval rules
        if instead is not None:
            return instead
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
            result = await run_delegate(ctx, name[len(DELEGATE) :], str(args.get("task")))
            output = result.get("output") if isinstance(result, dict) else result
            return output if isinstance(output, str) else json.dumps(output)
        owner = ctx.lease.owner.actor() if ctx.lease.owner is not None else {}
        call = guards.tool_step(self._call_tool)  # the tool_result check inside the step
        out = await ctx.step(
            f"tool:{name}", call, name, args, ctx.run_id, owner, ctx.store, kind="tool"
        )
        out = await guards.tool_result(ctx, name, out)
        return f"Error: {out['content']}" if out["is_error"] else str(out["content"])


def agent_programs(specs: Mapping[str, AgentSpec], deps: AgentDeps) -> dict[str, Agent]:
    """An ``Agent`` for every spec."""
    return {name: Agent(spec, deps) for name, spec in specs.items()}
