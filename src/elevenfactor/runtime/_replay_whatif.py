"""What-if replay: a recorded agent run executed again as a new run — the built-in program
``elevenfactor.replay`` — with exactly one thing changed: the model or route (``model``), the
prompt version (``prompt``), the guard policy (``policy``) or the release (``release``).

The new run's input holds everything it needs (``what_if_input``), so it resumes after a crash
like any run: the original's input, the change, and what the recording pins:

- **tools**, pinned (the default): a tool call whose (tool, canonical arguments) the recording
  made gets the recorded result without running the tool (the n-th identical call the n-th
  recorded result, in the order the calls are issued); any other call fails the run with
  ``replay_unpinned_tool`` naming the tool. The recorded result is the one journaled (after
  the recording's ``tool_result`` guard); the new run's guards check it again. With
  ``live_tools`` every tool call runs for real (the tools' answers of today).
- **by position**: the steps of ``POSITIONAL`` kinds (random numbers, the session history,
  memory recall, retrieval, the tool listing, and the rendered prompt unless the change is the
  prompt or the release) get the recording's output when the new run issues the same kind and
  name at the same position. The steps that would write the owner's state (``WRITES``:
  appending to the session, remembering extracted facts) never write: they get the recording's
  output when they line up, else a no-op output — a what-if replay never changes anybody's
  conversation or memory.

Model calls go to the (new) model live, metered, budgeted and recorded like any run's, under
the tags ``replay`` and the original's. Clock readings, budget and limit steps, guard verdicts
and approvals are live (an approval gate waits for a reviewer). Child runs (delegation,
handoff) are submitted as real child runs of their own agents, unpinned.
"""

from __future__ import annotations

import contextvars
import re
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from elevenfactor.errors import ModelNotFound, PromptNotFound, ReplayUnpinnedTool, RequestError
from elevenfactor.runtime._agent import Agent, AgentDeps
from elevenfactor.runtime._agent_spec import AgentSpec
from elevenfactor.runtime._codec import encode
from elevenfactor.runtime._context import RunContext
from elevenfactor.runtime._journal import Event
from elevenfactor.runtime._programs import Programs
from elevenfactor.runtime._replay_context import ReplayContext
from elevenfactor.runtime._run_state import RunState
from elevenfactor.store import Store

__all__ = [
    "REF_PATTERN",
    "WHAT_IF_PROGRAM",
    "WhatIf",
    "WhatIfProgram",
    "register_replay_program",
    "what_if_input",
]

REF_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/@-]{0,199}$"
"""A model, route, prompt, policy or release reference (``NAME@VERSION`` included)."""
_REF = re.compile(REF_PATTERN)
WHAT_IF_PROGRAM = "elevenfactor.replay"
"""The built-in program that executes a what-if replay."""
POSITIONAL = frozenset({"random", "session", "memory", "retrieval", "tools", "prompt"})
WRITES = frozenset({("session", "session.append"), ("memory", "memory.extract")})
_SKIPPED = {"skipped": "a what-if replay does not write"}
_PINNED: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "replay_pinned", default=None
)


@dataclass(frozen=True, slots=True)
class WhatIf:
    """The one thing a what-if replay changes, and whether the tools run live."""

    model: str | None = None
    prompt: str | None = None
    policy: str | None = None
    release: str | None = None
    live_tools: bool = False

    @property
    def changes(self) -> dict[str, str]:
        """The changes given (``{"model": "gpt-x"}``)."""
        given = {"model": self.model, "prompt": self.prompt, "policy": self.policy}
        given["release"] = self.release
        return {k: v for k, v in given.items() if v is not None}

    @property
    def is_what_if(self) -> bool:
        """Anything given: else a replay is deterministic."""
        return bool(self.changes) or self.live_tools

    def check(self) -> WhatIf:
        """``self`` if it changes one thing, or none with ``live_tools`` (``RequestError``
        otherwise)."""
        changes = self.changes
        if len(changes) > 1 or not (changes or self.live_tools):
            raise RequestError(
                "a what-if replay changes one thing: model, prompt, policy or release (or, "
                "with live_tools alone, nothing but running the tools for real)"
                + (f" (given: {', '.join(changes)})" if changes else ""),
                code="invalid_value",
                param="model",
            )
        for key, value in changes.items():
            if not isinstance(value, str) or not _REF.fullmatch(value):
                raise RequestError(
                    f"{key!r} must be a name, NAME@VERSION or NAME@LABEL (1-200 characters of "
                    f"A-Z a-z 0-9 . _ : / @ -); got {value!r:.60}",
                    code="invalid_value",
                    param=key,
                )
        return self

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {**self.changes, "live_tools": self.live_tools}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WhatIf:
        """The inverse of ``to_dict``."""
        return cls(
            model=data.get("model"),
            prompt=data.get("prompt"),
            policy=data.get("policy"),
            release=data.get("release"),
            live_tools=bool(data.get("live_tools")),
        )


def what_if_input(
    run_id: str,
    agent: str,
    payload: Any,
    options: WhatIf,
    pins: list[tuple[str, str, bytes]],
    by_step: Mapping[str, Event],
    payloads: Mapping[str, bytes],
    release: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The input of the what-if run of ``run_id`` (see the module docstring): ``pins`` are the
    recording's tool calls (from its deterministic replay), ``by_step`` and ``payloads`` its
    journal, ``release`` the agent's entry in the release's manifest (``release_agent``)."""
    skip = {"prompt"} if options.prompt or options.release else set()
    positional = {
        sid: [ev.kind, ev.name, payloads[ev.output_hash].decode()]
        for sid, ev in by_step.items()
        if ev.status == "done"
        and ev.output_hash is not None
        and ev.output_hash in payloads
        and ev.kind not in skip
        and (ev.kind in POSITIONAL or (ev.kind, ev.name) in WRITES)
    }
    return {
        "replay_of": run_id,
        "agent": agent,
        "input": payload,
        "options": options.to_dict(),
        "pins": [[tool, args, out.decode()] for tool, args, out in pins],
        "positional": positional,
        **({"release_agent": release} if release is not None else {}),
    }


class _Plan:
    """A what-if run's input, parsed; the pin counters of one execution."""

    def __init__(self, payload: Mapping[str, Any]) -> None:
        self.options = WhatIf.from_dict(payload.get("options") or {})
        self.agent = str(payload["agent"])
        self.input = payload.get("input")
        self.replay_of = str(payload.get("replay_of"))
        self.pins: dict[tuple[str, str], list[str]] = {}
        for tool, args, out in payload.get("pins") or ():
            self.pins.setdefault((str(tool), str(args)), []).append(str(out))
        self.positional: dict[str, list[str]] = dict(payload.get("positional") or {})
        self.issued: Counter[tuple[str, str]] = Counter()


class WhatIfContext(RunContext):
    """The what-if run's context: tool calls and ``POSITIONAL`` steps served from the
    recording (see the module docstring)."""

    def __init__(self, shared: RunState, prefix: str, plan: _Plan) -> None:
        super().__init__(shared, prefix)
        self.plan = plan

    def branch(self, step_id: str, index: int) -> RunContext:
        """A branch view with the same plan."""
        return WhatIfContext(self._s, f"{step_id}.{index}.", self.plan)

    async def step(
        self,
        name: str,
        fn: Callable[..., Any],
        *args: Any,
        kind: str = "step",
        result_type: type[Any] | None = None,
        retry: Any = None,
        **kwargs: Any,
    ) -> Any:
        """``RunContext.step``, with the recording's output where it pins this step."""
        step_id = f"{self._prefix}{self._counter}"
        done = step_id in self._s.by_step  # journaled by an earlier execution of this run
        if kind == "tool":
            return await self._tool(name, fn, args, kwargs, done, result_type)
        recorded = self.plan.positional.get(step_id)
        lined_up = recorded is not None and recorded[0] == kind and recorded[1] == name
        if not done and lined_up and (kind in POSITIONAL or (kind, name) in WRITES):
            assert recorded is not None
            value = orjson.loads(recorded[2])
            return await super().step(name, _value, value, kind=kind, result_type=result_type)
        if not done and (kind, name) in WRITES:
            return await super().step(name, _value, _SKIPPED, kind=kind, result_type=result_type)
        return await super().step(
            name, fn, *args, kind=kind, result_type=result_type, retry=retry, **kwargs
        )

    async def _tool(
        self,
        name: str,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        done: bool,
        result_type: type[Any] | None,
    ) -> Any:
        tool = args[0] if args and isinstance(args[0], str) else name.removeprefix("tool:")
        given = args[1] if len(args) > 1 and isinstance(args[1], dict) else {}
        key = (tool, encode(given).decode())
        index = self.plan.issued[key]
        self.plan.issued[key] += 1
        outputs = [] if self.plan.options.live_tools else self.plan.pins.get(key, [])
        pinned = orjson.loads(outputs[index]) if index < len(outputs) else None
        if pinned is None and not done and not self.plan.options.live_tools:
            raise ReplayUnpinnedTool(
                f"the what-if replay of run {self.plan.replay_of} called tool {tool!r} with "
                f"arguments the recording never used ({key[1][:500]})",
                hint="replay with --live-tools (live_tools: true) to run the tools for real",
            )
        token = _PINNED.set(pinned if isinstance(pinned, dict) else None)
        try:
            return await super().step(
                name, fn, *args, kind="tool", result_type=result_type, **kwargs
            )
        finally:
            _PINNED.reset(token)


def _value(value: Any) -> Any:
    return value


class WhatIfAgent(Agent):
    """An agent whose tool calls return the recording's result when the step pins one."""

    async def _call_tool(
        self,
        name: str,
        args: dict[str, Any],
        run_id: str,
        owner: Mapping[str, Any],
        store: Store | None = None,
    ) -> dict[str, Any]:
        pinned = _PINNED.get()
        if pinned is not None:
            keys = ("content", "is_error", "error_code", "structured")
            return {k: pinned.get(k) for k in keys}
        return await super()._call_tool(name, args, run_id, owner, store)


class WhatIfProgram:
    """The ``elevenfactor.replay`` program: the agent of the recorded run, with the change,
    on the recorded input (see the module docstring). Its runs do not count in the agent's
    breaker."""

    def __init__(self, deps: AgentDeps) -> None:
        self.deps = deps
        self._agents: dict[tuple[str, WhatIf], WhatIfAgent] = {}

    def agent(
        self, name: str, options: WhatIf, release: Mapping[str, Any] | None = None
    ) -> WhatIfAgent:
        """The agent ``name`` with ``options``' change (built once per combination); a
        ``RequestError`` (or ``ModelNotFound``, ``PromptNotFound``, ``ConfigError``) names
        a change that cannot apply. ``release`` is the agent's entry in the release's
        manifest (``release_agent``), for a change of release."""
        key = (name, options)
        found = self._agents.get(key)
        if found is not None:
            return found
        spec = self.deps.specs.get(name)
        if release is not None:
            spec = release_spec(release)
        if spec is None:
            raise RequestError(
                f"run of {name!r}: a what-if replay needs an agent run, and {name!r} is not "
                "an agent of this project",
                code="invalid_value",
                param="run",
            )
        updates: dict[str, Any] = {}
        if options.model is not None:
            updates["model"] = _check_model(self.deps, options.model)
        if options.prompt is not None:
            updates["prompt"] = _uses_prompt(spec.name, spec.prompt, options.prompt)
        if options.policy is not None:
            updates["policy"] = options.policy
        if options.release is not None and release is None:
            raise RequestError(
                "a what-if replay by release needs the release's manifest",
                code="invalid_value",
                param="release",
            )
        built = WhatIfAgent(spec.model_copy(update=updates), self.deps)
        self._agents[key] = built
        return built

    async def __call__(self, ctx: RunContext, payload: Any) -> Any:
        if not isinstance(payload, dict) or not isinstance(payload.get("agent"), str):
            raise RequestError(f"the input of {WHAT_IF_PROGRAM} is {{agent, input, options}}")
        plan = _Plan(payload)
        agent = self.agent(plan.agent, plan.options, payload.get("release_agent"))
        if isinstance(ctx, ReplayContext):  # a what-if run replayed: all from its journal
            return await agent(ctx, plan.input)
        return await agent(WhatIfContext(ctx._s, "", plan), plan.input)


async def release_agent(store: Store, ref: str, agent: str) -> dict[str, Any]:
    """The entry of ``agent`` in the manifest of release ``ref`` (its spec as released, the
    prompt version and guard policies it resolved to); ``ReleaseNotFound`` or a
    ``RequestError`` when there is none."""
    from elevenfactor.runtime._release import get_release  # releases build on the runtime

    release = await get_release(store, ref)
    entry = ((release.manifest or {}).get("agents") or {}).get(agent)
    if not isinstance(entry, dict) or not isinstance(entry.get("spec"), dict):
        raise RequestError(
            f"release {release.label} has no agent {agent!r}",
            code="invalid_value",
            param="release",
        )
    return {"release_id": release.id, **entry}


def release_spec(entry: Mapping[str, Any]) -> AgentSpec:
    """The agent spec a release recorded, with its prompt and its guard policy pinned to the
    versions the release resolved them to (the spec's own settings: its model route and
    parameters, instructions, tools and limits)."""
    spec = AgentSpec.model_validate(entry["spec"])
    updates: dict[str, Any] = {}
    version = entry.get("prompt_version")
    if spec.prompt is not None and isinstance(version, str):
        updates["prompt"] = f"{spec.prompt.partition('@')[0]}@{version[:12]}"
    policies = entry.get("policies")
    if isinstance(policies, list) and len(policies) == 1 and isinstance(policies[0], str):
        updates["policy"] = policies[0]
    return spec.model_copy(update=updates) if updates else spec


def _check_model(deps: AgentDeps, name: str) -> str:
    project = deps.registry.project
    if name in project.routes or name in project.models or name in deps.registry.names():
        return name
    raise ModelNotFound(
        f"unknown model or route {name!r}",
        hint="routes: " + (", ".join(sorted(project.routes)) or "(none)")
        + "; deployments: " + (", ".join(sorted(project.models)) or "(none)"),
    )  # fmt: skip


def _uses_prompt(agent: str, have: str | None, prompt: str) -> str:
    wanted = prompt.partition("@")[0]
    uses = have.partition("@")[0] if have else None
    if uses != wanted:
        what = f"prompt {uses!r}" if uses else "inline instructions"
        raise PromptNotFound(
            f"agent {agent!r} does not use prompt {wanted!r} (it uses {what})",
            hint="--prompt replays the run with another version of the prompt its agent uses",
        )
    return prompt


def register_replay_program(programs: Programs, deps: AgentDeps) -> None:
    """Register ``elevenfactor.replay`` (unless a project program took the name)."""
    if WHAT_IF_PROGRAM not in programs:
        programs.register(WHAT_IF_PROGRAM, WhatIfProgram(deps))
