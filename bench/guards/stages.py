"""In-process cost of a policy: ``check(stage, 2 KB)`` per stage, each rule alone, and a 2 KB
answer streamed through ``StreamGuard`` in 50 chunks; the floor is no policy at all (the
caller's ``has(stage)`` is false and nothing runs)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from bench.guards.inputs import chunks, inputs, policies
from bench.stats import summarize
from elevenfactor.governance._guard_content import TextViews
from elevenfactor.governance._guard_injection_model import score as classifier_score
from elevenfactor.governance._guard_pipeline import GuardPipeline, pipeline_for
from elevenfactor.governance._guard_stream import StreamGuard
from elevenfactor.governance._guard_types import STAGES
from elevenfactor.governance._policy_load import parse_policy
from elevenfactor.governance._policy_model import Policy

__all__ = ["Case", "cases", "run_round"]

STREAM_CHUNKS = 50

Timed = Callable[[], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Case:
    """One thing timed: ``kind`` is stage, rule or stream; ``run`` does it once."""

    kind: str
    policy: str
    what: str
    input: str
    run: Timed
    classifier: bool = False


def _check(pipeline: GuardPipeline, stage: Any, text: str) -> Timed:
    async def run() -> Any:
        if pipeline.has(stage):  # what every caller does: no rules, no call
            return await pipeline.check(stage, text)
        return None

    return run


def _stream(pipeline: GuardPipeline, pieces: list[str]) -> Timed:
    async def run() -> Any:
        if not pipeline.has("output"):
            return None
        guard = StreamGuard(pipeline)
        for piece in pieces:
            guard.feed(piece)
        return await guard.finish()

    return run


def _rule(guard: Any, text: str) -> Timed:
    async def run() -> Any:
        return guard.start(TextViews(text), {})

    return run


def _score(text: str) -> Timed:
    async def run() -> Any:
        return classifier_score(text)

    return run


def cases() -> list[Case]:
    """Every (policy, stage, input) with rules, the floor for each, each rule of ``strict``
    alone, the classifier alone, and the stream."""
    out: list[Case] = []
    floor = pipeline_for([])
    for name, text in inputs().items():
        built = {p: pipeline_for([policy]) for p, policy in policies().items()}
        for stage in STAGES:
            if stage == "tool_call":
                continue
            out.append(Case("stage", "none", stage, name, _check(floor, stage, text)))
            for pname, pipeline in built.items():
                if pipeline.has(stage):
                    clf = any(e.guard.spec.rule == "injection" for e in pipeline.entries(stage))
                    out.append(
                        Case("stage", pname, stage, name, _check(pipeline, stage, text), clf)
                    )
        pieces = chunks(text, STREAM_CHUNKS)
        out.append(Case("stream", "none", "output", name, _stream(floor, pieces)))
        for pname, pipeline in built.items():
            out.append(Case("stream", pname, "output", name, _stream(pipeline, pieces)))
        for entry in built["strict"].entries("input"):
            spec = entry.guard.spec
            if spec.rule == "injection":
                rules_only = GuardPipeline.build([_rules_only()]).entries("input")[0].guard
                out.append(
                    Case("rule", "strict", "injection (rules only)", name, _rule(rules_only, text))
                )
                out.append(
                    Case("rule", "strict", "injection classifier alone", name, _score(text), True)
                )
            out.append(
                Case(
                    "rule",
                    "strict",
                    entry.label,
                    name,
                    _rule(entry.guard, text),
                    spec.rule == "injection",
                )
            )
    return out


def _rules_only() -> Policy:
    yaml = "stages:\n  input: [{rule: injection, classifier: false}]\n"
    return parse_policy(yaml.encode(), file="bench", policy_id="rules-only")


async def _time(case: Case, n: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        await case.run()
    perf = time.perf_counter_ns
    out = []
    for _ in range(n):
        t0 = perf()
        await case.run()
        out.append((perf() - t0) / 1000)
    return out


def run_round(
    all_cases: list[Case], rnd: int, n: int, warmup: int, advance: Callable[[], None]
) -> list[dict[str, Any]]:
    """One round over every case, starting at a different case each round; µs per call."""
    k = rnd % len(all_cases)
    order = all_cases[k:] + all_cases[:k]
    rows = []
    for case in order:
        lat = asyncio.run(_time(case, n, warmup))
        rows.append(
            {
                "kind": case.kind,
                "policy": case.policy,
                "what": case.what,
                "input": case.input,
                "classifier": case.classifier,
                "us": summarize(lat),
            }
        )
        advance()
    return rows
