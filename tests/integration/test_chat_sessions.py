"""Sessions on ``POST /v1/chat/completions`` through the official ``openai`` client, against real
gateways on loopback with real keys, on SQLite and PostgreSQL, in front of a scripted
OpenAI-compatible upstream that records what the model was sent: a conversation continues on
another gateway, a stream is appended once complete, a failed or cut call appends nothing,
another user's session is refused, malformed ids are 400s, old turns are dropped to fit a small
window (and counted in a header), two concurrent requests on one session do not both append,
and runs and chat completions continue each other's sessions."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from elevenfactor.config import ProjectConfig, Settings, parse_project
from elevenfactor.context import EstimateCounter
from elevenfactor.governance import create_key, create_user, local_admin, principal_for_user
from elevenfactor.memory import Session, append_messages, load_session
from elevenfactor.models import AssistantMessage, Message, UserMessage
from elevenfactor.server import Gateway
from elevenfactor.store import migrate, open_store
from tests.support.fault_upstream import Fault, FaultUpstream
from tests.support.server import on_gateway, running_gateway

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

AGENT = "name: clerk\nmodel: default\ninstructions: You are a clerk.\n"
WINDOW = 300
RESERVED = 50


def _project(up: FaultUpstream) -> ProjectConfig:
    fast = {"retry": {"attempts": 1}, "timeout": 10}
    return parse_project(
        {
            "providers": {"up": {"type": "openai", "base_url": up.base_url, "api_key": "k"}},
            "models": {
                "big": {"provider": "up", "model": "up-big", "context_window": 100_000, **fast},
                "tiny": {
                    "provider": "up",
                    "model": "up-tiny",
                    "context_window": WINDOW,
                    "max_output_tokens": RESERVED,
                    **fast,
                },
            },
            "routes": {"default": {"chain": ["big"]}},
        }
    )


@dataclass
class World:
    url: str
    home: Path
    up: FaultUpstream
    project: ProjectConfig
    secrets: dict[str, str]

    @contextmanager
    def gateway(self, name: str = "a") -> Iterator[tuple[str, Gateway]]:
        """A gateway on the shared store (outside dev mode: keys required)."""
        settings = Settings(
            database_url=self.url, data_dir=self.home / name, dev=False,
            config_file=self.home / "elevenfactor.yaml", in_process_worker=True,
        )  # fmt: skip
        with running_gateway(settings, self.project) as served:
            yield served

    def client(self, base: str, who: str) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=base + "/v1", api_key=self.secrets[who], max_retries=0)

    async def session(self, who: str, session_id: str) -> Session:
        db = await open_store(self.url)
        try:
            return await load_session(db, await principal_for_user(db, who), session_id)
        finally:
            await db.close()

    async def seed(self, who: str, session_id: str, messages: list[Message]) -> None:
        db = await open_store(self.url)
        try:
            await append_messages(db, await principal_for_user(db, who), session_id, messages)
        finally:
            await db.close()

    def sent(self, i: int = -1) -> list[dict[str, Any]]:
        """The messages the model got in the upstream's ``i``-th request."""
        return list(self.up.log[i].payload["messages"])


@pytest.fixture
async def world(store_url: str, tmp_path: Path) -> AsyncIterator[World]:
    db = await open_store(store_url)
    try:
        await migrate(db)
        secrets = {}
        for name in ("ann", "bob"):
            await create_user(db, local_admin("cli"), name)
            _, secrets[name] = await create_key(db, local_admin("cli"), f"key-{name}", user=name)
    finally:
        await db.close()
    (tmp_path / "agents").mkdir()
    (tmp_path / "agents" / "clerk.yaml").write_text(AGENT)
    (tmp_path / "elevenfactor.yaml").write_text("{}\n")
    up = await FaultUpstream(name="up").start()
    try:
        yield World(store_url, tmp_path, up, _project(up), secrets)
    finally:
        await up.stop()


def _said(messages: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(m["role"], m.get("content") or "") for m in messages]


async def test_a_conversation_continues_on_another_gateway(world: World) -> None:
    world.up.script(Fault(text="Nice to meet you, Ann."), Fault(text="You are Ann."))
    with world.gateway("a") as (base, _):
        async with world.client(base, "ann") as ann:
            raw = await ann.chat.completions.with_raw_response.create(
                model="default",
                messages=[{"role": "user", "content": "My name is Ann."}],
                extra_headers={"x-elevenfactor-session": "conv-1"},
            )
    assert raw.parse().choices[0].message.content == "Nice to meet you, Ann."
    assert raw.headers["x-elevenfactor-session"] == "conv-1"
    assert raw.headers["x-elevenfactor-session-dropped"] == "0"
    with world.gateway("b") as (base, gw):
        async with world.client(base, "ann") as ann:  # only the new turn; the id in the body
            raw = await ann.chat.completions.with_raw_response.create(
                model="default",
                messages=[
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "What is my name?"},
                ],
                extra_body={"session_id": "conv-1"},
            )
        assert raw.parse().choices[0].message.content == "You are Ann."
        assert raw.headers["x-elevenfactor-session"] == "conv-1"
        # The second gateway's model got the instructions, the first turn, then the new one.
        assert _said(world.sent()) == [
            ("system", "Be brief."),
            ("user", "My name is Ann."),
            ("assistant", "Nice to meet you, Ann."),
            ("user", "What is my name?"),
        ]
        assert gw.recorder is not None and gw.store is not None
        recorder, store = gw.recorder, gw.store
        await on_gateway(gw, recorder.flush)
        row = await on_gateway(gw, lambda: store.fetchone(
            "SELECT session_id FROM model_calls ORDER BY created_at DESC LIMIT 1"))  # fmt: skip
        assert row == ("conv-1",)
    stored = await world.session("ann", "conv-1")
    assert [(m.role, m.content) for m in stored.messages] == [
        ("user", "My name is Ann."),
        ("assistant", "Nice to meet you, Ann."),
        ("user", "What is my name?"),
        ("assistant", "You are Ann."),
    ]  # the system message is the request's, not the session's


async def test_a_stream_is_appended_once_complete_and_a_failure_appends_nothing(
    world: World,
) -> None:
    world.up.script(
        Fault(text="streamed answer"),  # complete
        Fault("reset", after_chunks=1),  # the upstream's stream is cut
        Fault("500"),  # the upstream fails
    )
    head = {"x-elevenfactor-session": "streamy"}
    with world.gateway() as (base, _):
        async with world.client(base, "ann") as ann:
            stream = await ann.chat.completions.create(
                model="default", stream=True, extra_headers=head,
                messages=[{"role": "user", "content": "stream please"}],
            )  # fmt: skip
            text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
            assert text == "streamed answer"
            before = await world.session("ann", "streamy")
            assert [(m.role, m.content) for m in before.messages] == [
                ("user", "stream please"),
                ("assistant", "streamed answer"),
            ]
            with pytest.raises(openai.APIError):
                cut = await ann.chat.completions.create(
                    model="default", stream=True, extra_headers=head,
                    messages=[{"role": "user", "content": "cut me"}],
                )  # fmt: skip
                async for _ in cut:
                    pass
            with pytest.raises(openai.APIStatusError) as failed:
                await ann.chat.completions.create(
                    model="default", extra_headers=head,
                    messages=[{"role": "user", "content": "fail me"}],
                )  # fmt: skip
            assert failed.value.status_code >= 500
    assert world.up.requests == 3  # each reached the model; neither failure was appended
    after = await world.session("ann", "streamy")
    assert after.seqs == before.seqs and after.messages == before.messages


async def test_another_users_session_and_malformed_ids_are_refused(world: World) -> None:
    await world.seed("ann", "ann-only", [UserMessage(content="secret plans")])
    with world.gateway() as (base, _):
        headers = {"Authorization": f"Bearer {world.secrets['bob']}"}
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as bob:

            async def chat(extra: dict[str, Any], **hdrs: str) -> httpx.Response:
                return await bob.post(
                    "/v1/chat/completions",
                    json={"model": "default", "messages": [{"role": "user", "content": "hi"}],
                          **extra},
                    headers=hdrs,
                )  # fmt: skip

            cases: list[tuple[dict[str, Any], dict[str, str], int, str, str]] = [
                ({}, {"x-elevenfactor-session": "ann-only"}, 404, "session_not_found",
                 "session_id"),
                ({"session_id": "ann-only"}, {}, 404, "session_not_found", "session_id"),
                ({}, {"x-elevenfactor-session": "bad/id"}, 400, "invalid_id",
                 "x-elevenfactor-session"),
                ({"session_id": "bad id"}, {}, 400, "invalid_id", "session_id"),
                ({"session_id": 7}, {}, 400, "invalid_id", "session_id"),
                ({"session_id": "one"}, {"x-elevenfactor-session": "two"}, 400,
                 "session_mismatch", "session_id"),
            ]  # fmt: skip
            for extra, hdrs, status, code, param in cases:
                resp = await chat(extra, **hdrs)
                assert resp.status_code == status, (extra, hdrs, resp.text)
                error = resp.json()["error"]
                assert (error["code"], error["param"]) == (code, param), resp.text
    assert world.up.requests == 0  # refused before any model ran
    untouched = await world.session("ann", "ann-only")
    assert [m.content for m in untouched.messages] == ["secret plans"]


async def test_old_turns_are_dropped_to_fit_a_small_window(world: World) -> None:
    history: list[Message] = []
    for i in range(12):
        history.append(UserMessage(content=f"question {i}: " + "tell me about invoices " * 4))
        history.append(AssistantMessage(content=f"answer {i}: " + "invoices are bills " * 4))
    await world.seed("ann", "long", history)
    counter = EstimateCounter()
    new = [{"role": "user", "content": "and now?"}]
    with world.gateway() as (base, _):
        async with world.client(base, "ann") as ann:
            raw = await ann.chat.completions.with_raw_response.create(
                model="tiny", messages=new, extra_headers={"x-elevenfactor-session": "long"}
            )
    assert raw.parse().choices[0].message.content  # no context-window error upstream
    sent = world.sent()
    dropped = int(raw.headers["x-elevenfactor-session-dropped"])
    assert dropped > 0 and len(sent) == len(history) - dropped + 1
    assert dropped % 2 == 0 and sent[0]["role"] == "user"  # whole turns, the oldest
    assert sent[0]["content"] == history[dropped].content
    assert sent[-1] == {"role": "user", "content": "and now?"}

    def tokens(raw_messages: list[dict[str, Any]]) -> int:
        parsed = [
            UserMessage(content=m["content"]) if m["role"] == "user"
            else AssistantMessage(content=m["content"])
            for m in raw_messages
        ]  # fmt: skip
        return counter.count_messages(parsed)

    assert tokens(sent) <= WINDOW - RESERVED  # what was sent fits the window
    everything = [m.model_dump(exclude_none=True) for m in history] + new
    assert tokens(everything) > WINDOW - RESERVED  # what is stored would not
    stored = await world.session("ann", "long")
    assert len(stored.messages) == len(history) + 2  # nothing stored was lost


async def test_concurrent_requests_on_one_session_do_not_both_append(world: World) -> None:
    await world.seed("ann", "busy", [UserMessage(content="hello"), AssistantMessage(content="hi")])
    # Both requests read the session before either answer is in: the first answer comes after
    # 1 s, the second after 2 s.
    world.up.script(Fault("hang", delay=1.0, text="first"), Fault("hang", delay=2.0, text="second"))
    with world.gateway() as (base, _):
        async with world.client(base, "ann") as ann:

            async def ask(text: str) -> str:
                try:
                    done = await ann.chat.completions.create(
                        model="default", messages=[{"role": "user", "content": text}],
                        extra_body={"session_id": "busy"},
                    )  # fmt: skip
                except openai.ConflictError as exc:
                    assert exc.code == "session_conflict"
                    return "conflict"
                return str(done.choices[0].message.content)

            results = await asyncio.gather(ask("one"), ask("two"))
            log = world.up.log
            assert len(log) == 2 and log[1].at < log[0].at + 1.0  # both ran at the same time
            assert sorted(results) == ["conflict", "first"]
            winner = "one" if results[0] == "first" else "two"
            loser = "two" if winner == "one" else "one"
            stored = await world.session("ann", "busy")
            assert [m.content for m in stored.messages] == ["hello", "hi", winner, "first"]
            # Sent again, the loser's turn sees the winner's and is appended after it.
            world.up.script(Fault(text="third"))
            assert await ask(loser) == "third"
    assert _said(world.sent())[-3:] == [("user", winner), ("assistant", "first"), ("user", loser)]
    stored = await world.session("ann", "busy")
    assert [m.content for m in stored.messages] == ["hello", "hi", winner, "first", loser, "third"]
    assert stored.seqs == list(range(6))


async def test_a_stream_that_lost_the_race_ends_with_an_error_event(world: World) -> None:
    # The plain request reads the session first and answers after 0.5 s; the stream starts
    # after it and answers after 1.5 s: it was read before the plain answer was appended.
    world.up.script(Fault("hang", delay=0.5, text="answer"), Fault("hang", delay=1.5, text="late"))
    head = {"x-elevenfactor-session": "race"}
    with world.gateway() as (base, _):
        async with world.client(base, "ann") as ann:
            plain = asyncio.ensure_future(
                ann.chat.completions.create(
                    model="default",
                    messages=[{"role": "user", "content": "plain"}],
                    extra_headers=head,
                )
            )
            await world.up.wait_for_requests(1)
            stream = await ann.chat.completions.create(
                model="default", stream=True, extra_headers=head,
                messages=[{"role": "user", "content": "streamed"}],
            )  # fmt: skip
            text = ""
            with pytest.raises(openai.APIError) as lost:
                async for chunk in stream:
                    if chunk.choices:
                        text += chunk.choices[0].delta.content or ""
            assert (await plain).choices[0].message.content == "answer"
    assert text == "late"  # the answer was streamed; it could not be appended
    assert "session_conflict" in str(lost.value.body) + str(lost.value)
    stored = await world.session("ann", "race")
    assert [m.content for m in stored.messages] == ["plain", "answer"]


async def _run(http: httpx.AsyncClient, text: str, session: str) -> dict[str, Any]:
    created = await http.post(
        "/v1/runs", json={"agent": "clerk", "input": text, "session_id": session}
    )
    assert created.status_code == 201, created.text
    rid = created.json()["id"]
    deadline = time.monotonic() + 30
    while True:
        shown = (await http.get(f"/v1/runs/{rid}")).json()
        if shown["status"] in ("succeeded", "failed", "cancelled"):
            assert shown["status"] == "succeeded", shown
            return dict(shown)
        assert time.monotonic() < deadline, "the run did not finish"
        await asyncio.sleep(0.05)


async def test_runs_and_chat_completions_continue_each_others_sessions(world: World) -> None:
    world.up.script(Fault(text="run answer"), Fault(text="chat answer"), Fault(text="run again"))
    with world.gateway() as (base, _):
        headers = {"Authorization": f"Bearer {world.secrets['ann']}"}
        async with (
            httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as http,
            world.client(base, "ann") as ann,
        ):
            await _run(http, "run question", "shared")
            answer = await ann.chat.completions.create(
                model="default", messages=[{"role": "user", "content": "chat question"}],
                extra_headers={"x-elevenfactor-session": "shared"},
            )  # fmt: skip
            assert answer.choices[0].message.content == "chat answer"
            # The chat completion continued the run's conversation ...
            assert _said(world.sent(1)) == [
                ("user", "run question"),
                ("assistant", "run answer"),
                ("user", "chat question"),
            ]
            # ... and the next run continues the chat completion's.
            await _run(http, "run question 2", "shared")
    said = _said(world.sent(2))
    assert said[0] == ("system", "You are a clerk.")
    assert said[1:] == [
        ("user", "run question"),
        ("assistant", "run answer"),
        ("user", "chat question"),
        ("assistant", "chat answer"),
        ("user", "run question 2"),
    ]
    stored = await world.session("ann", "shared")
    assert [m.content for m in stored.messages][-2:] == ["run question 2", "run again"]
