"""An agent's instructions and context window, as journaled steps.

- ``prompt``: an agent with ``prompt:`` (a prompt file, ``id@label`` or ``id@version``) resolves
  and renders it in the run's first step — its inputs are the agent's ``prompt_inputs`` updated
  with the run input's ``prompt_inputs`` — records the version in the store (``prompt_versions``)
  and journals the exact reference and text, so a resumed run uses the same instructions even if
  a label moved meanwhile; every model call of the run records the reference.
- ``context``: before each model request the conversation is fitted into the model's window under
  one token budget (``elevenfactor.context.assemble``): the instructions, the tool definitions and
  the run's own messages (its input and turns; long tool results shortened) go whole; the
  session's earlier conversation, long-term memory and retrieved passages share the rest. The
  manifest of what went in and what was left out is journaled (a ``context`` step: ``elevenfactor
  runs show RUN --context STEP``). A summary of old turns is a journaled model call on the history
  section's route, reused for the same span. It runs when the agent declares ``context:`` or when
  its model's window is known; otherwise the messages are sent as they are.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from elevenfactor.context import (
    ContextSpec,
    Item,
    Manifest,
    PromptRegistry,
    assemble,
    budget_for,
    counter_for,
    record_version,
)
from elevenfactor.context._ctx_items import eligible
from elevenfactor.errors import ConfigError, ModelNotFound, PromptNotFound
from elevenfactor.models import (
    Message,
    ModelSettings,
    SystemMessage,
    UserMessage,
)
from elevenfactor.runtime._agent_spec import AgentSpec
from elevenfactor.runtime._context import RunContext
from elevenfactor.store import Store

if TYPE_CHECKING:
    from elevenfactor.models import ModelRegistry

__all__ = [
    "Instructions",
    "Summarise",
    "Turn",
    "fit_context",
    "input_query",
    "instructions_for",
    "summary_request",
]

_SUMMARY_PROMPT = (
    "Summarise the conversation below for the assistant who continues it: the user's goals, "
    "facts and decisions, open questions. Be brief and concrete; no preamble."
)


@dataclass(frozen=True, slots=True)
class Instructions:
    """The system prompt of a run, and the prompt version it was rendered from (if any)."""

    text: str | None
    prompt: str | None = None
    settings: Mapping[str, Any] | None = None
    """The prompt's model parameters (temperature, max_tokens, ...), under the agent's own."""


def input_query(messages: Sequence[Message]) -> str:
    """What to recall and retrieve for: the text of the run's last user message."""
    for m in reversed(messages):
        if isinstance(m, UserMessage) and isinstance(m.content, str) and m.content.strip():
            return m.content
    return ""


async def instructions_for(
    ctx: RunContext, prompts: PromptRegistry | None, spec: AgentSpec, payload: Any
) -> Instructions:
    """The run's instructions: the agent's inline text, or its prompt rendered in a journaled
    ``prompt`` step (see the module docstring)."""
    if spec.prompt is None:
        return Instructions(spec.instructions)
    if prompts is None:
        raise PromptNotFound(
            f"agent {spec.name!r} uses prompt {spec.prompt!r} but no prompts are loaded",
            hint="put the prompt file in the project's prompts directory (prompts.dir)",
        )
    given = payload.get("prompt_inputs") if isinstance(payload, dict) else None
    inputs = {**spec.prompt_inputs, **(given if isinstance(given, dict) else {})}
    out = await ctx.step("prompt", _render, prompts, spec.prompt, inputs, ctx.store, kind="prompt")
    return Instructions(str(out["text"]), str(out["ref"]), out.get("settings") or None)


async def _render(
    prompts: PromptRegistry, ref: str, inputs: dict[str, Any], store: Store
) -> dict[str, Any]:
    prompt = await prompts.resolve(ref, store)
    text = prompt.render(inputs)  # bad inputs fail the step (and the run) with a clear error
    await record_version(store, prompt)
    return {"ref": prompt.ref, "text": text, "settings": prompt.params()}


@dataclass(slots=True)
class Turn:
    """What one model request of a run is assembled from."""

    instructions: str | None
    history: Sequence[Message]
    """The session's earlier conversation."""
    input: Sequence[Message]
    """The run's own messages: its input and its turns so far."""
    memory: Sequence[Item] = ()
    passages: Sequence[Item] = ()


Summarise = Callable[[RunContext, str, list[Message]], Awaitable[str]]
"""Writes a summary: ``(ctx, route, request)`` — a metered, recorded model call of the run."""


async def fit_context(
    ctx: RunContext,
    registry: ModelRegistry,
    spec: AgentSpec,
    turn: Turn,
    settings: ModelSettings,
    summaries: dict[str, str],
    summarise_on: Summarise,
) -> list[Message]:
    """The messages to send for ``turn`` (see the module docstring); ``summaries`` (by span)
    are reused and updated; ``summarise_on`` writes a summary when one is needed."""
    project = registry.project
    declared = spec.context is not None
    context = spec.context or ContextSpec()
    try:
        budget = budget_for(
            project,
            spec.model,
            reserve_output=context.reserve_output,
            max_tokens=settings.max_tokens,
        )
    except (ConfigError, ModelNotFound):
        if declared:  # asked for, and the window is unknown: say so
            raise
        return _plain(turn, context)
    counter = counter_for(project, spec.model)
    route = context.history.route or spec.model

    async def summarise(messages: Sequence[Message]) -> str:
        return await summarise_on(ctx, route, summary_request(messages))

    out = await assemble(
        context,
        counter,
        window=budget.window,
        reserved_output=budget.reserved_output,
        instructions=turn.instructions or "",
        tools=settings.tools,
        memory=turn.memory,
        passages=turn.passages,
        history=turn.history,
        input=turn.input,
        summarise=summarise if context.history.summarise else None,
        summaries=summaries,
    )
    summaries.update(out.summaries)
    await ctx.step("context", _manifest, out.manifest, kind="context")
    return out.messages


def _manifest(manifest: Manifest) -> dict[str, Any]:
    return manifest.model_dump(mode="json")


def _plain(turn: Turn, context: ContextSpec) -> list[Message]:
    """The messages as they are (no window to fit), with the recalled memories and the passages
    under their headers in the system message, best first."""
    parts = [turn.instructions] if turn.instructions else []
    for items, section, kind in (
        (turn.memory, context.memory, "memory"),
        (turn.passages, context.passages, "passages"),
    ):
        ranked = eligible(items, section).ranked
        if ranked:
            lines = [
                f"\n- {i.text}" if kind == "memory" else f"\n[{i.id}] {i.text}" for i in ranked
            ]
            parts.append(section.header + "".join(lines))
    system: list[Message] = [SystemMessage(content="\n\n".join(parts))] if parts else []
    return [*system, *turn.history, *turn.input]


def summary_request(messages: Sequence[Message]) -> list[Message]:
    """The request that asks a model to summarise ``messages``."""
    lines = []
    for m in messages:
        text = getattr(m, "content", None) or ""
        calls = getattr(m, "tool_calls", None) or []
        named = ", ".join(f"{c.name}({c.arguments})" for c in calls)
        lines.append(f"{m.role}: {text}{' [calls ' + named + ']' if named else ''}")
    return [SystemMessage(content=_SUMMARY_PROMPT), UserMessage(content="\n".join(lines))]
