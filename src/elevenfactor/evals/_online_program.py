"""Online evaluation, the scoring side: the built-in durable program
``elevenfactor.online_eval``, one run per sampled (rule, run) (see ``_online``).

A scoring run, as journaled steps:

1. ``run.status``: waits (a durable timer, backing off from 1 s to 5 min, about 45 minutes in
   all) until the scored run's end is written — it is submitted just before that write;
2. ``observe``: what evals read of the run (``observe_run``: result, tool calls, tokens, cost,
   latency) and its input (the ``question`` a judge sees);
3. each ``judge`` scorer's model call: a metered call on its route (limits, budgets, kill
   switches, a ``model_calls`` row with this run's id, agent ``elevenfactor.online_eval``);
4. ``score``: every scorer (the judges' answers read from step 3); a scorer that raises gives
   an error score, never a failed run;
5. ``feedback``: one ``run_feedback`` row per scorer on the scored run, ``source = 'online'``,
   by ``scorer:<rule>`` in the run's organisation, with ids derived from this run so a write
   re-done after a crash adds nothing.

A run that ended in a state the rule does not score, a rule removed from the project since, and
a run deleted meanwhile end the scoring run ``succeeded`` with ``skipped`` saying why.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from elevenfactor.config import ProjectConfig
from elevenfactor.errors import (
    ConfigError,
    ElevenFactorError,
    LeaseLost,
    RunCancelled,
    RunNotFound,
    StepFailed,
)
from elevenfactor.evals._from_run import observe_run
from elevenfactor.evals._observed import Observed, ScoreContext
from elevenfactor.evals._online import ONLINE_EVAL, scorer_identity
from elevenfactor.evals._online_rules import PreparedRule, prepare_rules
from elevenfactor.evals._results import Score
from elevenfactor.evals._scorers_ext import JudgeScorer, judge_rubric_messages
from elevenfactor.evals._suite import Case
from elevenfactor.governance._policy_book import PolicyBook
from elevenfactor.governance._policy_model import Policy
from elevenfactor.models import Message, ModelSettings
from elevenfactor.runtime._agent import Agent, AgentDeps
from elevenfactor.runtime._agent_spec import AgentSpec
from elevenfactor.runtime._agent_spend import metered_call
from elevenfactor.runtime._context import RunContext
from elevenfactor.runtime._feedback import ScorerRow, record_scores
from elevenfactor.runtime._runs import get_run, run_input
from elevenfactor.runtime._settle import FINAL
from elevenfactor.store import Store

__all__ = ["OnlineEvalProgram", "online_program"]

_MESSAGES: TypeAdapter[list[Message]] = TypeAdapter(list[Message])
_WAITS = 16
_COMMENT = 500
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")


async def _status(store: Store, run_id: str) -> str | None:
    row = await store.fetchone("SELECT status FROM runs WHERE id = ?", (run_id,))
    return str(row[0]) if row is not None else None


async def _observe(store: Store, run_id: str) -> dict[str, Any]:
    observed = await observe_run(store, run_id)
    payload = await run_input(store, await get_run(store, run_id))
    return {"observed": asdict(observed), "input": payload}


def _case(run_id: str, payload: Any) -> Case:
    """The scored run's input as a case (its id the run's)."""
    if isinstance(payload, dict) and isinstance(payload.get("input"), str):
        payload = payload["input"]
    elif isinstance(payload, dict) and isinstance(payload.get("messages"), list):
        try:
            return Case(id=run_id, input=_MESSAGES.validate_python(payload["messages"]))
        except ValueError:
            pass
    if not isinstance(payload, str | dict):
        payload = json.dumps(payload, ensure_ascii=False, default=str)
    return Case(id=run_id, input=payload)


def _judge_key(route: str, messages: list[dict[str, str]]) -> str:
    return json.dumps([route, messages], sort_keys=True)


def _short(text: str, limit: int = _COMMENT) -> str:
    """``text`` without control characters, cut to ``limit`` (what a feedback row takes)."""
    text = _CONTROL.sub(" ", text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


class OnlineEvalProgram:
    """The durable program of scoring runs (see the module docstring). ``rules`` by name;
    ``deps`` are the agents' (the judges' calls are metered and recorded as theirs);
    ``policies`` by id for ``guard`` scorers; ``base`` the project directory."""

    def __init__(
        self,
        rules: Mapping[str, PreparedRule],
        deps: AgentDeps,
        *,
        base: Path | None = None,
        policies: Mapping[str, Policy] | None = None,
    ) -> None:
        self.rules = dict(rules)
        self.deps = deps
        self.base = base
        self.policies = dict(policies or {})
        self._spec = AgentSpec(name=ONLINE_EVAL, model=deps.registry.project.default_route)
        self._caller = Agent(self._spec, deps)

    async def __call__(self, ctx: RunContext, payload: Any) -> dict[str, Any]:
        """Score one run under one rule; the scores (or why none were given)."""
        rule_name, run_id = str(payload["rule"]), str(payload["run_id"])
        head = {"rule": rule_name, "run_id": run_id}
        rule = self.rules.get(rule_name)
        if rule is None:
            return {**head, "skipped": f"no online rule {rule_name!r} is configured now"}
        status = await self._wait_for_end(ctx, run_id)
        if status is None or status not in rule.rule.status:
            why = "the run is gone" if status is None else f"the run is {status}"
            return {**head, "skipped": why}
        try:
            seen = await ctx.step("observe", _observe, ctx.store, run_id, kind="eval")
        except StepFailed as exc:
            if exc.error_code == RunNotFound.code:  # deleted since it ended
                return {**head, "skipped": "the run is gone"}
            raise
        observed, case = Observed.from_dict(seen["observed"]), _case(run_id, seen["input"])
        answers = await self._judge_answers(ctx, rule, case, observed)
        scores = await ctx.step(
            "score", self._scores, ctx, rule, case, observed, answers, kind="eval"
        )
        rows = [self._row(ctx.run_id, rule, i, Score.from_dict(s)) for i, s in enumerate(scores)]
        written = await ctx.step(
            "feedback", record_scores, ctx.store, run_id, scorer_identity(rule.name), rows,
            kind="eval",
        )  # fmt: skip
        return {**head, "status": status, "scores": scores, "written": written}

    async def _wait_for_end(self, ctx: RunContext, run_id: str) -> str | None:
        for attempt in range(_WAITS):
            status = await ctx.step("run.status", _status, ctx.store, run_id, kind="eval")
            if status is None or status in FINAL:
                return status
            await ctx.sleep(min(2.0**attempt, 300.0), name="run.wait")
        raise TimeoutError(f"run {run_id} did not end while its scoring run waited")

    async def _judge(self, ctx: RunContext, route: str, messages: list[dict[str, str]]) -> str:
        """A judge's call on ``route``: metered and recorded as this run's."""
        spec = self._spec.model_copy(update={"model": route})
        step = functools.partial(self._caller._model, route=route)
        settings = ModelSettings(tags=list(ctx.lease.tags))
        sent = _MESSAGES.validate_python(messages)
        response = await metered_call(ctx, self.deps, spec, sent, settings, step)
        return response.message.content or ""

    async def _judge_answers(
        self, ctx: RunContext, rule: PreparedRule, case: Case, observed: Observed
    ) -> dict[str, str | Exception]:
        answers: dict[str, str | Exception] = {}
        for scorer in rule.scorers:
            if not isinstance(scorer, JudgeScorer):
                continue
            route = scorer.route or rule.judge_route
            if route is None:
                continue  # the scorer says so itself
            messages = judge_rubric_messages(scorer.rubric, case.input_text(), observed.text)
            key = _judge_key(route, messages)
            if key in answers:
                continue
            try:
                answers[key] = await self._judge(ctx, route, messages)
            except (LeaseLost, RunCancelled):
                raise
            except ElevenFactorError as exc:  # a failed model step, a refused budget
                answers[key] = exc
        return answers

    async def _scores(
        self,
        ctx: RunContext,
        rule: PreparedRule,
        case: Case,
        observed: Observed,
        answers: Mapping[str, str | Exception],
    ) -> list[dict[str, Any]]:
        async def judge(route: str, messages: list[dict[str, str]]) -> str:
            found = answers.get(_judge_key(route, messages))
            if isinstance(found, Exception):
                raise found
            if found is not None:
                return found
            # A guard rule's judge (relevance): a recorded call inside this step.
            settings = ModelSettings(tags=list(ctx.lease.tags))
            owner = ctx.lease.owner
            response = await self._caller._model(
                _MESSAGES.validate_python(messages), settings, ctx.run_id, owner, route=route
            )
            return response.message.content or ""

        sctx = ScoreContext(
            policies=self.policies, judge=judge, judge_route=rule.judge_route, base=self.base
        )
        out: list[dict[str, Any]] = []
        for scorer in rule.scorers:
            try:
                score = await scorer.score(observed, case, sctx)
            except Exception as exc:  # a scorer that raises: an error score, not a failed run
                label = str(getattr(scorer, "label", "scorer"))
                detail = exc.message if isinstance(exc, ElevenFactorError) else f"{exc}"
                message = _short(f"the scorer raised {type(exc).__name__}: {detail}")
                score = Score(label, False, 0.0, message, error=message)
            out.append(score.to_dict())
        return out

    def _row(self, scoring_run: str, rule: PreparedRule, index: int, score: Score) -> ScorerRow:
        """The feedback row of one score; its id fixed by the scoring run and position."""
        digest = hashlib.sha256(f"{scoring_run}\0{index}".encode()).hexdigest()[:32]
        label = "error" if score.error is not None else "pass" if score.passed else "fail"
        name = _short(score.name, 100)
        meta: dict[str, Any] = {"rule": rule.name, "scorer": name, "scoring_run": scoring_run}
        if rule.suite is not None:
            meta["suite"] = rule.suite
            meta["suite_version"] = rule.suite_version
        if score.error is not None:
            meta["error"] = _short(score.error)
        return ScorerRow(
            id=f"fb_{digest}",
            score=score.value,
            label=label,
            comment=_short(score.reason or score.error or label) or None,
            metadata=meta,
            rule=rule.name,
            scorer=name,
        )


def online_program(
    project: ProjectConfig,
    base: Path,
    deps: AgentDeps,
    *,
    source: str | None = None,
    errors: list[ConfigError] | None = None,
) -> OnlineEvalProgram:
    """The scoring program of ``project``'s online rules (see ``prepare_rules`` for errors)."""
    rules = prepare_rules(project, base, source=source, errors=errors)
    book = deps.policies
    policies = {p.id: p for p in book.all()} if isinstance(book, PolicyBook) else {}
    return OnlineEvalProgram(rules, deps, base=base, policies=policies)
