"""Guards inside an agent's runs (factor 10): five stages, each verdict a journaled step, and
``escalate`` an approval gate (the run waits holding no worker; a reviewer decides).

A run is checked with its agent's ``policy:`` (else the project's ``guards.default``); a stage
with no rules costs nothing. Each check is one step of kind ``guard`` (``guard.input``,
``guard.retrieved``, ``guard.tool_call``, ``guard.tool_result``, ``guard.output``) whose result
is the verdict record — stage, action, the deciding policy's ``id@version`` and rule, findings
(positions, never the matched text), the rules that fired, every policy checked — plus the
rewritten content of a ``redact``: a resumed run reuses it and never runs a guard twice.

- ``input`` (the run's user messages, before memory, retrieval or a model reads them):
  ``block`` ends the run ``{"output": None, "stopped": "blocked", "guard": record}`` (a normal
  end); ``redact`` rewrites what everything after sees; ``escalate`` waits for a reviewer of the
  verdict's group, who sees stage, policy, rule and findings, never the text: approve goes on
  (with the original), reject ends the run ``stopped: "rejected"``.
- ``retrieved`` (retrieved passages and recalled memories, one step for all): ``block``
  withholds an item (the model sees nothing of it; the step names it and why); ``redact``
  rewrites it; ``escalate`` withholds it unless a reviewer approves (one gate for the items
  escalated), so text that may carry an injection never reaches the model on a guess.
- ``tool_call`` (name and arguments, before the agent's approval rules): ``block`` → not run,
  the model gets an error naming the policy and rule; ``escalate`` → an approval gate (approve,
  reject, edit the arguments, answer in the tool's place); rejected → not run, the model gets
  ``rejected by a reviewer: REASON``; ``redact`` → run with the rewritten arguments.
- ``tool_result`` (what a tool or MCP server returned): checked inside the tool's own step, so
  a withheld or redacted result is never journaled as it was (unless ``keep_original``); then
  ``guard.tool_result`` journals the verdict. ``block`` → the model gets ``[tool result
  withheld by policy P rule R]``; ``redact`` → rewritten; ``escalate`` → withheld unless a
  reviewer approves.
- ``output`` (the final answer): ``block`` → ``stopped: "blocked"``, output None; ``redact`` →
  rewritten (always masked); ``escalate`` → a gate before release (reject → ``stopped:
  "rejected"``). ``relevance`` rules are judged by a model call of the run on the rule's route,
  made (metered, journaled) before the check.

Placeholders: ``redact`` in ``placeholder`` mode issues placeholders from one map per run, kept
encrypted in the guard vault (``governance._guard_vault``), and the final answer gets the
values back when the run returns it (the run's result is stored like its input; no journaled
step holds it). Without a vault key those rules mask, and their records say so (``"mode":
"mask", "why": "no vault key"``). With ``keep_original: false`` (the default) in any of the
run's policies, no record holds a redacted original.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from elevenfactor.context import Item
from elevenfactor.errors import DeadlineExceeded, JournalDivergence, LeaseLost, RunCancelled
from elevenfactor.governance._guard_judge import judge_messages
from elevenfactor.governance._guard_types import Stage
from elevenfactor.models import AssistantMessage, Message, SystemMessage, UserMessage
from elevenfactor.runtime._agent_context import input_query
from elevenfactor.runtime._agent_guard_checks import (
    AgentGuards,
    GuardChecks,
    Record,
    judge_key,
    restored,
)
from elevenfactor.runtime._agent_retrieval import passage_item
from elevenfactor.runtime._agent_session import owner_of
from elevenfactor.runtime._approvals import Decision, approval
from elevenfactor.runtime._context import RunContext

__all__ = ["AgentGuards", "RunGuards", "SideCall"]

SideCall = Callable[[RunContext, str, list[Message]], Awaitable[str]]
"""A metered, journaled model call of the run: ``(ctx, route, request) -> text``."""
ToolStep = Callable[..., Awaitable[dict[str, Any]]]
Final = Callable[[AssistantMessage], tuple[Any, str | None]]
_LIVE = (LeaseLost, RunCancelled, DeadlineExceeded, JournalDivergence)


def _echo(record: Record) -> Record:
    return record


class RunGuards(GuardChecks):
    """The guard stages of one execution of a run (see the module docstring); its parallel
    branches share it (and the run's placeholder map)."""

    def __init__(
        self, guards: AgentGuards, ctx: RunContext, agent: str, side_call: SideCall
    ) -> None:
        super().__init__(guards, ctx.store, ctx.run_id, owner_of(ctx).org_id, agent)
        self._side_call = side_call

    # -- the stages ------------------------------------------------------------------------------

    async def input(
        self, ctx: RunContext, messages: list[Message]
    ) -> tuple[list[Message], Record | None]:
        """The user messages as the run goes on with them, or the run's end (``stopped``)."""
        at = [i for i, m in enumerate(messages) if isinstance(m, UserMessage)]
        if not self.g.has("input") or not at:
            return messages, None
        texts = [str(messages[i].content) for i in at]
        record = await ctx.step(
            "guard.input", self.check_many, "input", texts, [str(i) for i in at], kind="guard"
        )
        stop = await self._stop(ctx, "input", record)
        if stop is not None:
            return messages, stop
        out = list(messages)
        for item in record["items"]:
            if item["action"] == "redact":
                i = at[item["index"]]
                out[i] = messages[i].model_copy(update={"content": item["content"]})
        return out, None

    async def retrieved(
        self,
        ctx: RunContext,
        passages: list[Item],
        hits: list[dict[str, Any]],
        memories: list[Item],
    ) -> tuple[list[Item], list[dict[str, Any]], list[Item]]:
        """The passages (with their hits) and memories the model may see."""
        if not self.g.has("retrieved") or not (hits or memories):
            return passages, hits, memories
        texts = [str(h["text"]) for h in hits] + [m.text for m in memories]
        ids = [str(h["chunk_id"]) for h in hits] + [m.id for m in memories]
        record = await ctx.step(
            "guard.retrieved", self.check_many, "retrieved", texts, ids, kind="guard"
        )
        items = {item["index"]: item for item in record["items"]}
        held = {i for i, item in items.items() if item["action"] == "block"}
        escalated = {i for i, item in items.items() if item["action"] == "escalate"}
        if escalated and not (await self._gate(ctx, "retrieved", record)).approved:
            held |= escalated
        new = {i: item["content"] for i, item in items.items() if item["action"] == "redact"}
        kept_p: list[Item] = []
        kept_h: list[dict[str, Any]] = []
        kept_m: list[Item] = []
        for i, (passage, hit) in enumerate(zip(passages, hits, strict=True)):
            if i in new:
                hit = {**hit, "text": new[i]}
                passage = passage_item(hit)
            if i not in held:
                kept_p.append(passage)
                kept_h.append(hit)
        for j, memory in enumerate(memories, start=len(hits)):
            if j not in held:
                kept_m.append(Item(memory.id, new[j], memory.score) if j in new else memory)
        return kept_p, kept_h, kept_m

    async def tool_call(
        self, ctx: RunContext, name: str, args: dict[str, Any]
    ) -> tuple[dict[str, Any], str | None]:
        """The arguments to run the tool with, or the result the model gets instead."""
        if not self.g.has("tool_call"):
            return args, None
        record = await ctx.step("guard.tool_call", self.check_call, name, args, kind="guard")
        action = record["action"]
        if action == "block":
            kinds = ", ".join(sorted({f["kind"] for f in record["findings"]}))
            return args, (
                f"Error: the call was blocked by policy {record['policy']} rule "
                f"{record['rule']} ({kinds}); do not try it again."
            )
        if action == "redact":
            return dict(record["args"]), None
        if action != "escalate":
            return args, None
        decision = await self._gate(
            ctx, "tool_call", record, f"guard.tool_call:{name}", tool=name, arguments=args
        )
        if decision.action == "reject":
            return args, f"rejected by a reviewer: {decision.reason or 'no reason given'}"
        if decision.action == "answer":
            answer = decision.answer
            return args, answer if isinstance(answer, str) else json.dumps(answer)
        if decision.action == "edit" and decision.arguments is not None:
            return dict(decision.arguments), None
        return args, None

    def tool_step(self, call: ToolStep) -> ToolStep:
        """``call`` (a tool step's function) with the ``tool_result`` check inside the step."""
        if not self.g.has("tool_result"):
            return call

        async def guarded(name: str, *args: Any) -> dict[str, Any]:
            out = await call(name, *args)
            record = await self.check("tool_result", str(out["content"]), {"tool": name})
            if record["action"] == "block":
                out = {**out, "content": _withheld(record), "structured": None}
            elif record["action"] == "redact":
                out = {**out, "content": record["content"], "structured": None}
            return {**out, "guard": record}

        return guarded

    async def tool_result(self, ctx: RunContext, name: str, out: dict[str, Any]) -> dict[str, Any]:
        """Journal the verdict ``tool_step`` reached (``guard.tool_result``); an escalated
        result is withheld unless a reviewer approves."""
        record = out.pop("guard", None)
        if record is None:
            return out
        await ctx.step("guard.tool_result", _echo, record, kind="guard")
        if record["action"] == "escalate":
            decision = await self._gate(
                ctx, "tool_result", record, f"guard.tool_result:{name}", tool=name
            )
            if not decision.approved:
                return {**out, "content": _withheld(record), "structured": None}
        return out

    async def output(
        self, ctx: RunContext, messages: list[Message], output: Any, final: Final
    ) -> tuple[Any, Record | None]:
        """The answer (``messages[-1]``, parsed as ``output``) as released, or the run's end;
        a redacted answer replaces ``messages[-1]``."""
        answer = messages[-1]
        if not self.g.has("output") or not isinstance(answer, AssistantMessage):
            return output, None
        text, question = answer.content or "", input_query(messages)
        answers = await self._judge(ctx, text, question)
        record = await ctx.step(
            "guard.output", self.check_output, text, question, answers, kind="guard"
        )
        stop = await self._stop(ctx, "output", record)
        if stop is not None or record["action"] != "redact":
            return (None, stop) if stop is not None else (output, None)
        released = answer.model_copy(update={"content": record["content"]})
        messages[-1] = released
        value, problem = final(released)
        if problem is not None:
            why = "the redacted answer no longer matches the output schema"
            return None, {"output": None, "stopped": "blocked", "guard": record, "why": why}
        return value, None

    async def release(self, ctx: RunContext, result: dict[str, Any]) -> dict[str, Any]:
        """The run's result with its placeholders restored from the vault (which then expires
        a TTL after now, the run's end). Not journaled: the caller gets it as the result."""
        vault = self.g.vault
        if vault is None or not self.g.placeholders:
            return result
        mapping = await vault.load(ctx.store, self.org_id, self.run_id)  # after any restart
        await vault.finish(ctx.store, self.org_id, self.run_id)
        if not len(mapping):
            return result
        return {**result, "output": restored(result.get("output"), mapping)}

    async def _judge(self, ctx: RunContext, text: str, question: str) -> dict[str, Any]:
        """The relevance judges' answers on the answer ``text`` (model calls of the run)."""
        assert self.g.pipeline is not None
        answers: dict[str, Any] = {}
        for entry in self.g.pipeline.entries("output"):
            spec = entry.guard.spec
            if getattr(spec, "rule", None) != "relevance":
                continue
            asked = judge_messages(spec.task, question, text)
            key = judge_key(spec.route, asked)
            if key in answers:
                continue
            request: list[Message] = [
                SystemMessage(content=m["content"])
                if m["role"] == "system"
                else UserMessage(content=m["content"])
                for m in asked
            ]
            try:
                answers[key] = await self._side_call(ctx, spec.route, request)
            except _LIVE:
                raise
            except Exception as exc:  # the check treats it as the rule's error (on_error)
                answers[key] = exc
        return answers

    # -- ends and gates ----------------------------------------------------------------------------

    async def _stop(self, ctx: RunContext, stage: Stage, record: Record) -> Record | None:
        if record["action"] == "block":
            return {"output": None, "stopped": "blocked", "guard": record}
        if record["action"] == "escalate":
            decision = await self._gate(ctx, stage, record)
            if not decision.approved:
                return {
                    "output": None,
                    "stopped": "rejected",
                    "reason": decision.reason,
                    "guard": record,
                }
        return None

    async def _gate(
        self, ctx: RunContext, stage: Stage, record: Record, name: str = "", **shown: Any
    ) -> Decision:
        """A reviewer's decision on an escalated verdict: they see the stage, policies, rules
        and findings (never the checked text), and what ``shown`` adds (a tool's arguments)."""
        escalated = [i for i in record.get("items", [record]) if i["action"] == "escalate"]
        first = escalated[0] if escalated else record
        request: dict[str, Any] = {
            "agent": self.agent,
            "stage": stage,
            "policy": first["policy"],
            "rule": first["rule"],
            **shown,
        }
        if "items" in record:
            request["items"] = [
                {k: item[k] for k in ("id", "policy", "rule", "findings")} for item in escalated
            ]
        else:
            request["findings"] = record["findings"]
        esc = first.get("escalate") or {}
        return await approval(
            ctx,
            name or f"guard.{stage}",
            request,
            group=esc.get("group"),
            expires_after=esc.get("timeout"),
            on_timeout=str(esc.get("on_timeout") or "reject"),
        )


def _withheld(record: Record) -> str:
    return f"[tool result withheld by policy {record['policy']} rule {record['rule']}]"
