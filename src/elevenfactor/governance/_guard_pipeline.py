"""The guard pipeline (factor 10): one or more policies turned into guards, and a verdict per
stage of a run or a gateway call.

``GuardPipeline.build(policies, judge=...)`` builds every rule once (``pipeline_for`` caches
pipelines per tuple of policy versions). ``check(stage, text)`` runs every rule of every policy
at that stage: rule-based checks inline (microseconds; no task is created when nothing is
asynchronous), the relevance judge and SQL parsing of large input concurrently with
``asyncio``. **The most severe action wins** (allow < monitor < redact < escalate < block), the
earliest rule (policy order, then rule order) on a tie; the verdict carries every finding of
every rule that fired. When the action is ``redact``, every finding of every redacting rule is
rewritten in one pass: overlapping spans are merged, ``placeholder`` findings become reversible
placeholders of the caller's ``PlaceholderMap`` (stable across a conversation), ``mask``
findings ``[REDACTED:kind]`` (a merged span holding a ``mask`` finding is masked).

Placeholders are reversible by design, so rules at the ``output`` stage always mask: a
placeholder there would be restored for the very user it was meant to hide the value from.

A guard that raises is handled by its policy's ``on_error``: ``block`` fails closed (a
``guard.error`` finding naming the rule and the exception type), ``allow`` records the same
finding as ``monitor``. Matched values never appear in verdicts, records, logs or exceptions:
findings carry positions and details written without the content.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from elevenfactor.governance._guard_builtin import BuiltinGuard, Findings, build_guard
from elevenfactor.governance._guard_content import TextViews
from elevenfactor.governance._guard_judge import Judge
from elevenfactor.governance._guard_redact import PlaceholderMap, label_for, merge_findings
from elevenfactor.governance._guard_types import ACTIONS, STAGES, Action, Finding, Stage, Verdict
from elevenfactor.governance._policy_model import Policy
from elevenfactor.observe._metrics import guard_verdict

__all__ = [
    "GuardEntry",
    "GuardPipeline",
    "Outcome",
    "decide",
    "pipeline_for",
    "rewrite",
    "run_entries",
    "verdict_record",
]

log = logging.getLogger("elevenfactor.guards")

Outcome = list[Finding] | Exception
"""What one rule produced: its findings, or the exception it raised."""
Mode = Literal["placeholder", "mask"]
_CACHE_SIZE = 64
_cache: OrderedDict[tuple[Any, ...], GuardPipeline] = OrderedDict()
_cache_lock = threading.Lock()


@dataclass(frozen=True, slots=True)
class GuardEntry:
    """One rule of one policy at one stage, built."""

    policy: Policy
    guard: BuiltinGuard

    @property
    def label(self) -> str:
        """The rule's label."""
        return self.guard.name


class GuardPipeline:
    """The guards of one or more policies, per stage, in policy then rule order."""

    def __init__(
        self, policies: Sequence[Policy], stages: Mapping[Stage, Sequence[GuardEntry]]
    ) -> None:
        self.policies = tuple(policies)
        self._stages = {stage: tuple(stages.get(stage, ())) for stage in STAGES}

    @classmethod
    def build(cls, policies: Sequence[Policy], *, judge: Judge | None = None) -> GuardPipeline:
        """Build every rule of ``policies`` (``ConfigError`` for one that cannot be built).
        ``judge`` answers ``relevance`` rules; without one they are guard errors."""
        stages: dict[Stage, list[GuardEntry]] = {stage: [] for stage in STAGES}
        for policy in policies:
            for stage in STAGES:
                for i, spec in enumerate(policy.spec.stages.rules(stage)):
                    key = f"stages.{stage}[{i}]"
                    guard = build_guard(spec, judge=judge, source=policy.file, key=key)
                    if stage == "output":  # the user would see a placeholder restored
                        guard.mode = "mask"
                    stages[stage].append(GuardEntry(policy, guard))
        return cls(policies, stages)

    def has(self, stage: Stage) -> bool:
        """Whether any rule stands at ``stage`` (callers skip the stage otherwise)."""
        return bool(self._stages[stage])

    def entries(self, stage: Stage) -> tuple[GuardEntry, ...]:
        """The rules at ``stage``, in order."""
        return self._stages[stage]

    async def check(
        self,
        stage: Stage,
        content: str,
        ctx: Mapping[str, Any] | None = None,
        placeholders: PlaceholderMap | None = None,
    ) -> Verdict:
        """The verdict on ``content`` at a text stage (see the module docstring). Placeholders
        of a ``redact`` verdict are issued from ``placeholders`` (restore with it later)."""
        started = time.perf_counter_ns()
        entries = self._stages[stage]
        if not entries:
            return decide((), (), content, placeholders, started)
        views, context = TextViews(content), dict(ctx or {})
        if stage == "tool_call":
            entries = tuple(e for e in entries if not e.guard.tool_call)
        outcomes = await run_entries(entries, lambda g: g.start(views, context))
        verdict = decide(entries, outcomes, content, placeholders, started)
        guard_verdict(stage, verdict.action, verdict.policy)
        return verdict

    async def check_tool_call(
        self,
        tool: str,
        args: dict[str, Any],
        ctx: Mapping[str, Any] | None = None,
        placeholders: PlaceholderMap | None = None,
    ) -> Verdict:
        """The verdict on a tool call before it runs: tool-call rules read ``tool`` and
        ``args``; ``pii``/``secrets``/``phrases``/``length`` read the JSON of ``args``. A
        ``redact`` verdict rewrites the string values (and keys) of ``args``:
        ``extra["args"]`` holds the rewritten arguments, ``content`` their JSON."""
        started = time.perf_counter_ns()
        entries = self._stages["tool_call"]
        content = json.dumps(args, ensure_ascii=False, default=str)
        views, context = TextViews(content), {**(ctx or {}), "tool": tool}

        def start(guard: BuiltinGuard) -> Findings:
            return guard.start_call(tool, args) if guard.tool_call else guard.start(views, context)

        outcomes = await run_entries(entries, start)
        verdict = decide(entries, outcomes, content, placeholders, started)
        guard_verdict("tool_call", verdict.action, verdict.policy)
        if verdict.action != "redact":
            return verdict
        redacting = [
            e.guard
            for e, out in zip(entries, outcomes, strict=True)
            if isinstance(out, list) and out and e.guard.action == "redact"
        ]
        mapping = PlaceholderMap() if placeholders is None else placeholders
        count = [0]
        new_args = _rewrite_args(args, redacting, context, mapping, count, 0)
        if not count[0]:
            failed = Finding(
                "guard.error",
                "guard_error",
                detail=f"rule {verdict.rule!r}: the redaction could not be applied to the "
                "arguments",
            )
            findings = (*verdict.findings, failed)
            return replace(verdict, action="block", findings=findings, content=None)
        new_content = json.dumps(new_args, ensure_ascii=False, default=str)
        return replace(verdict, content=new_content, extra={**verdict.extra, "args": new_args})


async def run_entries(
    entries: Sequence[GuardEntry], start: Callable[[BuiltinGuard], Findings]
) -> list[Outcome]:
    """Each entry's outcome: synchronous results inline, awaitables gathered concurrently
    (only when there are any); an exception is the entry's outcome, never raised."""
    outcomes: list[Outcome] = []
    pending: list[tuple[int, Awaitable[list[Finding]]]] = []
    for i, entry in enumerate(entries):
        try:
            result = start(entry.guard)
        except Exception as exc:
            outcomes.append(exc)
            continue
        if isinstance(result, list):
            outcomes.append(result)
        else:
            outcomes.append([])
            pending.append((i, result))
    if len(pending) == 1:
        i, awaitable = pending[0]
        try:
            outcomes[i] = await awaitable
        except Exception as exc:
            outcomes[i] = exc
    elif pending:
        done = await asyncio.gather(*(a for _, a in pending), return_exceptions=True)
        for (i, _), outcome in zip(pending, done, strict=True):
            if isinstance(outcome, BaseException) and not isinstance(outcome, Exception):
                raise outcome
            outcomes[i] = outcome
    return outcomes


def decide(
    entries: Sequence[GuardEntry],
    outcomes: Sequence[Outcome],
    content: str,
    placeholders: PlaceholderMap | None,
    started_ns: int,
) -> Verdict:
    """The pipeline's verdict from each entry's outcome (most severe action, earliest rule on
    a tie; ``content`` rewritten when the action is ``redact``)."""
    findings: list[Finding] = []
    fired: list[dict[str, Any]] = []
    parts: list[tuple[Finding, Mode]] = []
    best: tuple[int, GuardEntry] | None = None
    for entry, outcome in zip(entries, outcomes, strict=True):
        action: Action
        if isinstance(outcome, Exception):
            action = "block" if entry.policy.spec.on_error == "block" else "monitor"
            found = [_error_finding(entry, outcome)]
        elif outcome:
            action, found = entry.guard.action, outcome
        else:
            continue
        findings.extend(found)
        kinds = sorted({f.kind for f in found})
        fired.append(
            {
                "policy": entry.policy.ref,
                "rule": entry.label,
                "action": action,
                "kinds": kinds,
                "count": len(found),
            }
        )
        if action == "redact":
            parts.extend((f, entry.guard.mode) for f in found)
        rank = ACTIONS.index(action)
        if best is None or rank > best[0]:
            best = (rank, entry)
    extra: dict[str, Any] = {"fired": fired}
    if best is None:
        extra["elapsed_us"] = (time.perf_counter_ns() - started_ns) // 1000
        return Verdict("allow", tuple(findings), extra=extra)
    rank, entry = best
    action = ACTIONS[rank]
    text: str | None = None
    if action == "redact":
        mapping = PlaceholderMap() if placeholders is None else placeholders
        text = rewrite(content, parts, mapping)
    if action == "escalate":
        escalate = entry.policy.spec.escalate
        extra["group"] = getattr(entry.guard.spec, "group", None) or escalate.group
        extra["timeout"] = escalate.timeout
        extra["on_timeout"] = escalate.on_timeout
    extra["elapsed_us"] = (time.perf_counter_ns() - started_ns) // 1000
    return Verdict(action, tuple(findings), entry.label, entry.policy.ref, text, extra)


def rewrite(text: str, parts: Sequence[tuple[Finding, Mode]], mapping: PlaceholderMap) -> str:
    """``text`` with every finding replaced in one pass: overlapping spans merged, a merged
    span masked (``[REDACTED:kind]``) when any of its findings is ``mask`` mode, else a
    placeholder from ``mapping``. A finding about the whole content covers all of it."""
    spans = [(f if f.start >= 0 else replace(f, start=0, end=len(text)), mode) for f, mode in parts]
    spans.sort(key=lambda p: (p[0].start, -(p[0].end - p[0].start)))
    out: list[str] = []
    pos = 0
    i = 0
    while i < len(spans):
        group = [spans[i]]
        end = spans[i][0].end
        i += 1
        while i < len(spans) and spans[i][0].start < end:
            group.append(spans[i])
            end = max(end, spans[i][0].end)
            i += 1
        merged = merge_findings([f for f, _ in group])[0]
        out.append(text[pos : merged.start])
        if any(mode == "mask" for _, mode in group):
            out.append(f"[REDACTED:{merged.kind}]")
        else:
            value = text[merged.start : merged.end]
            out.append(mapping.placeholder_for(label_for(merged), value, text))
        pos = merged.end
    out.append(text[pos:])
    return "".join(out)


def verdict_record(stage: Stage, verdict: Verdict) -> dict[str, Any]:
    """The journal JSON of a verdict: stage, action, policy, rule, findings (positions and
    details, never the matched text), the rules that fired and the time taken."""
    return {
        "stage": stage,
        "action": verdict.action,
        "policy": verdict.policy,
        "rule": verdict.rule,
        "findings": [f.to_dict() for f in verdict.findings],
        "fired": list(verdict.extra.get("fired", [])),
        "elapsed_us": verdict.extra.get("elapsed_us", 0),
    }


def pipeline_for(policies: Sequence[Policy], judge: Judge | None = None) -> GuardPipeline:
    """The pipeline of ``policies`` (and ``judge``), built once per tuple of policy versions
    and kept in a small LRU cache."""
    key = (tuple((p.id, p.version, p.full_hash) for p in policies), judge)
    with _cache_lock:
        found = _cache.get(key)
        if found is not None:
            _cache.move_to_end(key)
            return found
    pipeline = GuardPipeline.build(policies, judge=judge)
    with _cache_lock:
        _cache[key] = pipeline
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return pipeline


def _error_finding(entry: GuardEntry, exc: Exception) -> Finding:
    name = type(exc).__name__
    log.warning(
        "guard rule %r of policy %s failed (%s); on_error=%s",
        entry.label,
        entry.policy.ref,
        name,
        entry.policy.spec.on_error,
    )
    return Finding("guard.error", "guard_error", detail=f"rule {entry.label!r} failed ({name})")


def _rewrite_args(
    node: Any,
    guards: Sequence[BuiltinGuard],
    ctx: Mapping[str, Any],
    mapping: PlaceholderMap,
    count: list[int],
    depth: int,
) -> Any:
    """``node`` with every string (value or key) rewritten by the redacting ``guards``."""
    if isinstance(node, str):
        views = TextViews(node)
        parts: list[tuple[Finding, Mode]] = []
        for guard in guards:
            result = guard.start(views, ctx)
            if inspect.iscoroutine(result):
                result.close()
            elif isinstance(result, list):
                parts.extend((f, guard.mode) for f in result)
        if not parts:
            return node
        count[0] += 1
        return rewrite(node, parts, mapping)
    if depth > 64:
        return node
    if isinstance(node, Mapping):
        return {
            _rewrite_args(k, guards, ctx, mapping, count, depth + 1): _rewrite_args(
                v, guards, ctx, mapping, count, depth + 1
            )
            for k, v in node.items()
        }
    if isinstance(node, (list, tuple)):
        return [_rewrite_args(v, guards, ctx, mapping, count, depth + 1) for v in node]
    return node
