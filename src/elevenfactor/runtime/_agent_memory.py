"""An agent's long-term memory, as journaled steps (the agent's ``memory:``):

- ``recall``: before its first model request a run recalls the memories that best match its input
  (``memory.recall``: by similarity, recency and importance, in the scopes its owner and the
  agent may read) into the context's memory section;
- ``tool``: the agent is offered ``remember``, ``recall`` and ``forget_memory`` (each call a
  journaled tool step acting for the run's owner and the agent);
- ``extract``: after it answers, a model on ``memory.extract.route`` reads the run's conversation
  for facts worth keeping (a metered, recorded model call of the run, budgeted like the others)
  and a ``memory.extract`` step validates and remembers them with the run as provenance.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from elevenfactor.context import Item
from elevenfactor.memory import (
    MemoryActor,
    MemoryToolset,
    extraction_request,
    parse_facts,
    recall,
    remember_facts,
    scope_for,
)
from elevenfactor.models import Message, ModelSettings
from elevenfactor.runtime._agent_context import input_query
from elevenfactor.runtime._agent_session import owner_of
from elevenfactor.runtime._context import RunContext, step_key
from elevenfactor.store import Store

if TYPE_CHECKING:
    from elevenfactor.context._embed_registry import EmbedderRegistry
    from elevenfactor.runtime._agent import AgentDeps
    from elevenfactor.runtime._agent_spec import AgentSpec

__all__ = ["MEMORY_TOOLS", "embedders_of", "extract_after", "memory_toolset", "recall_items"]

MEMORY_TOOLS = frozenset({"remember", "recall", "forget_memory"})

Ask = Callable[[RunContext, str, list[Message], ModelSettings], Awaitable[str]]
"""A metered, recorded model call of the run: ``(ctx, route, request, settings) -> text``."""


def embedders_of(deps: AgentDeps) -> EmbedderRegistry:
    """The runtime's embedders (made from the project on first use)."""
    if deps.embedders is None:
        from elevenfactor.context._embed_registry import open_embedders

        deps.embedders = open_embedders(deps.registry.project)
    return deps.embedders


def memory_toolset(deps: AgentDeps, store: Store) -> MemoryToolset:
    """The memory tools, over ``store`` (the run's)."""
    conf = deps.registry.project.memory
    return MemoryToolset(store, embedders_of(deps).get(conf.embedder), conf)


async def recall_items(
    ctx: RunContext, deps: AgentDeps, spec: AgentSpec, messages: Sequence[Message]
) -> list[Item]:
    """The memories recalled for the run's input (none unless the agent's ``memory.recall``)."""
    if spec.memory is None or not spec.memory.recall:
        return []
    query = input_query(messages)
    if not query:
        return []
    found = await ctx.step(
        "memory.recall", _recall, deps, ctx.store, owner_of(ctx), spec.name, query,
        list(spec.memory.scopes), kind="memory",
    )  # fmt: skip
    return [Item(str(r["id"]), str(r["text"]), float(r["score"])) for r in found]


async def _recall(
    deps: AgentDeps, store: Store, owner: Any, agent: str, query: str, scopes: list[str]
) -> list[dict[str, Any]]:
    conf = deps.registry.project.memory
    actor = MemoryActor(owner, agent)
    wanted = [scope_for(s, actor) for s in scopes]
    hits = await recall(
        store, embedders_of(deps).get(conf.embedder), actor, query, wanted or None, config=conf
    )
    return [{"id": h.memory.id, "text": h.memory.text, "score": h.score} for h in hits]


async def extract_after(
    ctx: RunContext,
    deps: AgentDeps,
    spec: AgentSpec,
    messages: Sequence[Message],
    ask: Ask,
) -> None:
    """Facts from the run's conversation, remembered (when extraction is on for the agent):
    the model is asked through ``ask`` (a metered, recorded model call of the run), then a
    ``memory.extract`` step validates the facts and remembers them."""
    conf = deps.registry.project.memory
    enabled = conf.extract.enabled
    if spec.memory is not None and spec.memory.extract is not None:
        enabled = spec.memory.extract
    if not enabled:
        return
    asked = extraction_request(messages, max_chars=conf.extract.max_chars)
    if asked is None:
        return
    answer = await ask(ctx, conf.extract.route, asked[0], asked[1])
    await ctx.step(
        "memory.extract", _remember, deps, ctx.store, owner_of(ctx), spec.name, answer,
        len(messages), ctx.run_id, kind="memory",
    )  # fmt: skip


async def _remember(
    deps: AgentDeps,
    store: Store,
    owner: Any,
    agent: str,
    answer: str,
    n_messages: int,
    run_id: str,
) -> dict[str, Any]:
    conf = deps.registry.project.memory
    found = parse_facts(answer, n_messages, conf.extract.max_facts)
    result = await remember_facts(
        found, store=store, embedder=embedders_of(deps).get(conf.embedder),
        actor=MemoryActor(owner, agent), run_id=run_id, step_key=step_key(), config=conf,
    )  # fmt: skip
    return result.to_dict()
