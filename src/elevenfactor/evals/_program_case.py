"""One run of one case inside an eval run, as journaled steps (see ``_program``).

- **route target**: the case's messages (after the pinned prompt, rendered with the case's
  ``vars``, as the system message when ``--prompt`` is given) go to the route as a metered
  model call — the same ``limits``/``budget``/``model`` steps an agent's call takes, recorded
  in ``model_calls`` with the eval's tags — between two journaled clock readings (its latency).
- **agent / workflow target**: a child run (``elevenfactor.eval.agent`` with the overrides,
  or the workflow), carrying the eval's owner and tags; observed from its result, journal and
  model calls (``observe_run``) in a journaled ``observe`` step.
- **scores**: each ``judge`` scorer's call is a metered model call on its route, then one
  journaled ``score`` step runs every scorer (the judges' answers read from those calls).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from pydantic import TypeAdapter

from elevenfactor.errors import ElevenFactorError, StepFailed
from elevenfactor.evals._observed import Observed, ScoreContext, observe
from elevenfactor.evals._program_input import EVAL_AGENT_PROGRAM
from elevenfactor.evals._results import CaseResult, Score
from elevenfactor.evals._scorers_ext import JudgeScorer, judge_rubric_messages
from elevenfactor.evals._suite import Case
from elevenfactor.governance import price_book
from elevenfactor.models import Message, ModelSettings, SystemMessage, UserMessage
from elevenfactor.observe import call_cost
from elevenfactor.runtime._agent_spend import metered_call
from elevenfactor.runtime._context import RunContext
from elevenfactor.runtime._subruns import run_child_with_id

if TYPE_CHECKING:
    from elevenfactor.evals._program import EvalRun

__all__ = ["ABORTING", "EvalAborted", "child_run", "run_case"]

_MESSAGES: TypeAdapter[list[Message]] = TypeAdapter(list[Message])
ABORTING = frozenset({"budget_exceeded", "killed", "kill_switch", "agent_killed"})
"""Error codes that stop the whole eval (the spend is refused), not just the case."""


class EvalAborted(Exception):
    """A case's target was refused for a reason that refuses every case (a budget)."""

    def __init__(self, failure: StepFailed) -> None:
        super().__init__(failure.message)
        self.failure = failure


def _messages(case: Case) -> list[Message]:
    if isinstance(case.input, str):
        return [UserMessage(content=case.input)]
    if isinstance(case.input, list):
        return list(case.input)
    given = case.input
    if isinstance(given.get("input"), str):
        return [UserMessage(content=given["input"])]
    if isinstance(given.get("messages"), list):
        return list(_MESSAGES.validate_python(given["messages"]))
    return [UserMessage(content=case.input_text())]


def _agent_payload(case: Case) -> Any:
    if isinstance(case.input, str):
        payload: dict[str, Any] = {"input": case.input}
    elif isinstance(case.input, list):
        payload = {"messages": [m.model_dump(mode="json") for m in case.input]}
    else:
        payload = dict(case.input)
    if case.vars and "prompt_inputs" not in payload:
        payload["prompt_inputs"] = dict(case.vars)
    return payload


def _workflow_payload(case: Case) -> Any:
    if isinstance(case.input, list):
        return {"messages": [m.model_dump(mode="json") for m in case.input]}
    return case.input


async def child_run(
    ctx: RunContext, program: str, payload: Any, tags: list[str]
) -> tuple[str, Any]:
    """A child run of ``program`` carrying the eval's tags: its id and its result
    (``StepFailed`` carrying the child's error code when it failed)."""
    return await run_child_with_id(ctx, program, payload, tags=tags)


async def _route_call(run: EvalRun, ctx: RunContext, case: Case) -> Observed:
    messages = _messages(case)
    settings = ModelSettings()
    if run.prompt is not None:
        rendered = await ctx.step(
            "prompt", run.render_prompt, run.prompt, dict(case.vars), kind="prompt"
        )
        if not any(isinstance(m, SystemMessage) for m in messages):
            messages = [SystemMessage(content=str(rendered["text"])), *messages]
        settings = ModelSettings.model_validate(rendered.get("settings") or {})
        settings = settings.model_copy(update={"prompt_version": str(rendered["ref"])})
    settings = settings.model_copy(update={"tags": list(run.tags)})
    spec = run.route_spec
    step = functools.partial(run.caller._model, route=spec.model)
    start = await ctx.now()
    response = await metered_call(ctx, run.deps, spec, messages, settings, step)
    end = await ctx.now()
    cost = call_cost(
        price_book(run.deps.registry.project),
        response.deployment,
        response.usage,
        cache_hit=response.cache_hit,
    )
    return observe(response, cost_usd=cost, latency_ms=max(0.0, (end - start) * 1000.0))


async def _child_observe(run: EvalRun, ctx: RunContext, case: Case) -> tuple[Observed, str]:
    target = run.input.suite.target
    if target.kind == "agent":
        payload: Any = {
            "agent": target.name,
            "input": _agent_payload(case),
            "model": run.input.model,
            "prompt": run.prompt,
        }
        program = EVAL_AGENT_PROGRAM
    else:
        payload, program = _workflow_payload(case), target.name
    child_id, _ = await child_run(ctx, program, payload, list(run.tags))
    data = await ctx.step("observe", run.observe_child, child_id, kind="eval")
    return Observed.from_dict(data), child_id


async def _judge_answers(
    run: EvalRun, ctx: RunContext, case: Case, observed: Observed
) -> dict[str, str | Exception]:
    answers: dict[str, str | Exception] = {}
    for scorer in run.input.suite.scorers_for(case):
        if not isinstance(scorer, JudgeScorer):
            continue
        route = scorer.route or run.input.suite.defaults.judge_route
        if route is None:
            continue  # the scorer itself says it has no route
        messages = judge_rubric_messages(scorer.rubric, case.input_text(), observed.text)
        key = _judge_key(route, messages)
        if key in answers:
            continue
        try:
            answers[key] = await run.judge_call(ctx, route, messages)
        except StepFailed as exc:
            if exc.error_code in ABORTING:
                raise EvalAborted(exc) from exc
            answers[key] = exc
    return answers


def _judge_key(route: str, messages: list[dict[str, str]]) -> str:
    return json.dumps([route, messages], sort_keys=True)


async def _scores(
    run: EvalRun, case: Case, observed: Observed, answers: Mapping[str, str | Exception]
) -> list[dict[str, Any]]:
    async def judge(route: str, messages: list[dict[str, str]]) -> str:
        found = answers.get(_judge_key(route, messages))
        if isinstance(found, Exception):
            raise found
        if found is None:  # a guard rule's judge: an unjournaled call inside this step
            return await run.direct_judge(route, messages)
        return found

    sctx = ScoreContext(
        policies=run.policies,
        judge=judge,
        judge_route=run.input.suite.defaults.judge_route,
        base=run.base,
    )
    out: list[dict[str, Any]] = []
    for scorer in run.input.suite.scorers_for(case):
        try:
            score = await scorer.score(observed, case, sctx)
        except ElevenFactorError as exc:
            label = str(getattr(scorer, "label", "scorer"))
            score = Score(label, False, 0.0, exc.message, error=exc.message)
        out.append(score.to_dict())
    return out


async def run_case(run: EvalRun, ctx: RunContext, item: tuple[str, int]) -> dict[str, Any]:
    """One repeat of one case, as journaled steps; its ``CaseResult`` as a dict (with
    ``child_run`` when it ran as a child run). ``EvalAborted`` when a budget refused."""
    case_id, repeat = item
    case = run.input.suite.case(case_id)
    child_id: str | None = None
    try:
        if run.input.suite.target.kind == "route":
            observed = await _route_call(run, ctx, case)
        else:
            observed, child_id = await _child_observe(run, ctx, case)
    except StepFailed as exc:
        if exc.error_code in ABORTING:
            raise EvalAborted(exc) from exc
        failed = CaseResult(case_id, repeat, (), error=exc.message[:1000])
        return {**failed.to_dict(), "child_run": None}
    answers = await _judge_answers(run, ctx, case, observed)
    scores = await ctx.step("score", _scores, run, case, observed, answers, kind="eval")
    result = CaseResult(
        case_id,
        repeat,
        tuple(Score.from_dict(s) for s in scores),
        output=observed.summary(),
        cost_usd=observed.cost_usd,
        latency_ms=observed.latency_ms,
    )
    return {**result.to_dict(), "child_run": child_id, "observed": asdict(observed)}
