"""Extraction: after a run, ask a model for the facts its conversation taught, and remember them.

``extract_facts`` shows the model the conversation (its end, up to ``max_chars``) with numbered
messages and asks for ``{"facts": [{text, kind, key, importance, message}]}`` as JSON (a bare
list is accepted too). Each item is validated; junk is dropped with a reason, never guessed at.
``extract_memories`` then remembers the kept facts with the run's provenance (its id, the step
that extracts, the message each fact came from). The caller runs it inside a journaled step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from elevenfactor.config._memory import MemoryConfig
from elevenfactor.context import Embedder
from elevenfactor.errors import RequestError
from elevenfactor.governance import check_id
from elevenfactor.memory._records import (
    KINDS,
    MAX_TEXT,
    Memory,
    Provenance,
    check_importance,
    check_memory_text,
)
from elevenfactor.memory._scopes import MemoryActor, Scope
from elevenfactor.memory._write import remember
from elevenfactor.models import (
    AssistantMessage,
    Call,
    Message,
    ModelRegistry,
    ModelSettings,
    ResponseFormat,
    SystemMessage,
    UserMessage,
)
from elevenfactor.store import Store

__all__ = ["Dropped", "Extraction", "Fact", "extract_facts", "extract_memories"]

INSTRUCTIONS = """You extract durable facts about the user from a conversation, to remember in \
later conversations: stable facts (name, job, projects) and preferences (likes, dislikes, how \
they want answers). Ignore small talk, questions and anything only true for this conversation.
Answer with JSON only: {"facts": [{"text": "...", "kind": "fact" or "preference", "key": \
"subject.attribute" or null, "importance": 0 to 1, "message": index of the message it comes \
from}]}. Use {"facts": []} when there is nothing worth remembering."""

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "facts": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "text": {"type": "string"},
                    "kind": {"type": "string", "enum": list(KINDS)},
                    "key": {"type": ["string", "null"]},
                    "importance": {"type": "number", "minimum": 0, "maximum": 1},
                    "message": {"type": "integer", "minimum": 0},
                },
                "required": ["text", "kind"],
            },
        }
    },
    "required": ["facts"],
}


@dataclass(frozen=True, slots=True)
class Fact:
    """A validated fact the model proposed."""

    text: str
    kind: str
    key: str | None
    importance: float
    message: int | None


@dataclass(frozen=True, slots=True)
class Dropped:
    """An item (or answer) refused, and why."""

    item: Any
    reason: str


@dataclass(slots=True)
class Extraction:
    """The facts kept, the items dropped, and (after ``extract_memories``) the memories."""

    facts: list[Fact] = field(default_factory=list)
    dropped: list[Dropped] = field(default_factory=list)
    memories: list[Memory] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Counts, memory ids and drop reasons (what a journal step records)."""
        return {
            "facts": len(self.facts),
            "memories": [m.id for m in self.memories],
            "dropped": [{"reason": d.reason} for d in self.dropped],
        }


def transcript(messages: Sequence[Message], max_chars: int) -> str:
    """The conversation as numbered lines, keeping its end within ``max_chars``."""
    lines = []
    for i, m in enumerate(messages):
        if isinstance(m, SystemMessage):
            continue
        if isinstance(m, AssistantMessage):
            text = m.content or " ".join(f"[calls {c.name}]" for c in m.tool_calls)
        else:
            text = m.content
        lines.append(f"[{i}] {m.role}: {text}")
    out = "\n".join(lines)
    return out[-max_chars:]


def _item(item: Any, n_messages: int, seen: set[str]) -> Fact | str:
    """A ``Fact``, or the reason to drop ``item``."""
    if not isinstance(item, dict):
        return "not an object"
    text = item.get("text")
    if not isinstance(text, str) or not text.strip():
        return "no text"
    if len(text) > MAX_TEXT:
        return f"text longer than {MAX_TEXT} characters"
    kind = item.get("kind", "fact")
    if kind not in KINDS:
        return f"kind {kind!r:.40} is not one of {', '.join(KINDS)}"
    key = item.get("key")
    message = item.get("message")
    try:
        text = check_memory_text(text)
        if key is not None:
            key = check_id(key, "key")
        importance = check_importance(item.get("importance", 0.5))
    except RequestError as exc:
        return exc.message
    if message is not None and (
        isinstance(message, bool) or not isinstance(message, int) or not 0 <= message < n_messages
    ):
        return f"message {message!r:.20} is not an index of the conversation"
    if text.casefold() in seen:
        return "duplicate"
    seen.add(text.casefold())
    return Fact(text, kind, key, importance, message)


def parse_facts(answer: str, n_messages: int, max_facts: int) -> Extraction:
    """Validate a model's answer into kept facts and dropped items."""
    out = Extraction()
    try:
        data = orjson.loads(answer)
    except orjson.JSONDecodeError:
        out.dropped.append(Dropped(answer[:200], "the answer is not JSON"))
        return out
    items = data.get("facts") if isinstance(data, dict) else data
    if not isinstance(items, list):
        out.dropped.append(Dropped(str(answer)[:200], "no list of facts in the answer"))
        return out
    seen: set[str] = set()
    for item in items:
        result = _item(item, n_messages, seen)
        if isinstance(result, str):
            out.dropped.append(Dropped(item, result))
        elif len(out.facts) >= max_facts:
            out.dropped.append(Dropped(item, f"more than {max_facts} facts"))
        else:
            out.facts.append(result)
    return out


def extraction_request(
    messages: Sequence[Message], *, max_chars: int = 16000
) -> tuple[list[Message], ModelSettings] | None:
    """The request that asks a model for the facts in ``messages`` (None: no user message, so
    nothing to ask)."""
    if not any(isinstance(m, UserMessage) for m in messages):
        return None
    request: list[Message] = [
        SystemMessage(content=INSTRUCTIONS),
        UserMessage(content=transcript(messages, max_chars)),
    ]
    settings = ModelSettings(
        temperature=0,
        response_format=ResponseFormat(
            type="json_schema", name="facts", json_schema=SCHEMA, strict=False
        ),
    )
    return request, settings


async def extract_facts(
    registry: ModelRegistry,
    route: str,
    messages: Sequence[Message],
    *,
    max_facts: int = 20,
    max_chars: int = 16000,
) -> Extraction:
    """Ask ``route`` for the facts in ``messages``; validated, junk dropped with a reason."""
    asked = extraction_request(messages, max_chars=max_chars)
    if asked is None:
        return Extraction()
    model = registry.resolve(route).model
    response = await model.request(asked[0], asked[1], Call(route=route))
    return parse_facts(response.message.content or "", len(messages), max_facts)


async def extract_memories(
    registry: ModelRegistry,
    route: str,
    messages: Sequence[Message],
    *,
    store: Store,
    embedder: Embedder,
    actor: MemoryActor,
    scope: Scope | None = None,
    run_id: str | None = None,
    step_key: str | None = None,
    config: MemoryConfig | None = None,
) -> Extraction:
    """``extract_facts`` then ``remember`` each kept fact in ``scope`` (default: the
    configured ``memory.extract.scope`` of ``actor``) with the run's provenance."""
    conf = config or MemoryConfig()
    found = await extract_facts(
        registry,
        route,
        messages,
        max_facts=conf.extract.max_facts,
        max_chars=conf.extract.max_chars,
    )
    return await remember_facts(
        found, store=store, embedder=embedder, actor=actor, scope=scope, run_id=run_id,
        step_key=step_key, config=conf,
    )  # fmt: skip


async def remember_facts(
    found: Extraction,
    *,
    store: Store,
    embedder: Embedder,
    actor: MemoryActor,
    scope: Scope | None = None,
    run_id: str | None = None,
    step_key: str | None = None,
    config: MemoryConfig | None = None,
) -> Extraction:
    """``remember`` each kept fact of ``found`` in ``scope`` (default: the configured
    ``memory.extract.scope`` of ``actor``) with the run's provenance; ``found`` with them."""
    conf = config or MemoryConfig()
    if scope is None:
        if conf.extract.scope == "agent" and actor.agent is not None:
            scope = Scope.agent(actor.agent)
        else:
            scope = Scope.user(actor.user_id)
    for fact in found.facts:
        found.memories.append(
            await remember(
                store,
                embedder,
                actor,
                scope,
                fact.text,
                kind=fact.kind,
                key=fact.key,
                importance=fact.importance,
                provenance=Provenance(
                    "extraction", run_id=run_id, step_key=step_key, message_index=fact.message
                ),
                config=conf,
            )
        )
    return found
