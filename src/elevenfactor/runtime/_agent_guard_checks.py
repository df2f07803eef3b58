"""The checks behind an agent run's guard stages (``runtime._agent_guards``): an agent's guard
pipeline, and the checks of one run — each run inside its ``guard`` step, each result a verdict
record for the journal — with the run's placeholder map kept in the guard vault.

A record is ``verdict_record`` (stage, action, policy ``id@version``, rule, findings without the
matched text, the rules that fired, the time taken) plus ``policies`` (every policy checked),
``content`` (and ``args`` for a tool call) when redacted, ``escalate`` (group, timeout,
on_timeout) when escalated, ``original`` only when every policy has ``keep_original: true``, and
``"mode": "mask", "why": "no vault key"`` when a ``placeholder`` rule masked for want of a key.
Checks of several texts (input messages, retrieved items) record the most severe verdict and
``items``: one record per text that was not allowed (``index``, ``id``), ``checked``: how many.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from typing import Any

from elevenfactor.governance._guard_pipeline import GuardPipeline, pipeline_for, verdict_record
from elevenfactor.governance._guard_redact import PlaceholderMap, restore
from elevenfactor.governance._guard_types import ACTIONS, STAGES, Stage, Verdict
from elevenfactor.governance._guard_vault import GuardVault
from elevenfactor.governance._policy_model import Policy
from elevenfactor.runtime._breakers import PolicySource
from elevenfactor.store import Store

__all__ = ["AgentGuards", "GuardChecks", "Record", "judge_key", "restored"]

Record = dict[str, Any]
"""A verdict record as journaled (see the module docstring)."""
_Answers = Mapping[str, str | Exception]
_ANSWERS: ContextVar[_Answers | None] = ContextVar("elevenfactor_judge_answers", default=None)


def judge_key(route: str, messages: Sequence[Mapping[str, str]]) -> str:
    """What a relevance judge's answer is looked up by: its route and the messages it got."""
    return json.dumps([route, [dict(m) for m in messages]], sort_keys=True)


async def _prefetched_judge(route: str, messages: list[dict[str, str]]) -> str:
    """The relevance judge inside runs: the answer of the model call made before the check
    (a failed call is raised again, so the policy's ``on_error`` applies)."""
    found = (_ANSWERS.get() or {}).get(judge_key(route, messages))
    if found is None:
        raise LookupError(f"no judge answer was fetched for route {route!r}")
    if isinstance(found, Exception):
        raise found
    return found


def restored(value: Any, mapping: PlaceholderMap) -> Any:
    """``value`` (text, or JSON) with ``mapping``'s placeholders restored in every string."""
    if isinstance(value, str):
        return restore(value, mapping)
    if isinstance(value, list):
        return [restored(v, mapping) for v in value]
    if isinstance(value, dict):
        return {k: restored(v, mapping) for k, v in value.items()}
    return value


def _rank(record: Mapping[str, Any]) -> int:
    return ACTIONS.index(record["action"])


class AgentGuards:
    """An agent's guards: the pipeline of its policies and the vault its runs' placeholders go
    to. Built once per agent."""

    def __init__(self, policies: Sequence[Policy], vault: GuardVault | None = None) -> None:
        self.policies = tuple(policies)
        self.refs = [p.ref for p in self.policies]
        self.keep_original = bool(self.policies) and all(
            p.spec.keep_original for p in self.policies
        )
        self.vault = vault
        self._placeholder_rules = {
            (stage, policy.ref, rule.label)
            for policy in self.policies
            for stage in STAGES
            if stage != "output"
            for rule in policy.spec.stages.rules(stage)
            if rule.action == "redact" and getattr(rule, "mode", "mask") == "placeholder"
        }
        self.masked = vault is None and bool(self._placeholder_rules)
        """No vault key, and a rule would issue placeholders: those rules mask instead."""
        self.pipeline: GuardPipeline | None = None
        if self.policies and self.masked:  # its own copy: the shared one keeps placeholders
            self.pipeline = GuardPipeline.build(self.policies, judge=_prefetched_judge)
            for stage in STAGES:
                for entry in self.pipeline.entries(stage):
                    entry.guard.mode = "mask"
        elif self.policies:
            self.pipeline = pipeline_for(self.policies, judge=_prefetched_judge)

    @classmethod
    def resolve(
        cls, agent_policy: str | None, source: PolicySource | None, vault: GuardVault | None = None
    ) -> AgentGuards:
        """The guards of an agent naming ``agent_policy`` (``source``: the ``PolicyBook``;
        None: no guards)."""
        return cls(source.for_agent(agent_policy) if source is not None else [], vault)

    @property
    def placeholders(self) -> bool:
        """Whether runs issue placeholders (a vault, and a rule in ``placeholder`` mode)."""
        return self.vault is not None and bool(self._placeholder_rules)

    def has(self, stage: Stage) -> bool:
        """Whether any rule stands at ``stage``."""
        return self.pipeline is not None and self.pipeline.has(stage)

    def placeholder_fired(self, stage: Stage, record: Record) -> bool:
        """Whether a redacting rule that fired in ``record`` asked for placeholders."""
        return any(
            (stage, f["policy"], f["rule"]) in self._placeholder_rules
            for f in record.get("fired", [])
            if f["action"] == "redact"
        )


class GuardChecks:
    """The checks of one execution of a run (shared by its parallel branches)."""

    def __init__(self, guards: AgentGuards, store: Store, run_id: str, org_id: str, agent: str):
        self.g = guards
        self.store = store
        self.run_id = run_id
        self.org_id = org_id
        self.agent = agent
        self._map: PlaceholderMap | None = None
        self._lock = asyncio.Lock()

    async def placeholder_map(self) -> PlaceholderMap | None:
        """The run's map, read from the vault once per execution (None: no placeholders)."""
        vault = self.g.vault
        if vault is None or not self.g.placeholders:
            return None
        async with self._lock:
            if self._map is None:
                self._map = await vault.load(self.store, self.org_id, self.run_id)
        return self._map

    async def _keep(self, mapping: PlaceholderMap | None, before: int) -> None:
        vault = self.g.vault
        if vault is not None and mapping is not None and len(mapping) > before:
            async with self._lock:  # written in order: each a superset of the one before
                await vault.save(self.store, self.org_id, self.run_id, mapping)

    def _ctx(self, extra: Mapping[str, Any]) -> dict[str, Any]:
        return {"run_id": self.run_id, "agent": self.agent, **extra}

    async def check(self, stage: Stage, text: str, extra: Mapping[str, Any]) -> Record:
        """The record of ``text`` checked at ``stage`` (new placeholders saved first)."""
        assert self.g.pipeline is not None
        mapping = await self.placeholder_map() if stage != "output" else None
        before = len(mapping) if mapping is not None else 0
        verdict = await self.g.pipeline.check(stage, text, self._ctx(extra), mapping)
        await self._keep(mapping, before)
        return self._record(stage, verdict, text)

    async def check_many(self, stage: Stage, texts: list[str], ids: list[str]) -> Record:
        """One record for several texts (see the module docstring)."""
        items: list[Record] = []
        for i, text in enumerate(texts):
            found = await self.check(stage, text, {})
            if found["action"] != "allow":
                found.pop("policies")
                items.append({"index": i, "id": ids[i], **found})
        worst = max(items, key=_rank, default=None)  # the earliest on a tie
        head: Record = {"stage": stage, "action": "allow", "policy": "", "rule": ""}
        if worst is not None:
            head.update(action=worst["action"], policy=worst["policy"], rule=worst["rule"])
        return {**head, "checked": len(texts), "items": items, "policies": self.g.refs}

    async def check_call(self, name: str, args: dict[str, Any]) -> Record:
        """The record of a call of tool ``name`` with ``args``, before it runs."""
        assert self.g.pipeline is not None
        mapping = await self.placeholder_map()
        before = len(mapping) if mapping is not None else 0
        ctx = self._ctx({"tool": name})
        verdict = await self.g.pipeline.check_tool_call(name, args, ctx, mapping)
        await self._keep(mapping, before)
        return self._record("tool_call", verdict, json.dumps(args, ensure_ascii=False))

    async def check_output(self, text: str, question: str, answers: _Answers) -> Record:
        """The record of the answer ``text``; relevance judges answer from ``answers``."""
        token = _ANSWERS.set(answers)
        try:
            return await self.check("output", text, {"question": question})
        finally:
            _ANSWERS.reset(token)

    def _record(self, stage: Stage, verdict: Verdict, original: str) -> Record:
        record = verdict_record(stage, verdict)
        record["policies"] = self.g.refs
        if verdict.action == "redact":
            record["content"] = verdict.content
            if "args" in verdict.extra:
                record["args"] = verdict.extra["args"]
            if self.g.masked and self.g.placeholder_fired(stage, record):
                record.update(mode="mask", why="no vault key")
            if self.g.keep_original:
                record["original"] = original
        elif verdict.action == "escalate":
            record["escalate"] = {
                k: verdict.extra.get(k) for k in ("group", "timeout", "on_timeout")
            }
        return record
