"""Eval runs are durable runs (factor 9): the built-in programs ``elevenfactor.eval`` (runs a
suite) and ``elevenfactor.eval.agent`` (runs one case against an agent with the eval's model
and prompt overrides), registered by the runtime for every worker.

An eval run's steps: ``prompt.pin`` (with ``--prompt``: a label resolved to the exact version
once, so every case uses the same one), then every repeat of every case on its own branch
(``ctx.map``, at most ``concurrency`` at once; see ``_program_case``), then ``results`` (the
``SuiteResult`` stored in ``eval_results``, and each child run's scores in ``run_feedback``
with source ``offline``). A crashed eval resumes from its journal: finished cases are not run
again. Its model calls carry the run's tags (``eval``, ``eval:SUITE``) and its owner, so
budgets, rate limits and cost reports apply to them as to any run.

A case whose target fails is a failed case; a target refused by a budget stops the eval: the
cases that ran are stored (status ``error``) and the run fails with the budget's error.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from elevenfactor.context import record_version
from elevenfactor.errors import BudgetExceeded, ConfigError, ModelNotFound, PromptNotFound
from elevenfactor.evals._from_run import observe_run
from elevenfactor.evals._observed import ScoreContext
from elevenfactor.evals._program_case import EvalAborted, run_case
from elevenfactor.evals._program_input import (
    EVAL_AGENT_PROGRAM,
    EVAL_PROGRAM,
    EvalInput,
    eval_tags,
)
from elevenfactor.evals._results import CaseResult, SuiteResult
from elevenfactor.evals._scorers_ext import CustomScorer
from elevenfactor.evals._store import save_result
from elevenfactor.governance import Principal
from elevenfactor.governance._policy_book import PolicyBook
from elevenfactor.models import Message, ModelSettings
from elevenfactor.runtime._agent import Agent, AgentDeps
from elevenfactor.runtime._agent_spec import AgentSpec
from elevenfactor.runtime._agent_spend import metered_call
from elevenfactor.runtime._context import RunContext
from elevenfactor.runtime._programs import Programs

__all__ = ["EvalAgentProgram", "EvalProgram", "EvalRun", "register_eval_programs"]

_MESSAGES: TypeAdapter[list[Message]] = TypeAdapter(list[Message])
_NOT_NAME = re.compile(r"[^A-Za-z0-9_.-]")


def check_model(deps: AgentDeps, name: str) -> str:
    """``name`` if it is a route or a deployment of the project, else ``ModelNotFound``."""
    project = deps.registry.project
    if name in project.routes or name in project.models:
        return name
    raise ModelNotFound(
        f"unknown model or route {name!r}",
        hint="routes: " + (", ".join(sorted(project.routes)) or "(none)")
        + "; deployments: " + (", ".join(sorted(project.models)) or "(none)"),
    )  # fmt: skip


class EvalRun:
    """What the cases of one eval run share: its input, the runtime's dependencies, the
    pinned prompt, the tags, and the callers of the target route and the judges."""

    def __init__(self, deps: AgentDeps, ctx: RunContext, inp: EvalInput, base: Path | None):
        self.deps = deps
        self.input = inp
        self.base = base
        self.store = ctx.store
        self.owner: Principal | None = ctx.lease.owner
        self.run_id = ctx.run_id
        self.tags = tuple(dict.fromkeys([*eval_tags(inp.suite.id), *ctx.lease.tags]))
        self.prompt: str | None = None
        target = inp.suite.target
        route = inp.model or (target.name if target.kind == "route" else None)
        name = "eval." + _NOT_NAME.sub("_", inp.suite.id)
        self.route_spec = AgentSpec(name=name, model=route or deps.registry.project.default_route)
        self.caller = Agent(self.route_spec, deps)
        book = deps.policies
        self.policies: Mapping[str, Any] = (
            {p.id: p for p in book.all()} if isinstance(book, PolicyBook) else {}
        )

    async def render_prompt(self, ref: str, inputs: dict[str, Any]) -> dict[str, Any]:
        """The pinned prompt rendered with a case's ``vars`` (a step of the route target)."""
        prompts = self.deps.prompts
        if prompts is None:
            raise PromptNotFound(f"prompt {ref!r}: no prompts are loaded")
        prompt = await prompts.resolve(ref, self.store)
        return {"ref": prompt.ref, "text": prompt.render(inputs), "settings": prompt.params()}

    async def pin_prompt(self, ref: str) -> str:
        """``ref`` (a label or a version prefix) as the exact ``id@version`` (recorded in the
        store, so the version can be explained later)."""
        prompts = self.deps.prompts
        if prompts is None:
            raise PromptNotFound(f"prompt {ref!r}: no prompts are loaded")
        prompt = await prompts.resolve(ref, self.store)
        await record_version(self.store, prompt)
        return f"{prompt.id}@{prompt.version}"

    async def observe_child(self, child_id: str) -> dict[str, Any]:
        """The child run's ``Observed`` as journaled (the recorder flushed first, so its model
        calls are in ``model_calls``)."""
        if self.deps.recorder is not None:
            await self.deps.recorder.flush()
        return asdict(await observe_run(self.store, child_id))

    async def judge_call(self, ctx: RunContext, route: str, messages: list[dict[str, str]]) -> str:
        """A judge's answer: a metered model call on ``route`` (journaled)."""
        spec = self.route_spec.model_copy(update={"model": route})
        settings = ModelSettings(tags=list(self.tags))
        response = await metered_call(
            ctx,
            self.deps,
            spec,
            _MESSAGES.validate_python(messages),
            settings,
            self._model_on(route),
        )
        return response.message.content or ""

    async def direct_judge(self, route: str, messages: list[dict[str, str]]) -> str:
        """A judge call made inside the ``score`` step (a guard rule's judge): recorded in
        ``model_calls``, not journaled on its own (the step's result is)."""
        response = await self.caller._model(
            _MESSAGES.validate_python(messages),
            ModelSettings(tags=list(self.tags)),
            self.run_id,
            self.owner,
            route=route,
        )
        return response.message.content or ""

    def _model_on(self, route: str) -> Any:
        async def call(
            messages: list[Message], settings: ModelSettings, run_id: str, owner: Any
        ) -> Any:
            return await self.caller._model(messages, settings, run_id, owner, route=route)

        return call


class EvalProgram:
    """The ``elevenfactor.eval`` program (see the module docstring)."""

    def __init__(self, deps: AgentDeps, base: Path | None = None) -> None:
        self.deps = deps
        self.base = base

    def check(self, inp: EvalInput) -> None:
        """Raise a configuration error when the suite's target, the model override or a
        custom scorer cannot be resolved (the CLI calls this before submitting)."""
        target = inp.suite.target
        if inp.model is not None:
            check_model(self.deps, inp.model)
        if target.kind == "route" and inp.model is None:
            check_model(self.deps, target.name)
        if target.kind == "agent":
            spec = self.deps.specs.get(target.name)
            if spec is None:
                raise ConfigError(
                    f"suite {inp.suite.id}: unknown agent {target.name!r}",
                    key="target.agent",
                    expected="one of: " + (", ".join(sorted(self.deps.specs)) or "(no agents)"),
                )
            if inp.prompt is not None:
                uses_prompt(spec, inp.prompt)
        sctx = ScoreContext(base=self.base)
        for case in inp.cases():
            for scorer in inp.suite.scorers_for(case):
                if isinstance(scorer, CustomScorer):
                    scorer.prepare(sctx)

    async def __call__(self, ctx: RunContext, payload: Any) -> dict[str, Any]:
        inp = EvalInput.parse(payload)
        self.check(inp)
        run = EvalRun(self.deps, ctx, inp, self.base)
        started = await ctx.now()
        if inp.prompt is not None:
            run.prompt = await ctx.step("prompt.pin", run.pin_prompt, inp.prompt, kind="prompt")
        aborted: list[EvalAborted] = []

        async def one(branch: RunContext, item: tuple[str, int]) -> dict[str, Any] | None:
            if aborted:
                return None  # a budget refused: start no more cases
            try:
                return await run_case(run, branch, item)
            except EvalAborted as exc:
                aborted.append(exc)
                return None

        rows = await ctx.map(one, inp.items(), limit=inp.concurrency, name="cases")
        finished = await ctx.now()
        done = [r for r in rows if r is not None]
        result = SuiteResult(
            suite_id=inp.suite.id,
            suite_version=inp.suite.version,
            results=[CaseResult.from_dict(r) for r in done],
            thresholds={c.key: inp.suite.pass_rate_for(c) for c in inp.cases()},
            metadata={
                "run_id": ctx.run_id,
                "target": f"{inp.suite.target.kind}:{inp.suite.target.name}",
                "model": inp.model,
                "prompt": run.prompt,
                "prompt_given": inp.prompt,
                "release": inp.release,
                "tags": list(inp.tags),
                "started_at": started,
                "finished_at": finished,
                "file": inp.suite.file,
            },
        )
        error = aborted[0].failure.message if aborted else None
        if error is not None:
            result.metadata["error"] = error
            result.metadata["cases_not_run"] = len(rows) - len(done)
        tokens = sum(
            int(r.get("observed", {}).get("input_tokens", 0))
            + int(r.get("observed", {}).get("output_tokens", 0))
            for r in done
        )
        children = {
            str(r["child_run"]): (str(r["case_id"]), int(r["repeat"]))
            for r in done
            if r.get("child_run") is not None
        }
        summary = await ctx.step(
            "results", save_result, ctx.store, self.run_owner(ctx), result,
            tokens=tokens, error=error, children=children, kind="eval",
        )  # fmt: skip
        if error is not None:
            raise BudgetExceeded(
                f"eval {inp.suite.id} stopped after {len(done)} of {len(rows)} case runs: {error}",
                hint="raise the budget, or run fewer cases (--tag, --repeats); the cases that "
                "ran are stored: `elevenfactor eval show " + ctx.run_id + "`",
            )
        return {**summary, "result": result.to_dict()}

    @staticmethod
    def run_owner(ctx: RunContext) -> Principal | None:
        """Whom the eval run acts for."""
        return ctx.lease.owner


class EvalAgentProgram:
    """The ``elevenfactor.eval.agent`` program: ``{"agent", "input", "model", "prompt"}`` — the
    agent run on ``input`` with its model replaced by ``model`` and, when the agent's prompt is
    ``prompt``'s, that version of it. Its runs do not count in the agent's breaker."""

    def __init__(self, deps: AgentDeps) -> None:
        self.deps = deps
        self._agents: dict[tuple[str, str | None, str | None], Agent] = {}

    def agent(self, name: str, model: str | None, prompt: str | None) -> Agent:
        """The agent ``name`` with the overrides (built once per combination)."""
        key = (name, model, prompt)
        found = self._agents.get(key)
        if found is not None:
            return found
        spec = self.deps.specs.get(name)
        if spec is None:
            raise ConfigError(
                f"unknown agent {name!r}",
                key="agent",
                expected="one of: " + (", ".join(sorted(self.deps.specs)) or "(no agents)"),
            )
        updates: dict[str, Any] = {}
        if model is not None:
            updates["model"] = check_model(self.deps, model)
        if prompt is not None:
            updates["prompt"] = uses_prompt(spec, prompt)
        built = Agent(spec.model_copy(update=updates), self.deps)
        self._agents[key] = built
        return built

    async def __call__(self, ctx: RunContext, payload: Any) -> Any:
        if not isinstance(payload, dict) or not isinstance(payload.get("agent"), str):
            raise ConfigError("the input of elevenfactor.eval.agent is {agent, input, ...}")
        agent = self.agent(payload["agent"], payload.get("model"), payload.get("prompt"))
        return await agent(ctx, payload.get("input"))


def uses_prompt(spec: AgentSpec, prompt: str) -> str:
    """``prompt`` when ``spec`` uses that prompt (any version), else a ``RequestError``-like
    ``PromptNotFound`` saying which prompt the agent uses."""
    wanted = prompt.partition("@")[0]
    have = spec.prompt.partition("@")[0] if spec.prompt else None
    if have != wanted:
        uses = f"prompt {have!r}" if have else "inline instructions"
        raise PromptNotFound(
            f"agent {spec.name!r} does not use prompt {wanted!r} (it uses {uses})",
            hint="--prompt pins a version of the prompt the target agent uses",
        )
    return prompt


def register_eval_programs(programs: Programs, deps: AgentDeps, base: Path | None) -> None:
    """Register ``elevenfactor.eval`` and ``elevenfactor.eval.agent`` (unless a project
    program took those names: ``build_runtime`` reports that)."""
    if EVAL_PROGRAM not in programs:
        programs.register(EVAL_PROGRAM, EvalProgram(deps, base))
    if EVAL_AGENT_PROGRAM not in programs:
        programs.register(EVAL_AGENT_PROGRAM, EvalAgentProgram(deps))
