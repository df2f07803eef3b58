"""elevenfactor's own MCP server, through the official ``mcp`` client: HTTP and stdio."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from mcp import Client, StdioServerParameters

from elevenfactor.store import migrate, open_store
from tests.support.serve import EXE, ROOT, Server

pytestmark = pytest.mark.integration

PROJECT = """
providers: {t: {type: test}}
models: {echo: {provider: t, model: e}}
routes: {default: {chain: [echo]}}
toolsets: {calc: "tests.support.programs:calc"}
mcp_server: {tools: ["calc.add"]}
"""
AGENT = """
description: Repeats what it is told.
instructions: Repeat the user.
model: default
"""


async def _project(home: Path, db_url: str) -> None:
    db = await open_store(db_url)
    await migrate(db)
    await db.close()
    (home / "elevenfactor.yaml").write_text(PROJECT)
    (home / "agents").mkdir()
    (home / "agents" / "echoer.yaml").write_text(AGENT)


@pytest.fixture
async def server(store_url: str, tmp_path: Path) -> AsyncIterator[Server]:
    await _project(tmp_path, store_url)
    srv = Server(tmp_path, store_url)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


async def _exercise(client: Client) -> None:
    tools = {t.name: t for t in (await client.list_tools()).tools}
    assert set(tools) == {"echoer", "calc.add"}  # `calc.wipe` is not selected
    assert tools["echoer"].description == "Repeats what it is told."
    assert tools["calc.add"].annotations is not None
    assert tools["calc.add"].annotations.read_only_hint is True
    ran = await client.call_tool("echoer", {"input": "durable hello"})
    assert not ran.is_error
    assert ran.content[0].text == "echo: durable hello"  # type: ignore[union-attr]
    assert ran.structured_content is not None
    assert ran.structured_content["status"] == "succeeded"
    added = await client.call_tool("calc.add", {"a": 2, "b": 40})
    assert added.content[0].text == "42"  # type: ignore[union-attr]
    bad = await client.call_tool("calc.add", {"a": "two"})
    assert bad.is_error
    unknown = await client.call_tool("calc.wipe", {"target": "prod"})
    assert unknown.is_error


async def test_over_streamable_http(server: Server) -> None:
    async with Client(server.base + "/mcp") as client:
        await _exercise(client)
    async with httpx.AsyncClient(base_url=server.base) as http:
        listed = await http.get("/v1/runs", params={"program": "echoer"})
    runs = listed.json()["data"]
    assert [r["status"] for r in runs] == ["succeeded"]


async def test_http_needs_a_key_outside_dev_mode(store_url: str, tmp_path: Path) -> None:
    await _project(tmp_path, store_url)
    srv = Server(tmp_path, store_url, dev=False)
    srv.start()
    try:
        async with httpx.AsyncClient() as http:
            resp = await http.post(
                srv.base + "/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
            )
        assert resp.status_code == 401
        assert resp.json()["error"]["code"] == "invalid_api_key"
    finally:
        srv.stop()


async def test_over_stdio(store_url: str, tmp_path: Path) -> None:
    await _project(tmp_path, store_url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ELEVENFACTOR_")}
    env.update(DATABASE_URL=store_url, PYTHONPATH=str(ROOT))
    params = StdioServerParameters(command=EXE, args=["mcp", "serve"], env=env, cwd=str(tmp_path))
    async with Client(params) as client:
        await _exercise(client)
