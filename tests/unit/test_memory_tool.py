"""Memory as tools an agent is given, and the extraction of facts from a run's conversation by a
deterministic in-library model (``FunctionModel``), on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
import pytest

from elevenfactor.config import ProjectConfig
from elevenfactor.config._memory import MemoryConfig
from elevenfactor.governance import local_admin
from elevenfactor.memory import (
    MemoryActor,
    MemoryToolset,
    Scope,
    extract_memories,
    grant,
    list_memories,
)
from elevenfactor.memory._extract import parse_facts
from elevenfactor.models import (
    AssistantMessage,
    FunctionModel,
    Message,
    ModelRegistry,
    ModelSettings,
    Response,
    UserMessage,
)
from elevenfactor.store import Store
from elevenfactor.tools import ToolContext, Toolset
from tests.support.principals import member
from tests.unit.test_memory_doubles import WordHashEmbedderDouble

ALICE = member("alice")


def _ctx(agent: str = "helper", run: str = "run_1", step: int = 4) -> ToolContext:
    return ToolContext(run_id=run, step_key=f"{run}:{step}", caller=agent, owner=ALICE.actor())


async def test_the_toolset_remembers_recalls_and_forgets_for_the_runs_owner(store: Store) -> None:
    tools = MemoryToolset(store, WordHashEmbedderDouble())
    assert isinstance(tools, Toolset)
    listed = {t.name: t for t in await tools.list_tools(_ctx())}
    assert set(listed) == {"remember", "recall", "forget_memory"}
    assert (listed["recall"].risk, listed["forget_memory"].risk) == ("read", "destructive")

    made = await tools.call_tool(
        "remember", {"text": "Alice's team ships on Thursdays", "key": "team.ship_day"}, _ctx()
    )
    assert not made.is_error, made.content
    mem_id = made.structured["id"]
    assert made.structured["scope"] == f"user:{ALICE.user_id}"
    await tools.call_tool(
        "remember", {"text": "helper's own note on tone", "scope": "agent"}, _ctx(step=5)
    )
    found = await tools.call_tool("recall", {"query": "when does the team ship"}, _ctx())
    assert not found.is_error and found.structured[0]["id"] == mem_id

    [stored] = await list_memories(store, MemoryActor(ALICE), [Scope.user(ALICE.user_id)])
    assert stored.provenance == {"source": "tool", "run_id": "run_1", "step_key": "run_1:4"}
    assert stored.user_id == ALICE.user_id
    agent_rows = await list_memories(store, MemoryActor(ALICE, "helper"), [Scope.agent("helper")])
    assert [m.text for m in agent_rows] == ["helper's own note on tone"]

    # another agent of the same user sees the user's memory, not the helper's own
    other = await tools.call_tool("recall", {"query": "note on tone ships"}, _ctx("critic"))
    assert {r["scope"] for r in other.structured} == {f"user:{ALICE.user_id}"}

    gone = await tools.call_tool("forget_memory", {"id": mem_id}, _ctx())
    assert gone.structured == {"id": mem_id, "deleted": 1}
    again = await tools.call_tool("forget_memory", {"id": mem_id}, _ctx())
    assert again.is_error and again.error_code == "memory_not_found"


async def test_tool_errors_come_back_as_results(store: Store) -> None:
    conf = MemoryConfig.model_validate({"tool": {"read": ["space:ops"], "write": ["space:ops"]}})
    await grant(store, local_admin("cli"), "ops", "reader", read=True)
    tools = MemoryToolset(store, WordHashEmbedderDouble(), conf)
    denied = await tools.call_tool("remember", {"text": "x"}, _ctx("reader"))
    assert denied.is_error and denied.error_code == "memory_denied"
    assert "reader" in denied.content and "ops" in denied.content
    refused = await tools.call_tool("recall", {"query": "x"}, _ctx("stranger"))
    assert refused.is_error and refused.error_code == "memory_denied"
    bad = await tools.call_tool("remember", {"text": "x", "scope": "user"}, _ctx("reader"))
    assert bad.is_error and bad.error_code == "invalid_arguments"
    bad = await tools.call_tool("recall", {"query": "x", "extra": 1}, _ctx("reader"))
    assert bad.error_code == "invalid_arguments"
    nobody = await tools.call_tool("recall", {"query": "x"}, ToolContext(caller="reader"))
    assert nobody.error_code == "memory_owner_missing"
    missing = await tools.call_tool("nope", {}, _ctx())
    assert missing.error_code == "tool_not_found"


CONVERSATION: list[Message] = [
    UserMessage(content="Hi, I'm Alice and I work as a nurse in Oslo."),
    AssistantMessage(content="Nice to meet you, Alice!"),
    UserMessage(content="Please always answer me briefly. My cat is called Miso."),
    AssistantMessage(content="Noted."),
]


def _extractor(answer: dict[str, Any] | list[Any] | str) -> tuple[ModelRegistry, FunctionModel]:
    def handler(messages: Sequence[Message], settings: ModelSettings) -> Response:
        text = answer if isinstance(answer, str) else orjson.dumps(answer).decode()
        return Response(message=AssistantMessage(content=text))

    model = FunctionModel(handler, name="extractor")
    return ModelRegistry(ProjectConfig(), deployments={"facts": model}), model


async def test_extraction_remembers_valid_facts_with_provenance_and_drops_junk(
    store: Store,
) -> None:
    answer = {
        "facts": [
            {"text": "Alice is a nurse", "kind": "fact", "key": "user.job", "importance": 0.7,
             "message": 0},
            {"text": "Alice wants brief answers", "kind": "preference", "message": 2},
            {"text": "Alice's cat is called Miso", "kind": "fact", "importance": 0.4},
            {"text": "", "kind": "fact"},
            {"text": "The moon is cheese", "kind": "rumour"},
            {"text": "Something", "kind": "fact", "importance": 7},
            {"text": "Bad key", "kind": "fact", "key": "has spaces"},
            {"text": "Wrong message", "kind": "fact", "message": 99},
            "just a string",
            {"text": "alice is a NURSE", "kind": "fact"},
        ]
    }  # fmt: skip
    registry, model = _extractor(answer)
    actor = MemoryActor(ALICE, "helper")
    result = await extract_memories(
        registry,
        "facts",
        CONVERSATION,
        store=store,
        embedder=WordHashEmbedderDouble(),
        actor=actor,
        run_id="run_9",
        step_key="run_9:12",
    )
    assert [f.text for f in result.facts] == [
        "Alice is a nurse",
        "Alice wants brief answers",
        "Alice's cat is called Miso",
    ]
    reasons = [d.reason for d in result.dropped]
    assert reasons[0] == "no text" and "rumour" in reasons[1] and "importance" in reasons[2]
    assert "'key'" in reasons[3] and "message 99" in reasons[4]
    assert reasons[5:] == ["not an object", "duplicate"]
    stored = {m.text: m for m in result.memories}
    assert stored["Alice is a nurse"].scope == Scope.user(ALICE.user_id)
    assert stored["Alice is a nurse"].key == "user.job"
    assert stored["Alice is a nurse"].provenance == {
        "source": "extraction",
        "run_id": "run_9",
        "step_key": "run_9:12",
        "message_index": 0,
    }
    assert stored["Alice wants brief answers"].kind == "preference"
    # the model was asked for JSON, with the numbered conversation
    [(sent, settings)] = model.calls
    assert settings.response_format is not None and settings.response_format.type == "json_schema"
    assert "[2] user: Please always answer me briefly" in str(sent[-1].content)
    assert result.to_dict()["facts"] == 3


async def test_extraction_into_the_agent_scope_and_from_junk_answers(store: Store) -> None:
    registry, _ = _extractor([{"text": "Alice likes haiku", "kind": "preference"}])
    conf = MemoryConfig.model_validate({"extract": {"scope": "agent"}})
    result = await extract_memories(
        registry,
        "facts",
        CONVERSATION,
        store=store,
        embedder=WordHashEmbedderDouble(),
        actor=MemoryActor(ALICE, "poet"),
        config=conf,
    )
    assert [m.scope for m in result.memories] == [Scope.agent("poet")]
    for junk, reason in (
        ("not json at all", "the answer is not JSON"),
        ('{"facts": "none"}', "no list of facts in the answer"),
    ):
        parsed = parse_facts(junk, 4, 20)
        assert parsed.facts == [] and [d.reason for d in parsed.dropped] == [reason]
    capped = parse_facts(orjson.dumps([{"text": f"f{i}"} for i in range(5)]).decode(), 4, 2)
    assert (
        len(capped.facts) == 2 and [d.reason for d in capped.dropped] == ["more than 2 facts"] * 3
    )


@pytest.mark.parametrize("messages", [[], [AssistantMessage(content="only me")]])
async def test_nothing_to_extract_without_a_user_turn(
    store: Store, messages: list[Message]
) -> None:
    registry, model = _extractor({"facts": [{"text": "x", "kind": "fact"}]})
    result = await extract_memories(
        registry,
        "facts",
        messages,
        store=store,
        embedder=WordHashEmbedderDouble(),
        actor=MemoryActor(ALICE),
    )
    assert result.facts == [] and model.calls == []
