"""The MCP server's tools follow the approval policy, act for the caller and hide ungoverned
destructive tools: the official ``mcp`` client over streamable HTTP (a gateway outside dev mode,
real keys, SQLite and PostgreSQL) and over stdio (``elevenfactor mcp serve --as``)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp_types import CallToolResult

from elevenfactor.config import Settings, load_project
from elevenfactor.errors import RunNotFound
from elevenfactor.governance import Principal, create_key, create_user, local_admin
from elevenfactor.governance import principal_for_user as user_principal
from elevenfactor.runtime import (
    ApprovalInfo,
    decide_approval,
    get_run,
    list_approvals,
    list_runs,
    run_result,
    submit_run,
)
from elevenfactor.store import Store, migrate, open_store
from tests.support.mcp_tools import ran
from tests.support.serve import EXE, ROOT
from tests.support.server import running_gateway

pytestmark = pytest.mark.integration

T = TypeVar("T")

PROJECT = """
providers: {t: {type: test}}
models: {echo: {provider: t, model: e}}
routes: {default: {chain: [echo]}}
toolsets: {ops: "tests.support.mcp_tools:ops"}
mcp_server:
  tools: ["ops.*"]
  approval:
    - tools: [ops.refund]
      when: [{arg: amount, op: ">", value: 100}]
      group: finance
  wait_seconds: 3
"""
AGENT = """
description: Keeps the database tidy.
instructions: Repeat the user.
model: default
tools: [{toolset: ops, prefix: db_}]
approval:
  - tools: [db_drop]
"""
ADMIN = local_admin("cli")


async def _eventually(probe: Callable[[], Awaitable[T | None]], what: str) -> T:
    deadline = time.monotonic() + 20
    while True:
        value = await probe()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def _text(result: CallToolResult) -> str:
    return result.content[0].text  # type: ignore[union-attr]


@dataclass
class Env:
    store: Store
    log: Path
    users: dict[str, Principal]
    secrets: dict[str, str]
    base: str = ""

    async def pending(self) -> ApprovalInfo:
        async def probe() -> ApprovalInfo | None:
            found = await list_approvals(self.store, status="pending")
            return found[0] if found else None

        return await _eventually(probe, "a pending approval")

    async def call_and_decide(
        self, client: Client, name: str, args: dict[str, Any], action: str, **decision: Any
    ) -> tuple[CallToolResult, ApprovalInfo]:
        """Call a gated tool; while the call waits, check nothing ran, then decide."""
        before = ran(self.log)
        call = asyncio.create_task(client.call_tool(name, args))
        pending = await self.pending()
        assert pending.request["arguments"] == args
        assert ran(self.log) == before  # the tool waits for the reviewer
        await decide_approval(self.store, pending.id, action, by=ADMIN, **decision)
        return await call, pending


async def _setup(home: Path, url: str, project: str = PROJECT) -> Env:
    store = await open_store(url)
    await migrate(store)
    (home / "elevenfactor.yaml").write_text(project)
    (home / "agents").mkdir()
    (home / "agents" / "keeper.yaml").write_text(AGENT)
    (home / "agents" / "echoer.yaml").write_text("instructions: Repeat the user.\n")
    secrets: dict[str, str] = {}
    users: dict[str, Principal] = {}
    for name in ("mia", "otto"):
        await create_user(store, ADMIN, name)
        secrets[name] = (await create_key(store, ADMIN, f"{name}-key", user=name))[1]
        users[name] = await user_principal(store, name)
    return Env(store, home / "ran.log", users, secrets)


@pytest.fixture
async def env(
    store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Env]:
    """A gateway outside dev mode (with its worker) serving the policy project."""
    monkeypatch.setenv("MCP_TOOL_LOG", str(tmp_path / "ran.log"))
    state = await _setup(tmp_path, store_url)
    settings = Settings(
        database_url=store_url,
        dev=False,
        config_file=tmp_path / "elevenfactor.yaml",
        in_process_worker=True,
    )
    try:
        project = load_project(tmp_path / "elevenfactor.yaml")
        with running_gateway(settings, project) as (base, _):
            state.base = base
            yield state
    finally:
        await state.store.close()


@asynccontextmanager
async def _client(env: Env, user: str, mode: str = "auto") -> AsyncIterator[Client]:
    headers = {"Authorization": f"Bearer {env.secrets[user]}"}
    async with httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30.0)) as http:
        transport = streamable_http_client(env.base + "/mcp", http_client=http)
        async with Client(transport, mode=mode) as client:
            yield client


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_a_gated_tool_runs_once_after_approval_in_a_run_owned_by_the_caller(
    env: Env, mode: str
) -> None:
    mia, otto = env.users["mia"], env.users["otto"]
    async with _client(env, "mia", mode) as client:
        small = await client.call_tool("ops.refund", {"order": "A1", "amount": 5})
        assert (small.is_error, _text(small)) == (False, "refunded 5 on A1")  # no rule: direct
        result, pending = await env.call_and_decide(
            client, "ops.refund", {"order": "A1", "amount": 500}, "approve"
        )
        assert not result.is_error
        assert _text(result) == "refunded 500 on A1"
        assert result.structured_content is not None
        assert result.structured_content["decision"] == "approve"
        run_id = result.structured_content["run_id"]
        agent = await client.call_tool("echoer", {"input": "tidy up"})
        assert _text(agent) == "echo: tidy up"
    assert ran(env.log) == [
        {"tool": "refund", "order": "A1", "amount": 5},
        {"tool": "refund", "order": "A1", "amount": 500},
    ]
    assert pending.run_id == run_id and pending.user_id == mia.user_id
    assert pending.reviewer_group == "finance"
    info = await get_run(env.store, run_id, mia)
    assert (info.program, info.status, info.user_id) == ("mcp.tool", "succeeded", mia.user_id)
    with pytest.raises(RunNotFound):
        await get_run(env.store, run_id, otto)
    assert agent.structured_content is not None
    agent_id = agent.structured_content["run_id"]
    assert (await get_run(env.store, agent_id, mia)).user_id == mia.user_id
    with pytest.raises(RunNotFound):
        await get_run(env.store, agent_id, otto)
    assert [r.id for r in await list_runs(env.store, principal=otto)] == []


async def test_an_edit_changes_the_arguments_and_a_reject_stops_the_call(env: Env) -> None:
    async with _client(env, "otto") as client:
        edited, _ = await env.call_and_decide(
            client,
            "ops.refund",
            {"order": "B2", "amount": 900},
            "edit",
            arguments={"order": "B2", "amount": 150},
        )
        assert _text(edited) == "refunded 150 on B2"
        rejected, pending = await env.call_and_decide(
            client, "ops.refund", {"order": "C3", "amount": 700}, "reject", reason="too much"
        )
    assert rejected.is_error
    assert _text(rejected) == "The reviewer rejected this call: too much"
    assert ran(env.log) == [{"tool": "refund", "order": "B2", "amount": 150}]
    info = await get_run(env.store, pending.run_id, env.users["otto"])
    assert info.status == "succeeded"
    assert (await run_result(env.store, info))["decision"] == "reject"


async def test_destructive_tools_need_a_rule_and_a_waiting_call_answers_with_its_run(
    env: Env,
) -> None:
    async with _client(env, "mia") as client:
        tools = {t.name for t in (await client.list_tools()).tools}
        # `ops.drop` is governed by the keeper agent's rule (as `db_drop`); `ops.purge` by none.
        assert tools == {"echoer", "keeper", "ops.lookup", "ops.refund", "ops.drop"}
        purge = await client.call_tool("ops.purge", {"target": "prod"})
        assert purge.is_error
        waiting = await client.call_tool("ops.drop", {"table": "users"})
    assert not waiting.is_error
    summary = waiting.structured_content
    assert summary is not None and summary["status"] == "waiting"
    assert summary["run_id"] in _text(waiting)
    pending = await env.pending()
    assert summary["approval_ids"] == [pending.id]
    assert pending.name == "tool:ops.drop"
    assert ran(env.log) == []
    await decide_approval(env.store, pending.id, "approve", by=ADMIN)

    async def done() -> bool:
        return (await get_run(env.store, summary["run_id"], env.users["mia"])).finished

    await _eventually(done, "the approved drop")
    assert ran(env.log) == [{"tool": "drop", "table": "users"}]
    # The built-in program re-reads the policy: submitting it directly cannot reach `purge`.
    direct = await submit_run(
        env.store,
        "mcp.tool",
        {"tool": "ops.purge", "arguments": {"target": "prod"}},
        owner=env.users["mia"],
    )

    async def failed() -> bool:
        return (await get_run(env.store, direct, env.users["mia"])).status == "failed"

    await _eventually(failed, "the direct mcp.tool run to fail")
    assert ran(env.log) == [{"tool": "drop", "table": "users"}]


async def test_over_stdio_the_operator_names_the_user(store_url: str, tmp_path: Path) -> None:
    allowed = PROJECT.replace("wait_seconds: 3", "wait_seconds: 10\n  allow_destructive: [ops.p*]")
    state = await _setup(tmp_path, store_url, allowed)
    envvars = {k: v for k, v in os.environ.items() if not k.startswith("ELEVENFACTOR_")}
    envvars.update(DATABASE_URL=store_url, PYTHONPATH=str(ROOT), MCP_TOOL_LOG=str(state.log))
    params = StdioServerParameters(
        command=EXE, args=["mcp", "serve", "--as", "mia"], env=envvars, cwd=str(tmp_path)
    )
    try:
        async with Client(params) as client:
            tools = {t.name for t in (await client.list_tools()).tools}
            assert "ops.purge" in tools  # explicitly allowed
            purged = await client.call_tool("ops.purge", {"target": "cache"})
            assert _text(purged) == "purged cache"
            result, pending = await state.call_and_decide(
                client, "ops.refund", {"order": "D4", "amount": 300}, "approve"
            )
        assert _text(result) == "refunded 300 on D4"
        assert pending.user_id == state.users["mia"].user_id
        assert ran(state.log) == [
            {"tool": "purge", "target": "cache"},
            {"tool": "refund", "order": "D4", "amount": 300},
        ]
    finally:
        await state.store.close()
