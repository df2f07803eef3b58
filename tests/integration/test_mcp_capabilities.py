"""The MCP server's capabilities beyond tools — logging, progress from an agent run's journal,
resources (agent cards, ``run://ID``), prompts, ``x-trace-id`` — through the official ``mcp``
client: over streamable HTTP (a gateway outside dev mode, real keys) and over stdio
(``elevenfactor mcp serve --as``)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import orjson
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError
from mcp_types import LoggingMessageNotificationParams, TextResourceContents

from elevenfactor.config import Settings, load_project
from elevenfactor.governance import Principal, create_key, create_user, local_admin
from elevenfactor.governance import principal_for_user as user_principal
from elevenfactor.runtime import describe_steps, get_run, submit_run
from elevenfactor.store import Store, migrate, open_store
from tests.support.serve import EXE, ROOT
from tests.support.server import running_gateway

pytestmark = pytest.mark.integration

PROJECT = """
providers: {t: {type: test}}
models: {echo: {provider: t, model: e}}
routes: {default: {chain: [echo]}}
toolsets: {calc: "tests.support.programs:calc"}
mcp_server: {tools: ["calc.add"], wait_seconds: 10}
"""
AGENT = """
description: Repeats what it is told.
instructions: Repeat the user.
model: default
tools: [{toolset: calc, allow: [add], prefix: calc_}]
"""
ADMIN = local_admin("cli")


@dataclass
class Env:
    home: Path
    url: str
    store: Store
    users: dict[str, Principal]
    secrets: dict[str, str]
    base: str = ""


async def _setup(home: Path, url: str) -> Env:
    store = await open_store(url)
    await migrate(store)
    (home / "elevenfactor.yaml").write_text(PROJECT)
    (home / "agents").mkdir()
    (home / "agents" / "echoer.yaml").write_text(AGENT)
    env = Env(home, url, store, {}, {})
    for name in ("mia", "otto"):
        await create_user(store, ADMIN, name)
        env.secrets[name] = (await create_key(store, ADMIN, f"{name}-key", user=name))[1]
        env.users[name] = await user_principal(store, name)
    return env


@pytest.fixture
async def env(store_url: str, tmp_path: Path) -> AsyncIterator[Env]:
    """A gateway outside dev mode (with its worker); users mia and otto with keys."""
    state = await _setup(tmp_path, store_url)
    settings = Settings(
        database_url=store_url,
        dev=False,
        config_file=tmp_path / "elevenfactor.yaml",
        in_process_worker=True,
    )
    try:
        with running_gateway(settings, load_project(tmp_path / "elevenfactor.yaml")) as (base, _):
            state.base = base
            yield state
    finally:
        await state.store.close()


@dataclass
class Heard:
    """What a client heard besides responses."""

    progress: list[tuple[float, float | None, str | None]] = field(default_factory=list)
    logs: list[LoggingMessageNotificationParams] = field(default_factory=list)
    trace_ids: list[str | None] = field(default_factory=list)

    async def on_progress(self, progress: float, total: float | None, message: str | None) -> None:
        self.progress.append((progress, total, message))

    async def on_log(self, params: LoggingMessageNotificationParams) -> None:
        self.logs.append(params)

    def events(self) -> list[tuple[str, str]]:
        return [(p.level, p.data["event"]) for p in self.logs]


@asynccontextmanager
async def _http(
    env: Env, user: str, heard: Heard, mode: str = "auto", log_level: Any = None
) -> AsyncIterator[Client]:
    async def record(response: httpx2.Response) -> None:
        heard.trace_ids.append(response.headers.get("x-trace-id"))

    async with httpx2.AsyncClient(
        headers={"Authorization": f"Bearer {env.secrets[user]}"},
        timeout=httpx2.Timeout(30.0),
        event_hooks={"response": [record]},
    ) as http:
        transport = streamable_http_client(env.base + "/mcp", http_client=http)
        async with Client(
            transport, mode=mode, logging_callback=heard.on_log, log_level=log_level
        ) as client:
            yield client


def _stdio(env: Env, user: str, heard: Heard, mode: str, log_level: Any = None) -> Client:
    envvars = {k: v for k, v in os.environ.items() if not k.startswith("ELEVENFACTOR_")}
    envvars.update(DATABASE_URL=env.url, PYTHONPATH=str(ROOT))
    params = StdioServerParameters(
        command=EXE, args=["mcp", "serve", "--as", user], env=envvars, cwd=str(env.home)
    )
    return Client(params, mode=mode, logging_callback=heard.on_log, log_level=log_level)


def _json(contents: list[Any]) -> Any:
    [only] = contents
    assert isinstance(only, TextResourceContents) and only.mime_type == "application/json"
    return orjson.loads(only.text)


async def _check_resources_and_prompts(client: Client, env: Env, owner: str) -> None:
    """Cards, templates, the caller's finished run by ``run://``, an empty prompt list; another
    user's run and an unknown URI are not found."""
    caps = client.server_capabilities
    assert caps.resources is not None and caps.prompts is not None and caps.logging is not None
    listed = (await client.list_resources()).resources
    assert [(r.uri, r.mime_type) for r in listed] == [("agent://echoer", "application/json")]
    card = _json((await client.read_resource("agent://echoer")).contents)
    assert card["name"] == "echoer" and card["description"] == "Repeats what it is told."
    assert card["model"] == "default"
    assert card["input_schema"]["required"] == ["input"]
    assert card["tools"] == [{"toolset": "calc", "allow": ["add"], "deny": [], "prefix": "calc_"}]
    assert "instructions" not in card
    templates = (await client.list_resource_templates()).resource_templates
    assert [t.uri_template for t in templates] == ["run://{run_id}"]

    ran = await client.call_tool("echoer", {"input": "remember me"})
    assert ran.structured_content is not None
    run_id = ran.structured_content["run_id"]
    body = _json((await client.read_resource(f"run://{run_id}")).contents)
    assert body["status"] == "succeeded" and body["program"] == "echoer"
    assert body["result"]["output"] == "echo: remember me"
    assert (await get_run(env.store, run_id, env.users[owner])).user_id == env.users[owner].user_id

    other = "otto" if owner == "mia" else "mia"
    theirs = await submit_run(env.store, "echoer", {"input": "mine"}, owner=env.users[other])
    for uri in (f"run://{theirs}", "run://nope", "agent://nobody", "file:///etc/passwd"):
        with pytest.raises(MCPError) as caught:
            await client.read_resource(uri)
        assert caught.value.code == -32002, uri
    assert "mine" not in str(caught.value)

    assert (await client.list_prompts()).prompts == []
    with pytest.raises(MCPError):
        await client.get_prompt("summarise")


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_resources_and_prompts_over_http_act_for_the_key_s_user(env: Env, mode: str) -> None:
    heard = Heard()
    async with _http(env, "mia", heard, mode) as client:
        await _check_resources_and_prompts(client, env, "mia")
    assert heard.trace_ids and all(heard.trace_ids), "every /mcp response names its trace"


async def test_every_mcp_response_carries_a_trace_id(env: Env) -> None:
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    call = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    key = {"Authorization": f"Bearer {env.secrets['otto']}"}
    async with httpx2.AsyncClient(base_url=env.base) as http:
        refused = await http.post("/mcp", json=call)  # no key
        not_acceptable = await http.post("/mcp", json=call, headers={**key, "accept": "text/html"})
        traced = await http.post(
            "/mcp",
            json=call,
            headers={**key, "accept": "application/json", "traceparent": traceparent},
        )
    assert refused.status_code == 401 and refused.headers["x-trace-id"]
    assert not_acceptable.status_code == 406 and not_acceptable.headers["x-trace-id"]
    assert traced.headers["x-trace-id"] == "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_over_http_an_agent_call_streams_its_journal_steps_and_logs(
    env: Env, mode: str
) -> None:
    """The official client accepts SSE, so each answer is a short event stream: progress (one per
    journal step) and, where the request opted in (2026-07-28), log messages arrive before the
    result. Over stateless HTTP a legacy ``logging/setLevel`` is accepted but lasts for that
    request only, so a legacy client hears progress and no logs."""
    heard = Heard()
    async with _http(env, "otto", heard, mode, "info" if mode == "auto" else None) as client:
        assert client.server_capabilities.logging is not None
        if mode == "legacy":
            with pytest.warns(MCPDeprecationWarning):
                await client.set_logging_level("debug")
        ran = await client.call_tool("echoer", {"input": "hi"}, progress_callback=heard.on_progress)
    assert not ran.is_error
    assert ran.content[0].text == "echo: hi"  # type: ignore[union-attr]
    assert ran.structured_content is not None
    run_id = ran.structured_content["run_id"]
    steps = await describe_steps(env.store, run_id, 0)
    assert steps, "an agent run writes journal steps"
    expected = [(i + 1, None, f"{s['kind']} {s['name']}") for i, s in enumerate(steps)]
    end = len(steps) + 1
    assert heard.progress == [*expected, (end, end, "run succeeded")]
    if mode == "auto":
        assert heard.events() == [("info", "run_started"), ("info", "run_finished")]
        assert {p.data["run_id"] for p in heard.logs} == {run_id}
    else:
        assert heard.logs == []


async def test_mcp_answers_sse_or_json_as_the_client_accepts(env: Env) -> None:
    call = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    key = {"Authorization": f"Bearer {env.secrets['otto']}"}
    async with httpx2.AsyncClient(base_url=env.base) as http:
        events = await http.post(
            "/mcp", json=call, headers={**key, "accept": "application/json, text/event-stream"}
        )
        plain = await http.post("/mcp", json=call, headers={**key, "accept": "*/*"})
    assert events.status_code == 200, events.text
    assert events.headers["content-type"].startswith("text/event-stream")
    assert events.headers["x-trace-id"]
    data = [line[5:].strip() for line in events.text.splitlines() if line.startswith("data:")]
    assert any(orjson.loads(d).get("id") == 1 for d in data if d)
    assert plain.status_code == 200 and plain.headers["content-type"] == "application/json"
    assert orjson.loads(plain.content)["result"]["tools"]


async def test_over_stdio_resources_prompts_and_another_user_s_run(
    store_url: str, tmp_path: Path
) -> None:
    env = await _setup(tmp_path, store_url)
    try:
        async with _stdio(env, "otto", Heard(), "auto") as client:
            await _check_resources_and_prompts(client, env, "otto")
    finally:
        await env.store.close()


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_over_stdio_an_agent_call_reports_its_journal_steps_and_logs_at_the_level(
    store_url: str, tmp_path: Path, mode: str
) -> None:
    env = await _setup(tmp_path, store_url)
    quiet, heard = Heard(), Heard()
    try:
        # Handshake era: no log until `logging/setLevel`. 2026-07-28: each request opts in.
        async with _stdio(env, "mia", quiet, mode) as client:
            first = await client.call_tool("echoer", {"input": "one"})
        async with _stdio(env, "mia", heard, mode, "info" if mode == "auto" else None) as client:
            if mode == "legacy":
                with pytest.warns(MCPDeprecationWarning):
                    await client.set_logging_level("info")
            ran = await client.call_tool(
                "echoer", {"input": "two"}, progress_callback=heard.on_progress
            )
            if mode == "legacy":
                with pytest.warns(MCPDeprecationWarning):
                    await client.set_logging_level("error")
                await client.call_tool("echoer", {"input": "three"})
        assert not first.is_error and quiet.logs == [] and quiet.progress == []
        assert ran.structured_content is not None
        run_id = ran.structured_content["run_id"]
        steps = await describe_steps(env.store, run_id, 0)
    finally:
        await env.store.close()
    assert steps, "an agent run writes journal steps"
    expected = [(i + 1, None, f"{s['kind']} {s['name']}") for i, s in enumerate(steps)]
    end = len(steps) + 1
    assert heard.progress == [*expected, (end, end, "run succeeded")]
    assert heard.events() == [("info", "run_started"), ("info", "run_finished")]
    assert {p.data["run_id"] for p in heard.logs} == {run_id}
    assert all(p.logger == "elevenfactor.mcp" for p in heard.logs)


@pytest.mark.parametrize("accept", ["application/json, text/event-stream", "application/json"])
async def test_malformed_mcp_bodies_are_400s_on_either_transport(env: Env, accept: str) -> None:
    headers = {
        "Authorization": f"Bearer {env.secrets['otto']}",
        "accept": accept,
        "content-type": "application/json",
    }
    bodies = [b"{", b"[]", b'{"jsonrpc": "1.0", "id": 1}', b'"x"', b'{"id": {}, "method": 3}']
    async with httpx2.AsyncClient(base_url=env.base) as http:
        for body in bodies:
            resp = await http.post("/mcp", content=body, headers=headers)
            assert resp.status_code == 400, (body, resp.status_code, resp.text)
            assert resp.headers["x-trace-id"]
