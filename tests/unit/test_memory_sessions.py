"""Sessions on SQLite and PostgreSQL: messages in order with their state, ownership, limits,
deletion, and concurrent appends from two stores that never interleave or lose a message."""

from __future__ import annotations

import asyncio

import pytest

from elevenfactor.errors import NotFound, RequestError
from elevenfactor.governance import local_admin
from elevenfactor.memory import (
    append_messages,
    delete_session,
    list_sessions,
    load_session,
    set_state,
)
from elevenfactor.models import AssistantMessage, ToolCall, ToolMessage, UserMessage
from elevenfactor.store import Store, open_store
from tests.support.principals import member

ALICE = member("alice")
BOB = member("bob")


async def test_a_session_keeps_messages_in_order_with_state_and_runs(store: Store) -> None:
    first = await append_messages(
        store, ALICE, "chat-1", [UserMessage(content="hi"), AssistantMessage(content="hello")]
    )
    call = ToolCall(id="c1", name="weather", arguments='{"city": "Oslo"}')
    second = await append_messages(
        store,
        ALICE,
        "chat-1",
        [
            {"role": "user", "content": "weather?"},
            AssistantMessage(tool_calls=[call]),
            ToolMessage(content="sunny", tool_call_id="c1"),
        ],
        run_id="run_7",
    )
    assert (first, second) == ([0, 1], [2, 3, 4])
    await set_state(store, ALICE, "chat-1", {"step": 2, "topic": "weather"})

    session = await load_session(store, ALICE, "chat-1")
    assert [m.role for m in session.messages] == ["user", "assistant", "user", "assistant", "tool"]
    assert session.messages[3] == AssistantMessage(tool_calls=[call])
    assert session.state == {"step": 2, "topic": "weather"}
    assert session.seqs == [0, 1, 2, 3, 4] and session.runs == [None, None, *["run_7"] * 3]
    assert session.info.messages == 5 and session.info.user_id == ALICE.user_id
    last = await load_session(store, ALICE, "chat-1", limit=2)
    assert [m.role for m in last.messages] == ["assistant", "tool"] and last.seqs == [3, 4]
    assert session.to_dict()["data"][4] == {
        "seq": 4,
        "run_id": "run_7",
        "message": {"role": "tool", "content": "sunny", "tool_call_id": "c1"},
    }


async def test_another_users_session_is_not_found_and_untouched(store: Store) -> None:
    await append_messages(store, ALICE, "alice-chat", [UserMessage(content="secret plan")])
    with pytest.raises(NotFound) as err:
        await load_session(store, BOB, "alice-chat")
    assert err.value.code == "session_not_found" and err.value.http_status == 404
    with pytest.raises(NotFound):
        await append_messages(store, BOB, "alice-chat", [UserMessage(content="injected")])
    with pytest.raises(NotFound):
        await set_state(store, BOB, "alice-chat", {"x": 1})
    with pytest.raises(NotFound):
        await delete_session(store, BOB, "alice-chat")
    session = await load_session(store, ALICE, "alice-chat")
    assert [m.content for m in session.messages] == ["secret plan"] and session.state == {}
    assert await list_sessions(store, BOB) == []
    # an admin of the organisation sees and reads it
    admin = local_admin("cli")
    assert [s.id for s in await list_sessions(store, admin)] == ["alice-chat"]
    assert len((await load_session(store, admin, "alice-chat")).messages) == 1
    empty = await load_session(store, BOB, "new-chat", missing_ok=True)
    assert empty.messages == [] and empty.info.messages == 0


async def test_list_and_delete(store: Store) -> None:
    for sid in ("a", "b", "c"):
        await append_messages(store, ALICE, sid, [UserMessage(content=sid)])
    await append_messages(store, BOB, "bob-1", [UserMessage(content="x")])
    assert {s.id for s in await list_sessions(store, ALICE)} == {"a", "b", "c"}
    admin = local_admin("cli")
    assert len(await list_sessions(store, admin)) == 4
    assert [s.id for s in await list_sessions(store, admin, user_id=BOB.user_id)] == ["bob-1"]
    gone = await delete_session(store, ALICE, "b")
    assert gone.id == "b" and gone.messages == 1
    assert {s.id for s in await list_sessions(store, ALICE)} == {"a", "c"}
    with pytest.raises(NotFound):
        await load_session(store, ALICE, "b")
    rows = await store.fetchall("SELECT seq FROM session_messages WHERE session_id = 'b'")
    assert rows == []


async def test_bad_input_writes_nothing(store: Store) -> None:
    with pytest.raises(RequestError) as err:
        await append_messages(
            store, ALICE, "s", [UserMessage(content="ok"), {"role": "robot", "content": "x"}]
        )
    assert err.value.code == "invalid_message" and err.value.param == "messages[1]"
    assert await list_sessions(store, ALICE) == []
    for bad in ("", "a b", "x" * 300, "../etc"):
        with pytest.raises(RequestError) as err:
            await append_messages(store, ALICE, bad, [UserMessage(content="x")])
        assert err.value.code == "invalid_id"
    with pytest.raises(RequestError, match="JSON object"):
        await set_state(store, ALICE, "s", [1, 2])  # type: ignore[arg-type]
    with pytest.raises(RequestError, match="not JSON"):
        await set_state(store, ALICE, "s", {"x": object()})


async def test_concurrent_appends_from_two_stores_never_interleave(
    store: Store, store_url: str
) -> None:
    other = await open_store(store_url)
    try:

        async def writer(db: Store, who: str) -> list[list[int]]:
            out = []
            for i in range(15):
                batch = [UserMessage(content=f"{who}-{i}-{j}") for j in range(3)]
                out.append(await append_messages(db, ALICE, "shared", batch))
            return out

        a, b = await asyncio.gather(writer(store, "a"), writer(other, "b"))
    finally:
        await other.close()
    session = await load_session(store, ALICE, "shared")
    assert session.seqs == list(range(90))
    for batches in (a, b):
        for seqs in batches:
            assert seqs == list(range(seqs[0], seqs[0] + 3))  # each call's messages together
    texts = [str(m.content) for m in session.messages]
    for i in range(0, 90, 3):
        who, n, _ = str(texts[i]).split("-")
        assert texts[i : i + 3] == [f"{who}-{n}-{j}" for j in range(3)]
    assert sorted(texts) == sorted(
        f"{w}-{i}-{j}" for w in "ab" for i in range(15) for j in range(3)
    )
