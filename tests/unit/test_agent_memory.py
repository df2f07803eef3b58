"""Agents with long-term memory: one remembers through its memory tool, another recalls it into
its context for the same user — and not for another user; extraction after a run. SQLite and
PostgreSQL, deterministic models and the word-hash embedder double."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from elevenfactor.config import DeploymentConfig, ProjectConfig, ProviderConfig
from elevenfactor.config._memory import MemoryConfig
from elevenfactor.governance import Principal, local_admin
from elevenfactor.memory import append_messages, apply_spaces, forget_user
from elevenfactor.models import (
    AssistantMessage,
    FunctionModel,
    Message,
    ModelRegistry,
    ModelSettings,
    Response,
    ToolCall,
    ToolMessage,
    wrap_deployment,
)
from elevenfactor.runtime import Agent, AgentDeps, AgentSpec, Programs, Worker, get_run, submit_run
from elevenfactor.runtime._journal import describe_steps
from elevenfactor.store import Store
from tests.support.principals import member
from tests.unit.test_memory_doubles import WordHashEmbedderDouble

DEPLOYMENT = DeploymentConfig(provider="test", model="m", retry={"attempts": 1}, breaker=None)


class Embedders:
    """Stands in for the embedder registry: every name is the word-hash double."""

    def __init__(self) -> None:
        self.double = WordHashEmbedderDouble()

    def get(self, name: str | None = None) -> WordHashEmbedderDouble:
        return self.double


def build(
    script: FunctionModel, specs: list[AgentSpec], memory: dict[str, Any] | None = None
) -> Programs:
    project = ProjectConfig(
        providers={"test": ProviderConfig(type="test")},
        models={"m": DEPLOYMENT},
        memory=MemoryConfig.model_validate(
            memory or {"recall": {"min_score": 0.05}, "extract": {"route": "m"}}
        ),
    )
    registry = ModelRegistry(
        project, deployments={"m": wrap_deployment(script, "test", DEPLOYMENT)}
    )
    by_name = {s.name: s for s in specs}
    deps = AgentDeps(registry, {}, by_name, embedders=Embedders())  # type: ignore[arg-type]
    programs = Programs()
    for spec in specs:
        programs.register(spec.name, Agent(spec, deps))
    return programs


def answer(text: str) -> Response:
    return Response(message=AssistantMessage(content=text))


async def run(store: Store, programs: Programs, agent: str, text: str, owner: Principal) -> str:
    rid = await submit_run(store, agent, text, owner=owner)
    await Worker(store, programs).run_until_idle()
    info = await get_run(store, rid)
    assert info.status == "succeeded", info.error
    return rid


async def test_one_agent_remembers_and_another_recalls_for_the_same_user_only(
    store: Store,
) -> None:
    seen: dict[str, list[Sequence[Message]]] = {"writer": [], "reader": []}

    def script(messages: Sequence[Message], settings: ModelSettings) -> Response:
        agent = "writer" if any(t.name == "remember" for t in settings.tools) else "reader"
        seen[agent].append(list(messages))
        if agent == "writer" and not any(isinstance(m, ToolMessage) for m in messages):
            args = {"text": "Ada prefers invoices by email", "kind": "preference"}
            call = ToolCall(id="c1", name="remember", arguments=json.dumps(args))
            return Response(message=AssistantMessage(tool_calls=[call]), finish_reason="tool_calls")
        return answer("ok")

    writer = AgentSpec(name="writer", model="m", memory={"tool": True})
    reader = AgentSpec(name="reader", model="m", instructions="Help.", memory={"recall": True})
    programs = build(FunctionModel(script), [writer, reader])
    ada, bob = member("ada"), member("bob")
    await run(store, programs, "writer", "remember that I like invoices by email", ada)
    tool_result = next(m for m in seen["writer"][-1] if isinstance(m, ToolMessage))
    assert "error" not in str(tool_result.content).lower()
    rid = await run(store, programs, "reader", "how should invoices reach me?", ada)
    system = str(seen["reader"][-1][0].content)
    assert "Ada prefers invoices by email" in system  # recalled into the memory section
    recalled = [s for s in await describe_steps(store, rid) if s["name"] == "memory.recall"]
    assert recalled and recalled[0]["output"][0]["text"] == "Ada prefers invoices by email"
    await run(store, programs, "reader", "how should invoices reach me?", bob)
    assert "Ada prefers" not in str(seen["reader"][-1][0].content)  # another user's memory


async def test_facts_are_extracted_after_a_run(store: Store) -> None:
    def script(messages: Sequence[Message], settings: ModelSettings) -> Response:
        if "facts" in str(messages[0].content).lower():  # the extraction request
            facts = [{"text": "Ada's company is Acme", "kind": "fact", "importance": 0.8}]
            return answer(json.dumps(facts))
        return answer("noted")

    spec = AgentSpec(name="clerk", model="m", memory={"extract": True})
    programs = build(FunctionModel(script), [spec])
    rid = await run(store, programs, "clerk", "I work at Acme", member("ada"))
    steps = await describe_steps(store, rid)
    step = next(s for s in steps if s["name"] == "memory.extract")
    assert step["status"] == "done" and step["output"]["memories"]
    # The extraction is a model step of the run like its answer (metered, recorded).
    assert [s["kind"] for s in steps].count("model") == 2
    row = await store.fetchone("SELECT text, scope_kind FROM memories")
    assert row is not None and row[0] == "Ada's company is Acme" and row[1] == "user"


async def test_three_agents_share_a_space_only_through_grants_and_forget_erases_it(
    store: Store,
) -> None:
    """A writes to a shared space it may write, B reads it, C without a grant is refused; then
    forgetting the user removes the shared fact and the user's session from every memory table."""
    results: dict[str, list[str]] = {"writer": [], "reader": [], "outsider": []}
    fact = "The Quokka-17 release ships on Friday"

    def script(messages: Sequence[Message], settings: ModelSettings) -> Response:
        agent = next(a for a in results if f"the {a}." in str(messages[0].content))
        done = [m for m in messages if isinstance(m, ToolMessage)]
        if done:
            results[agent].append(str(done[-1].content))
            return answer("ok")
        if agent == "writer":
            args = {"text": fact, "scope": "space:team-notes"}
            call = ToolCall(id="w1", name="remember", arguments=json.dumps(args))
        else:
            call = ToolCall(id="r1", name="recall", arguments=json.dumps({"query": "release"}))
        return Response(message=AssistantMessage(tool_calls=[call]), finish_reason="tool_calls")

    memory = {
        "recall": {"min_score": 0.0},
        "extract": {"route": "m"},
        "spaces": {"team-notes": {"grants": {"writer": ["read", "write"], "reader": ["read"]}}},
        "tool": {"read": ["space:team-notes"], "write": ["space:team-notes"]},
    }
    specs = [
        AgentSpec(name=n, model="m", instructions=f"You are the {n}.", memory={"tool": True})
        for n in results
    ]
    programs = build(FunctionModel(script), specs, memory)
    await apply_spaces(store, local_admin("test"), MemoryConfig.model_validate(memory))
    ada = member("ada")

    await run(store, programs, "writer", "note the release date", ada)
    assert "error" not in results["writer"][-1].lower(), results["writer"]
    await run(store, programs, "reader", "when is the release?", ada)
    assert fact in results["reader"][-1]
    await run(store, programs, "outsider", "when is the release?", ada)
    refused = results["outsider"][-1]
    assert "no read grant" in refused and fact not in refused
    assert "outsider" in refused and "team-notes" in refused  # names who and which space

    await append_messages(store, ada, "ada-chat", [{"role": "user", "content": "Quokka-17?"}])
    done = await forget_user(store, local_admin("test"), ada.user_id)
    assert done.derived_memories == 1 and done.sessions == 1
    for table in ("memories", "session_messages", "sessions"):
        rows = await store.fetchall(f"SELECT * FROM {table}", ())
        assert not any("Quokka-17" in str(r) or ada.user_id in str(r) for r in rows), table
    await run(store, programs, "reader", "when is the release?", ada)
    assert fact not in results["reader"][-1]
