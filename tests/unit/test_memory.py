"""Long-term memory on SQLite and PostgreSQL: remember, supersede with history, recall ranked by
similarity, recency and importance, TTL, scopes and grants, forget and forget_user."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from elevenfactor.config import CacheConfig, parse_project
from elevenfactor.config._memory import MemoryConfig
from elevenfactor.errors import EmbedderMismatch, MemoryDenied, NotFound, RequestError
from elevenfactor.governance import Principal, local_admin
from elevenfactor.memory import (
    MemoryActor,
    Provenance,
    Scope,
    append_messages,
    apply_spaces,
    forget,
    forget_user,
    get_memory,
    grant,
    history,
    list_grants,
    list_memories,
    purge_expired,
    recall,
    remember,
    revoke,
    set_state,
)
from elevenfactor.models import (
    AssistantMessage,
    Call,
    FunctionModel,
    Message,
    ModelSettings,
    Response,
    ResponseCache,
    StoreCache,
    Usage,
    UserMessage,
)
from elevenfactor.store import Store, open_store
from tests.support.principals import member
from tests.unit.test_memory_doubles import WordHashEmbedderDouble

ALICE = MemoryActor(member("alice"))
BOB = MemoryActor(member("bob"))
ADMIN = MemoryActor(local_admin("cli"))
DAY = 86400.0
T0 = 1_800_000_000.0


@pytest.fixture
def emb() -> WordHashEmbedderDouble:
    return WordHashEmbedderDouble()


def _as_agent(actor: MemoryActor, agent: str) -> MemoryActor:
    return MemoryActor(actor.principal, agent)


async def test_recall_ranks_by_similarity_and_marks_what_it_returned(
    store: Store, emb: WordHashEmbedderDouble
) -> None:
    me = Scope.user(ALICE.user_id)
    tea = await remember(store, emb, ALICE, me, "Alice drinks green tea every morning", now=T0)
    await remember(store, emb, ALICE, me, "Alice works on the billing service", now=T0)
    await remember(store, emb, ALICE, me, "Alice has a dog called Rex", now=T0)
    found = await recall(store, emb, ALICE, "what tea does alice drink", k=2, now=T0 + 10)
    assert found[0].memory.id == tea.id
    assert [r.score for r in found] == sorted((r.score for r in found), reverse=True)
    assert found[0].similarity > 0.3 and found[0].recency == pytest.approx(1.0, abs=1e-4)
    assert (await get_memory(store, ALICE, tea.id)).recalled_at == T0 + 10
    assert tea.provenance == {"source": "api"} and tea.user_id == ALICE.user_id
    # k and min_score bound the answer
    assert len(await recall(store, emb, ALICE, "tea", k=1, now=T0)) == 1
    assert await recall(store, emb, ALICE, "tea", min_score=0.99, now=T0) == []


async def test_same_key_supersedes_and_keeps_the_history_linked_both_ways(
    store: Store, emb: WordHashEmbedderDouble
) -> None:
    me = Scope.user(ALICE.user_id)
    v1 = await remember(store, emb, ALICE, me, "Favourite colour is blue", key="user.color")
    v2 = await remember(store, emb, ALICE, me, "Favourite colour is green", key="user.color")
    v3 = await remember(store, emb, ALICE, me, "Favourite colour is red", key="user.color")
    assert v2.supersedes == v1.id and v3.supersedes == v2.id
    chain = await history(store, ALICE, v2.id)
    assert [m.id for m in chain] == [v1.id, v2.id, v3.id]
    assert chain[0].superseded_by == v2.id and chain[1].superseded_by == v3.id
    assert chain[2].superseded_by is None
    found = await recall(store, emb, ALICE, "favourite colour", min_score=0)
    assert [r.memory.text for r in found] == ["Favourite colour is red"]
    active = await list_memories(store, ALICE, [me])
    assert [m.id for m in active] == [v3.id]
    assert len(await list_memories(store, ALICE, [me], include_inactive=True)) == 3
    # another key or another scope is independent
    other = await remember(store, emb, ALICE, me, "Favourite food is soup", key="user.food")
    assert other.supersedes is None


async def test_near_duplicate_without_key_supersedes_at_the_threshold(
    store: Store, emb: WordHashEmbedderDouble
) -> None:
    me = Scope.user(ALICE.user_id)
    old = await remember(store, emb, ALICE, me, "Alice lives in Lyon", key="user.city")
    same = await remember(store, emb, ALICE, me, "alice lives in lyon!")
    assert same.supersedes == old.id and same.key == "user.city"  # the key is inherited
    unrelated = await remember(store, emb, ALICE, me, "Alice plays the cello on Sundays")
    assert unrelated.supersedes is None
    # A stricter threshold than the overlap keeps both; a looser one supersedes.
    strict = MemoryConfig(supersede_threshold=0.99)
    loose = MemoryConfig(supersede_threshold=0.5)
    a = await remember(store, emb, ALICE, me, "Alice plays the cello on Mondays", config=strict)
    assert a.supersedes is None
    b = await remember(store, emb, ALICE, me, "Alice plays the cello on Mondays too", config=loose)
    assert b.supersedes == a.id


async def test_ttl_hides_then_purges_and_decay_follows_the_half_life(
    store: Store, emb: WordHashEmbedderDouble
) -> None:
    me = Scope.user(ALICE.user_id)
    brief = await remember(store, emb, ALICE, me, "parking spot 42 today", ttl=3600, now=T0)
    assert brief.expires_at == T0 + 3600
    assert [r.memory.id for r in await recall(store, emb, ALICE, "parking spot", now=T0 + 60)]
    assert await recall(store, emb, ALICE, "parking spot", now=T0 + 7200) == []
    assert await purge_expired(store, now=T0 + 7200) == 1
    assert await list_memories(store, ALICE, [me], include_inactive=True) == []

    conf = MemoryConfig(half_life_days=30)
    await remember(store, emb, ALICE, me, "likes jazz records", now=T0 - 60 * DAY)
    await remember(store, emb, ALICE, me, "likes jazz concerts", now=T0)
    found = await recall(store, emb, ALICE, "jazz", min_score=0, config=conf, now=T0)
    by_text = {r.memory.text: r for r in found}
    assert by_text["likes jazz records"].recency == pytest.approx(0.25)
    assert by_text["likes jazz concerts"].recency == pytest.approx(1.0)
    assert found[0].memory.text == "likes jazz concerts"
    # Recalling restarts the decay: the old one is now fresh.
    again = await recall(store, emb, ALICE, "jazz", min_score=0, config=conf, now=T0 + 1)
    assert [r.recency for r in again] == pytest.approx([1.0, 1.0], abs=1e-3)


async def test_default_ttl_from_config(store: Store, emb: WordHashEmbedderDouble) -> None:
    conf = MemoryConfig(default_ttl_days=2)
    m = await remember(store, emb, ALICE, Scope.user(ALICE.user_id), "x y z", config=conf, now=T0)
    assert m.expires_at == T0 + 2 * DAY


async def test_importance_breaks_ties(store: Store, emb: WordHashEmbedderDouble) -> None:
    me = Scope.user(ALICE.user_id)
    low = await remember(store, emb, ALICE, me, "allergic to nuts", importance=0.1, now=T0)
    high = await remember(store, emb, ALICE, me, "allergic to cats", importance=0.9, now=T0)
    found = await recall(store, emb, ALICE, "allergic", min_score=0, now=T0)
    assert [r.memory.id for r in found] == [high.id, low.id]


async def test_three_agents_share_a_space_only_through_grants(
    store: Store, emb: WordHashEmbedderDouble
) -> None:
    admin = local_admin("cli")
    await grant(store, admin, "team-notes", "writer", read=True, write=True)
    await grant(store, admin, "team-notes", "reader", read=True, write=False)
    writer, reader, outsider = (_as_agent(ALICE, n) for n in ("writer", "reader", "outsider"))
    space = Scope.space("team-notes")

    note = await remember(
        store, emb, writer, space, "The release freeze starts on Friday", importance=0.8
    )
    found = await recall(store, emb, reader, "when does the release freeze start", [space])
    assert [r.memory.id for r in found] == [note.id]
    # the reader's default scopes include the space it may read
    assert note.id in [r.memory.id for r in await recall(store, emb, reader, "release freeze")]

    with pytest.raises(MemoryDenied) as denied:
        await recall(store, emb, outsider, "release freeze", [space])
    assert "team-notes" in str(denied.value) and "outsider" in str(denied.value)
    assert denied.value.code == "memory_denied" and denied.value.http_status == 403
    with pytest.raises(MemoryDenied, match=r"outsider.*team-notes"):
        await remember(store, emb, outsider, space, "sneaky note")
    with pytest.raises(MemoryDenied, match=r"reader.*write.*team-notes"):
        await remember(store, emb, reader, space, "a reader writes")
    # without a grant the space is not among its default scopes either
    assert await recall(store, emb, outsider, "release freeze") == []
    with pytest.raises(NotFound):
        await get_memory(store, outsider, note.id)
    with pytest.raises(MemoryDenied):
        await forget(store, reader, note.id)

    assert await revoke(store, admin, "team-notes", "reader")
    with pytest.raises(MemoryDenied):
        await recall(store, emb, reader, "release", [space])
    assert [g.grantee for g in await list_grants(store, admin, "team-notes")] == ["writer"]
    with pytest.raises(NotFound, match="no memory space"):
        await recall(store, emb, writer, "x", [Scope.space("nowhere")])


async def test_users_and_agents_see_only_their_own_scopes(
    store: Store, emb: WordHashEmbedderDouble
) -> None:
    secret = await remember(store, emb, ALICE, Scope.user(ALICE.user_id), "Alice's PIN hint")
    with pytest.raises(MemoryDenied, match="bob"):
        await recall(store, emb, BOB, "PIN", [Scope.user(ALICE.user_id)])
    with pytest.raises(MemoryDenied):
        await remember(store, emb, BOB, Scope.user(ALICE.user_id), "planted")
    assert await recall(store, emb, BOB, "Alice PIN hint") == []
    with pytest.raises(NotFound):
        await get_memory(store, BOB, secret.id)
    with pytest.raises(NotFound):
        await forget(store, BOB, secret.id)
    # an admin acting directly reads (and may delete) its organisation's memories ...
    assert (await get_memory(store, ADMIN, secret.id)).text == "Alice's PIN hint"
    # ... but not one of another organisation
    stranger = MemoryActor(
        Principal(org_id="org_other", user_id="user_x", user_name="x", roles=frozenset({"admin"}))
    )
    with pytest.raises(NotFound):
        await get_memory(store, stranger, secret.id)

    a, b = _as_agent(ALICE, "agent-a"), _as_agent(ALICE, "agent-b")
    own = await remember(store, emb, a, Scope.agent("agent-a"), "agent A's own note")
    with pytest.raises(MemoryDenied, match="agent-b"):
        await recall(store, emb, b, "note", [Scope.agent("agent-a")])
    assert own.id not in [r.memory.id for r in await recall(store, emb, b, "agent A's own note")]
    # a run of agent-a acting for bob still reads agent-a's memory, not alice's
    bob_a = _as_agent(BOB, "agent-a")
    found = await recall(store, emb, bob_a, "agent A's own note Alice's PIN hint", min_score=0)
    assert [r.memory.id for r in found] == [own.id]


async def test_recall_with_another_embedder_is_refused(
    store: Store, emb: WordHashEmbedderDouble
) -> None:
    me = Scope.user(ALICE.user_id)
    await remember(store, emb, ALICE, me, "a fact")
    other = WordHashEmbedderDouble(name="test/other")
    with pytest.raises(EmbedderMismatch, match="test/word-hash") as err:
        await recall(store, other, ALICE, "a fact")
    assert err.value.http_status == 409


async def test_forget_removes_a_memory_and_its_history(
    store: Store, emb: WordHashEmbedderDouble
) -> None:
    me = Scope.user(ALICE.user_id)
    v1 = await remember(store, emb, ALICE, me, "works at Acme", key="user.employer")
    v2 = await remember(store, emb, ALICE, me, "works at Initech", key="user.employer")
    keep = await remember(store, emb, ALICE, me, "has two cats")
    assert await forget(store, ALICE, v1.id) == 2
    left = await list_memories(store, ALICE, [me], include_inactive=True)
    assert [m.id for m in left] == [keep.id]
    with pytest.raises(NotFound):
        await history(store, ALICE, v2.id)


async def test_bad_input_is_refused_with_a_code(store: Store, emb: WordHashEmbedderDouble) -> None:
    me = Scope.user(ALICE.user_id)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"text": ""}, "invalid_text"),
        ({"text": "x" * 5000}, "invalid_text"),
        ({"text": "a\x00b"}, "invalid_text"),
        ({"text": "ok", "kind": "rumour"}, "invalid_kind"),
        ({"text": "ok", "importance": 1.5}, "invalid_importance"),
        ({"text": "ok", "importance": float("nan")}, "invalid_importance"),
        ({"text": "ok", "key": "no spaces"}, "invalid_id"),
        ({"text": "ok", "ttl": -1}, "invalid_ttl"),
        ({"text": "ok", "provenance": {"source": "rumour"}}, "invalid_provenance"),
        ({"text": "ok", "provenance": {"source": "run", "x": 1}}, "invalid_provenance"),
    ]
    for kwargs, code in cases:
        text = kwargs.pop("text")
        with pytest.raises(RequestError) as err:
            await remember(store, emb, ALICE, me, text, **kwargs)
        assert err.value.code == code, kwargs
    for bad in ("alice", "team:x", "user:", "user:a b"):
        with pytest.raises(RequestError) as err:
            Scope.parse(bad)
        assert err.value.code in ("invalid_scope", "invalid_id")
    with pytest.raises(RequestError, match="query"):
        await recall(store, emb, ALICE, "   ")
    assert await list_memories(store, ALICE, [me], include_inactive=True) == []


async def test_config_spaces_are_applied_and_withdrawn(
    store: Store, emb: WordHashEmbedderDouble
) -> None:
    admin = local_admin("cli")
    project = parse_project(
        {
            "memory": {
                "spaces": {
                    "team-notes": {
                        "grants": {"writer-agent": ["read", "write"], "reader-agent": ["read"]}
                    }
                }
            }
        }
    )
    await apply_spaces(store, admin, project.memory)
    got = {(g.grantee, g.read, g.write) for g in await list_grants(store, admin)}
    assert got == {("writer-agent", True, True), ("reader-agent", True, False)}
    await grant(store, admin, "team-notes", "by-hand", read=True)
    fewer = parse_project(
        {"memory": {"spaces": {"team-notes": {"grants": {"writer-agent": ["read"]}}}}}
    )
    await apply_spaces(store, admin, fewer.memory)
    now = {(g.grantee, g.read, g.write, g.source) for g in await list_grants(store, admin)}
    assert now == {("writer-agent", True, False, "config"), ("by-hand", True, False, "admin")}
    with pytest.raises(RequestError):
        await apply_spaces(store, ALICE.principal, project.memory)


async def _all_rows(store: Store) -> dict[str, list[str]]:
    """Every row of every table of the store, as text (bytes decoded as latin-1)."""
    if store.dialect == "sqlite":
        rows = await store.fetchall("SELECT name FROM sqlite_master WHERE type = 'table'")
    else:
        rows = await store.fetchall(
            "SELECT table_name FROM information_schema.tables"
            " WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'"
        )
    out: dict[str, list[str]] = {}
    for (table,) in rows:
        out[table] = [
            " | ".join(_text(v) for v in row)
            for row in await store.fetchall(f'SELECT * FROM "{table}"')
        ]
    return out


def _text(value: object) -> str:
    if isinstance(value, memoryview):
        value = bytes(value)
    return value.decode("latin-1") if isinstance(value, bytes) else str(value)


async def test_forget_user_leaves_nothing_of_the_user_in_any_table(
    store: Store, emb: WordHashEmbedderDouble
) -> None:
    admin = local_admin("cli")
    await grant(store, admin, "team-notes", "helper", read=True, write=True)
    await grant(store, admin, "team-notes", f"user:{ALICE.user_id}", read=True, write=True)
    texts = [
        "Zanzibar-7 is the codename of Alice's surprise party",
        "Alice prefers replies in Esperanto-quux",
        "Alice's manager is Quentin-Flarp",
        "Alice told the helper her locker is Vortex-99",
        "Alice noted in the team space: Marmalade-Kite",
    ]
    me = Scope.user(ALICE.user_id)
    first = await remember(store, emb, ALICE, me, texts[0], key="party.codename")
    await remember(store, emb, ALICE, me, texts[1], kind="preference")
    await remember(store, emb, ALICE, me, texts[2], key="party.codename")  # supersedes texts[0]
    helper = _as_agent(ALICE, "helper")
    await remember(
        store,
        emb,
        helper,
        Scope.agent("helper"),
        texts[3],
        provenance=Provenance("tool", run_id="run_alice_1", step_key="run_alice_1:3"),
    )
    await remember(store, emb, ALICE, Scope.space("team-notes"), texts[4])
    bob_note = await remember(store, emb, BOB, Scope.user(BOB.user_id), "Bob likes chess")
    helper_bob = await remember(
        store, emb, _as_agent(BOB, "helper"), Scope.agent("helper"), "Bob's locker is 12"
    )
    session_text = "my password hint is Periwinkle-Otter"
    await append_messages(
        store, ALICE.principal, "alice-chat", [{"role": "user", "content": session_text}]
    )
    await set_state(store, ALICE.principal, "alice-chat", {"mood": "Gossamer-Yak"})
    await append_messages(store, BOB.principal, "bob-chat", [{"role": "user", "content": "hi"}])
    # the exact response cache's answers to their calls (answers that repeat the question)
    cache = StoreCache(store)
    echo = ResponseCache(FunctionModel(_echo, name="dep"), cache, config=CacheConfig(ttl=600))
    asked = "Is Tangerine-Owl my bank PIN?"
    await _ask(echo, ALICE, asked)
    await _ask(echo, BOB, "Is chess fun?")
    before = await _all_rows(store)
    assert any(ALICE.user_id in r for rows in before.values() for r in rows)
    assert any("Tangerine-Owl" in r for r in before["response_cache"])
    assert first.id

    done = await forget_user(store, admin, ALICE.user_id, cache=cache)
    assert (done.memories, done.derived_memories) == (3, 2)
    assert (done.sessions, done.messages, done.grants) == (1, 1, 1)
    assert done.response_cache_entries == 1  # the store's table, counted once

    after = await _all_rows(store)
    secrets = [*texts, session_text, "Gossamer-Yak", "alice-chat", "run_alice_1", "Tangerine-Owl"]
    for table, rows in after.items():
        for row in rows:
            for secret in secrets:
                assert secret not in row, f"{secret!r} left in {table}"
            if ALICE.user_id in row:
                # What remains is the audit of admin actions about the user (the grant, and
                # the forgetting itself: who forgot whom, with counts), never their content.
                assert table == "ledger" and "admin.memory." in row, (table, row)
    [entry] = [r for r in after["ledger"] if "admin.memory.forget_user" in r]
    assert admin.user_id in entry
    # Bob's memories, session and the helper's other memory are untouched.
    assert (await get_memory(store, MemoryActor(BOB.principal), bob_note.id)).text
    assert (await get_memory(store, ADMIN, helper_bob.id)).text == "Bob's locker is 12"
    assert any("bob-chat" in r for r in after["sessions"])
    assert [r for r in after["response_cache"] if "Is chess fun?" in r and BOB.user_id in r]
    with pytest.raises(RequestError):
        await forget_user(store, ALICE.principal, BOB.user_id)


async def _echo(messages: Sequence[Message], settings: ModelSettings) -> Response:
    return Response(
        message=AssistantMessage(content=f"you asked: {messages[-1].content}"),
        usage=Usage(input_tokens=1, output_tokens=1),
        model="echo",
        finish_reason="stop",
    )


async def _ask(model: ResponseCache, actor: MemoryActor, text: str) -> None:
    call = Call(org_id=actor.principal.org_id, user_id=actor.user_id)
    await model.request([UserMessage(content=text)], ModelSettings(temperature=0), call)


async def test_concurrent_writers_of_one_key_leave_one_linear_history(
    store: Store, store_url: str, emb: WordHashEmbedderDouble
) -> None:
    other = await open_store(store_url)
    me = Scope.user(ALICE.user_id)
    try:

        async def writer(db: Store, who: str) -> None:
            for i in range(6):
                await remember(db, emb, ALICE, me, f"status {who} {i}", key="user.status")

        await asyncio.gather(writer(store, "a"), writer(other, "b"))
    finally:
        await other.close()
    every = await list_memories(store, ALICE, [me], include_inactive=True)
    active = [m for m in every if m.superseded_by is None]
    assert len(every) == 12 and len(active) == 1
    chain = await history(store, ALICE, active[0].id)
    assert len(chain) == 12  # every version is in one chain, each superseded exactly once
    assert len({m.superseded_by for m in chain}) == 12
