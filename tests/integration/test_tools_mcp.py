"""MCP client toolsets against real servers.

- ``@modelcontextprotocol/server-everything`` and ``@modelcontextprotocol/server-filesystem``
  from npm over stdio, installed once into ``<repo>/.cache/npm-mcp`` (skipped without npm);
- ``mcp-server-time`` from PyPI (the ``dev`` extra) over stdio;
- ``tests.support.mcp_server`` (the official SDK's ``MCPServer``) over streamable HTTP on a free
  port and over stdio: its ``sleep`` tool marks when a call is in flight, ``whoami`` tells the
  server's pid, the headers and the ``_meta`` it received.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from elevenfactor.errors import ToolNameConflict, ToolServerUnavailable
from elevenfactor.tools import (
    Combined,
    MCPHttpToolset,
    MCPServerConfig,
    MCPStdioToolset,
    Prefixed,
    ToolContext,
    WithTimeout,
    aclose_toolset,
    mcp_toolset,
)
from tests.conftest import free_port

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

REPO = Path(__file__).resolve().parents[2]
NPM_DIR = REPO / ".cache" / "npm-mcp"
NPM_PACKAGES = {
    "@modelcontextprotocol/server-everything": "2026.8.31",
    "@modelcontextprotocol/server-filesystem": "2026.8.31",
}
CTX = ToolContext(run_id="run-7", step_key="run-7:12", caller="test")
TOKEN = "Bearer t0ken"


def wait_for(condition: Callable[[], bool], what: str, deadline: float = 15.0) -> None:
    end = time.monotonic() + deadline
    while not condition():
        if time.monotonic() > end:
            raise TimeoutError(f"gave up waiting for {what}")
        time.sleep(0.01)


async def async_wait_for(condition: Callable[[], bool], what: str, deadline: float = 15.0) -> None:
    end = time.monotonic() + deadline
    while not condition():
        if time.monotonic() > end:
            raise TimeoutError(f"gave up waiting for {what}")
        await asyncio.sleep(0.01)


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    with open(f"/proc/{pid}/stat") as f:  # a zombie (killed, not yet reaped) counts as gone
        return f.read().split(") ")[1].startswith("Z")


# -- servers --------------------------------------------------------------------------------------


def _npm_installed() -> bool:
    for package, version in NPM_PACKAGES.items():
        manifest = NPM_DIR / "node_modules" / package / "package.json"
        if not manifest.exists() or json.loads(manifest.read_text())["version"] != version:
            return False
    return True


@pytest.fixture(scope="session")
def npm_bin() -> Path:
    """The npm MCP servers' executables, installed into the cache folder on first use."""
    if not _npm_installed():
        npm = shutil.which("npm")
        if npm is None:
            pytest.skip("npm is not installed: the MCP servers from npm cannot run")
        NPM_DIR.mkdir(parents=True, exist_ok=True)
        specs = [f"{name}@{version}" for name, version in NPM_PACKAGES.items()]
        subprocess.run(
            [npm, "install", "--prefix", str(NPM_DIR), "--no-audit", "--no-fund", *specs],
            check=True,
            timeout=600,
            capture_output=True,
        )
    return NPM_DIR / "node_modules" / ".bin"


def local_stdio(**options: Any) -> MCPStdioToolset:
    return MCPStdioToolset(
        sys.executable, ["-m", "tests.support.mcp_server", "stdio"], cwd=REPO, **options
    )


class HttpServer:
    """``tests.support.mcp_server`` over streamable HTTP as a subprocess; can be killed and
    restarted on the same port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/mcp"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.mcp_server", "http", str(self.port)],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(self._listening, f"the MCP test server on port {self.port}")

    def _listening(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"the MCP test server exited with {self.proc.returncode}")
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def http_server() -> Iterator[HttpServer]:
    server = HttpServer()
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def everything(npm_bin: Path) -> AsyncIterator[MCPStdioToolset]:
    async with MCPStdioToolset(str(npm_bin / "mcp-server-everything"), ["stdio"]) as toolset:
        yield toolset


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def http_tools(http_server: HttpServer) -> AsyncIterator[MCPHttpToolset]:
    async with MCPHttpToolset(http_server.url, {"Authorization": TOKEN}) as toolset:
        yield toolset


# -- listing and calling --------------------------------------------------------------------------


async def test_lists_tools_with_their_schemas(everything: MCPStdioToolset) -> None:
    tools = {t.name: t for t in await everything.list_tools(CTX)}
    assert {"echo", "get-sum", "get-structured-content", "get-tiny-image"} <= set(tools)
    get_sum = tools["get-sum"]
    assert get_sum.description == "Returns the sum of two numbers"
    assert get_sum.parameters["type"] == "object"
    assert get_sum.parameters["required"] == ["a", "b"]
    assert get_sum.parameters["properties"]["a"] == {
        "type": "number",
        "description": "First number",
    }
    assert get_sum.timeout == 60.0
    assert get_sum.definition().parameters == get_sum.parameters
    structured = tools["get-structured-content"]
    assert structured.output_schema is not None
    assert "temperature" in structured.output_schema["properties"]


async def test_calls_with_arguments_and_keeps_structured_content(
    everything: MCPStdioToolset,
) -> None:
    result = await everything.call_tool("get-sum", {"a": 2, "b": 3.5}, CTX)
    assert (result.content, result.is_error) == ("The sum of 2 and 3.5 is 5.5.", False)

    weather = await everything.call_tool("get-structured-content", {"location": "Chicago"}, CTX)
    assert set(weather.structured) == {"temperature", "conditions", "humidity"}
    assert json.loads(weather.content) == weather.structured

    image = await everything.call_tool("get-tiny-image", {}, CTX)
    assert "[image image/png, " in image.content and "MCP logo" in image.content


async def test_server_errors_are_error_results(everything: MCPStdioToolset) -> None:
    bad_args = await everything.call_tool("get-sum", {"a": "two"}, CTX)
    assert bad_args.is_error and bad_args.error_code == "tool_error"
    assert "expected number" in bad_args.content

    unknown = await everything.call_tool("no-such-tool", {}, CTX)
    assert unknown.is_error and "no-such-tool" in unknown.content


async def test_time_server_from_pypi() -> None:
    command = Path(sys.executable).parent / "mcp-server-time"
    assert command.exists(), "mcp-server-time is missing: pip install -e '.[dev]'"
    async with MCPStdioToolset(str(command), ["--local-timezone", "UTC"]) as time_tools:
        tools = {t.name: t for t in await time_tools.list_tools(CTX)}
        assert set(tools) == {"get_current_time", "convert_time"}
        assert tools["get_current_time"].risk == "read"
        assert tools["get_current_time"].parameters["required"] == ["timezone"]

        now = await time_tools.call_tool("get_current_time", {"timezone": "Asia/Tokyo"}, CTX)
        assert now.structured["timezone"] == "Asia/Tokyo"
        assert now.structured["datetime"].endswith("+09:00")

        converted = await time_tools.call_tool(
            "convert_time",
            {"source_timezone": "UTC", "time": "12:00", "target_timezone": "Asia/Kolkata"},
            CTX,
        )
        assert converted.structured["target"]["datetime"].endswith("T17:30:00+05:30")

        wrong = await time_tools.call_tool("get_current_time", {"timezone": "Mars/Olympus"}, CTX)
        assert wrong.is_error and "Invalid timezone" in wrong.content


async def test_http_sends_headers_and_step_identity(http_tools: MCPHttpToolset) -> None:
    result = await http_tools.call_tool("whoami", {}, CTX)
    assert result.structured["authorization"] == TOKEN
    assert result.structured["meta"] == {
        "elevenfactor/run_id": "run-7",
        "elevenfactor/step_key": "run-7:12",
    }
    assert (await http_tools.call_tool("add", {"a": 2, "b": 40}, CTX)).structured == {"result": 42}

    failed = await http_tools.call_tool("fail", {"message": "nope"}, CTX)
    assert failed.is_error and failed.error_code == "tool_error"
    missing = await http_tools.call_tool("add", {"a": 1}, CTX)
    assert missing.is_error and "Field required" in missing.content


# -- filtering, prefixing, combining --------------------------------------------------------------


@pytest.fixture
def notes_dir(tmp_path: Path) -> Path:
    (tmp_path / "notes.txt").write_text("remember the milk\n")
    return tmp_path


async def test_filesystem_server_filtered_and_prefixed_from_config(
    npm_bin: Path, notes_dir: Path
) -> None:
    root = notes_dir
    config = MCPServerConfig.model_validate(
        {
            "command": str(npm_bin / "mcp-server-filesystem"),
            "args": [str(root)],
            "prefix": "fs_",
            "deny": ["write_file", "edit_file", "move_file"],
            "risk": {"create_directory": "destructive"},
        }
    )
    fs = mcp_toolset(config, name="fs")
    try:
        tools = {t.name: t for t in await fs.list_tools(CTX)}
        assert all(name.startswith("fs_") for name in tools)
        assert "fs_read_text_file" in tools and "fs_list_directory" in tools
        assert not {"fs_write_file", "fs_edit_file", "fs_move_file"} & set(tools)
        assert tools["fs_read_text_file"].risk == "read"
        assert tools["fs_create_directory"].risk == "destructive"  # overridden by config

        read = await fs.call_tool("fs_read_text_file", {"path": str(root / "notes.txt")}, CTX)
        assert read.content == "remember the milk\n" and not read.is_error

        denied = await fs.call_tool(
            "fs_write_file", {"path": str(root / "x.txt"), "content": "x"}, CTX
        )
        assert denied.error_code == "tool_not_found"
        assert not (root / "x.txt").exists()

        outside = await fs.call_tool("fs_read_text_file", {"path": "/etc/hostname"}, CTX)
        assert outside.is_error and "outside allowed directories" in outside.content
    finally:
        await aclose_toolset(fs)


async def test_risk_levels_from_annotations_and_overrides(
    npm_bin: Path, tmp_path: Path, http_server: HttpServer, http_tools: MCPHttpToolset
) -> None:
    async with MCPStdioToolset(str(npm_bin / "mcp-server-filesystem"), [str(tmp_path)]) as fs:
        risks = {t.name: t.risk for t in await fs.list_tools(CTX)}
    assert risks["read_text_file"] == "read"  # readOnlyHint
    assert risks["create_directory"] == "write"  # destructiveHint: false
    assert risks["write_file"] == "destructive"  # destructiveHint: true

    risks = {t.name: t.risk for t in await http_tools.list_tools(CTX)}
    assert risks == {
        "add": "read",
        "fail": "read",
        "sleep": "read",
        "append_note": "write",
        "delete_everything": "destructive",
        "unannotated": "destructive",  # no annotations: the spec's defaults
        "whoami": "read",
    }
    async with MCPHttpToolset(
        http_server.url, trust_annotations=False, risk={"add": "read"}
    ) as untrusted:
        risks = {t.name: t.risk for t in await untrusted.list_tools(CTX)}
    assert risks["add"] == "read"
    assert {r for name, r in risks.items() if name != "add"} == {"destructive"}


async def test_combined_servers_need_distinct_names(
    everything: MCPStdioToolset, http_tools: MCPHttpToolset
) -> None:
    local = local_stdio()
    try:
        with pytest.raises(ToolNameConflict, match="'add' is offered by both"):
            await Combined([http_tools, local]).list_tools(CTX)
        both = Combined([http_tools, Prefixed(local, "local_"), Prefixed(everything, "ev_")])
        names = {t.name for t in await both.list_tools(CTX)}
        assert {"add", "local_add", "ev_get-sum"} <= names
        remote = await both.call_tool("whoami", {}, CTX)
        here = await both.call_tool("local_whoami", {}, CTX)
        assert remote.structured["authorization"] == TOKEN
        assert here.structured["authorization"] is None
        assert (await both.call_tool("ev_echo", {"message": "hi"}, CTX)).content == "Echo: hi"
    finally:
        await local.aclose()


# -- timeouts -------------------------------------------------------------------------------------


async def test_slow_calls_time_out_and_the_connection_stays_usable(
    http_server: HttpServer, http_tools: MCPHttpToolset
) -> None:
    async with MCPHttpToolset(http_server.url, timeout=0.3) as quick:
        started = time.monotonic()
        result = await quick.call_tool("sleep", {"seconds": 5}, CTX)
        assert time.monotonic() - started < 2
        assert result.is_error and result.error_code == "tool_timeout"
        assert "'sleep' did not finish within 0.3 s" in result.content
        assert (await quick.call_tool("add", {"a": 1, "b": 1}, CTX)).content == "2"

    bounded = WithTimeout(http_tools, 0.2)
    assert {t.timeout for t in await bounded.list_tools(CTX)} == {0.2}
    result = await bounded.call_tool("sleep", {"seconds": 5}, CTX)
    assert result.error_code == "tool_timeout"
    assert (await bounded.call_tool("add", {"a": 1, "b": 2}, CTX)).content == "3"


# -- broken connections ---------------------------------------------------------------------------


def _children_with(marker: str) -> list[int]:
    pids: list[int] = []
    for task in os.listdir(f"/proc/{os.getpid()}/task"):
        with open(f"/proc/{os.getpid()}/task/{task}/children") as f:
            for pid in f.read().split():
                try:
                    with open(f"/proc/{pid}/cmdline") as cmd:
                        if marker in cmd.read():
                            pids.append(int(pid))
                except OSError:
                    continue
    return pids


async def test_reconnects_after_the_server_process_is_killed(npm_bin: Path) -> None:
    marker = f"reconnect-{os.getpid()}"  # an argument the server ignores, to find its process
    async with MCPStdioToolset(str(npm_bin / "mcp-server-everything"), ["stdio", marker]) as ev:
        assert (await ev.call_tool("get-sum", {"a": 1, "b": 1}, CTX)).content.endswith("is 2.")
        (pid,) = _children_with(marker)
        os.kill(pid, signal.SIGKILL)
        await async_wait_for(lambda: not ev.connected, "the toolset to see the server die")

        result = await ev.call_tool("get-sum", {"a": 2, "b": 2}, CTX)
        assert result.content == "The sum of 2 and 2 is 4." and not result.is_error
        (new_pid,) = _children_with(marker)
        assert new_pid != pid


async def test_http_reconnects_after_a_server_restart(
    http_server: HttpServer, http_tools: MCPHttpToolset
) -> None:
    before = (await http_tools.call_tool("whoami", {}, CTX)).structured["pid"]
    http_server.kill()
    with pytest.raises(ToolServerUnavailable, match="could not be reached"):
        await http_tools.call_tool("add", {"a": 1, "b": 2}, CTX)  # down: not a model error
    http_server.start()
    assert (await http_tools.call_tool("add", {"a": 1, "b": 2}, CTX)).content == "3"
    assert (await http_tools.call_tool("whoami", {}, CTX)).structured["pid"] != before


async def _kill_when_in_flight(marker: Path, pid: int) -> None:
    await async_wait_for(lambda: marker.exists(), "the call to reach the server")
    os.kill(pid, signal.SIGKILL)


async def test_in_flight_read_is_retried_on_a_new_connection(tmp_path: Path) -> None:
    marker = tmp_path / "calls"
    async with local_stdio() as server:
        pid = (await server.call_tool("whoami", {}, CTX)).structured["pid"]
        killer = asyncio.create_task(_kill_when_in_flight(marker, pid))
        result = await server.call_tool("sleep", {"seconds": 0.2, "marker": str(marker)}, CTX)
        await killer
        assert result.content == "slept 0.2" and not result.is_error
        first, second = marker.read_text().split()
        assert int(first) == pid and int(second) != pid  # the retry ran on a fresh server


async def test_in_flight_write_is_not_repeated(tmp_path: Path) -> None:
    marker = tmp_path / "calls"
    async with local_stdio(risk={"sleep": "write"}) as server:
        pid = (await server.call_tool("whoami", {}, CTX)).structured["pid"]
        killer = asyncio.create_task(_kill_when_in_flight(marker, pid))
        result = await server.call_tool("sleep", {"seconds": 5, "marker": str(marker)}, CTX)
        await killer
        assert result.is_error and result.error_code == "tool_connection_lost"
        assert "may or may not have taken effect" in result.content
        assert marker.read_text().split() == [str(pid)]  # sent once, not repeated
        # the next call reconnects
        assert (await server.call_tool("add", {"a": 2, "b": 2}, CTX)).content == "4"


async def test_aclose_stops_the_server_and_a_later_call_reconnects() -> None:
    server = local_stdio()
    assert not server.connected  # lazy: nothing started yet
    pid = (await server.call_tool("whoami", {}, CTX)).structured["pid"]
    assert server.connected
    await server.aclose()
    assert not server.connected and gone(pid)
    again = (await server.call_tool("whoami", {}, CTX)).structured["pid"]
    assert again != pid
    await server.aclose()
    await server.aclose()  # twice is fine


async def test_unreachable_servers_raise_a_clear_error(tmp_path: Path) -> None:
    missing = MCPStdioToolset(str(tmp_path / "no-such-server"))
    with pytest.raises(ToolServerUnavailable) as info:
        await missing.list_tools(CTX)
    assert "could not be reached" in str(info.value) and "no-such-server" in str(info.value)
    assert info.value.code == "tool_server_unavailable"

    nobody = MCPHttpToolset(f"http://127.0.0.1:{free_port()}/mcp", connect_timeout=5)
    with pytest.raises(ToolServerUnavailable, match="ConnectError"):
        await nobody.call_tool("add", {}, CTX)

    silent = MCPStdioToolset(sys.executable, ["-c", "import sys; sys.stdin.read()"])
    silent.connect_timeout = 0.5
    started = time.monotonic()
    with pytest.raises(ToolServerUnavailable, match=r"no MCP handshake within 0\.5 s"):
        await silent.list_tools(CTX)
    assert time.monotonic() - started < 10
