"""The parts of chat-completion sessions, without HTTP: fitting a session's history into a
model's window (whole turns, oldest first), the append that expects the session unchanged and
reading a session to continue it (on SQLite and PostgreSQL), and the hash of call records with
the ``kind`` column (old rows verify as before)."""

from __future__ import annotations

import hashlib

import orjson
import pytest

from elevenfactor.config import parse_project
from elevenfactor.context import EstimateCounter
from elevenfactor.errors import NotFound, RequestError
from elevenfactor.memory import append_messages, load_or_new, load_session
from elevenfactor.models import (
    AssistantMessage,
    Message,
    ModelSettings,
    SystemMessage,
    ToolCall,
    ToolMessage,
    UserMessage,
)
from elevenfactor.observe._calls import RECORD_COLUMNS, record_hash
from elevenfactor.server._chat_session import fit_history
from elevenfactor.store import Store
from tests.support.principals import member

ALICE = member("alice")
BOB = member("bob")
PROJECT = parse_project(
    {
        "providers": {"t": {"type": "test"}},
        "models": {
            "small": {"provider": "t", "model": "m", "context_window": 200},
            "unknown": {"provider": "t", "model": "m"},
        },
    }
)
HEAD: list[Message] = [SystemMessage(content="Be brief.")]
TURN: list[Message] = [UserMessage(content="and now?")]


def _history(turns: int) -> list[Message]:
    out: list[Message] = []
    for i in range(turns):
        out.append(UserMessage(content=f"question {i} about the monthly invoices"))
        if i == 1:  # a tool call and its result: cut together
            call = ToolCall(id="c1", name="lookup", arguments='{"month": "may"}')
            out.append(AssistantMessage(tool_calls=[call]))
            out.append(ToolMessage(content="three invoices", tool_call_id="c1"))
        out.append(AssistantMessage(content=f"answer {i} about the monthly invoices"))
    return out


def test_history_that_fits_or_a_window_that_is_unknown_is_kept_whole() -> None:
    history = _history(2)
    settings = ModelSettings(max_tokens=20)
    assert fit_history(PROJECT, "small", settings, HEAD, history, TURN) == history
    assert fit_history(PROJECT, "unknown", settings, HEAD, _history(40), TURN) == _history(40)
    assert fit_history(PROJECT, "nope", settings, HEAD, history, TURN) == history
    assert fit_history(PROJECT, "small", settings, HEAD, [], TURN) == []


def test_the_oldest_whole_turns_are_dropped_to_fit_the_window() -> None:
    history = _history(12)
    settings = ModelSettings(max_tokens=50)  # 150 tokens for the prompt
    kept = fit_history(PROJECT, "small", settings, HEAD, history, TURN)
    counter = EstimateCounter()
    assert 0 < len(kept) < len(history)
    assert kept == history[len(history) - len(kept) :]  # the newest ones, in order
    assert isinstance(kept[0], UserMessage)  # the conversation resumes with the user
    assert counter.count_messages([*HEAD, *kept, *TURN]) <= 200 - 50
    assert counter.count_messages([*HEAD, *history, *TURN]) > 200 - 50
    # More output reserved: fewer turns fit. The tool call never loses its result.
    less = fit_history(PROJECT, "small", ModelSettings(max_tokens=120), HEAD, history, TURN)
    assert len(less) < len(kept)
    for cut in (kept, less, fit_history(PROJECT, "small", settings, HEAD, history[:8], TURN)):
        calls = [m for m in cut if isinstance(m, AssistantMessage) and m.tool_calls]
        results = [m for m in cut if isinstance(m, ToolMessage)]
        assert len(calls) == len(results)


async def test_an_append_that_expects_the_session_unchanged(store: Store) -> None:
    new = await load_or_new(store, ALICE, "s1")
    assert new.messages == [] and new.info.messages == 0
    assert await append_messages(
        store, ALICE, "s1", [UserMessage(content="a"), AssistantMessage(content="b")],
        expect_seq=new.info.messages,
    ) == [0, 1]  # fmt: skip
    read = await load_or_new(store, ALICE, "s1")
    assert read.info.messages == 2
    # Another append lands first: the one that read before it is refused, and writes nothing.
    await append_messages(store, ALICE, "s1", [UserMessage(content="c")], expect_seq=2)
    with pytest.raises(RequestError) as conflict:
        await append_messages(store, ALICE, "s1", [UserMessage(content="d")], expect_seq=2)
    assert (conflict.value.code, conflict.value.http_status) == ("session_conflict", 409)
    stored = await load_session(store, ALICE, "s1")
    assert [m.content for m in stored.messages] == ["a", "b", "c"] and stored.seqs == [0, 1, 2]
    # A new session expected empty, taken meanwhile by another first append: refused too.
    await append_messages(store, ALICE, "s2", [UserMessage(content="first")])
    with pytest.raises(RequestError, match="changed while"):
        await append_messages(store, ALICE, "s2", [UserMessage(content="late")], expect_seq=0)


async def test_another_users_session_cannot_be_continued(store: Store) -> None:
    await append_messages(store, ALICE, "mine", [UserMessage(content="secret")])
    with pytest.raises(NotFound) as refused:
        await load_or_new(store, BOB, "mine")
    assert refused.value.code == "session_not_found"
    with pytest.raises(NotFound):
        await append_messages(store, BOB, "mine", [UserMessage(content="x")], expect_seq=0)
    assert [m.content for m in (await load_session(store, ALICE, "mine")).messages] == ["secret"]


def test_call_records_without_a_kind_hash_as_before() -> None:
    base = tuple(f"v{i}" for i in range(len(RECORD_COLUMNS) - 2))

    def old(row: tuple[object, ...]) -> str:  # before m017: prompt the last column
        if row[-1] is None:
            row = row[:-1]
        return hashlib.sha256(orjson.dumps(list(row))).hexdigest()

    for prompt in (None, "support@abc"):
        assert record_hash((*base, prompt, None)) == old((*base, prompt))
    kinds = {record_hash((*base, p, k)) for p in (None, "x") for k in (None, "embedding")}
    assert len(kinds) == 4  # setting or clearing either column changes the hash
