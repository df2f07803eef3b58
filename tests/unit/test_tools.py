"""Function tools and toolset wrappers: schemas, validation, errors, timeouts, names."""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Literal

import pytest
from pydantic import BaseModel

from elevenfactor.errors import ConfigError, ToolNameConflict
from elevenfactor.models import ToolDefinition, ToolMessage
from elevenfactor.tools import (
    Combined,
    Filtered,
    FunctionToolset,
    MCPHttpToolset,
    MCPServerConfig,
    MCPStdioToolset,
    Prefixed,
    Tool,
    ToolContext,
    ToolResult,
    Toolset,
    WithTimeout,
    aclose_toolset,
    mcp_toolset,
    parse_mcp_servers,
    risk_from_annotations,
)

CTX = ToolContext(run_id="run-1", step_key="run-1:3", caller="tester")


class Forecast(BaseModel):
    city: str
    high: float


def make_tools(**options: Any) -> FunctionToolset:
    tools = FunctionToolset(name="weather", **options)

    @tools.tool(risk="read", timeout=5)
    async def forecast(city: str, days: int = 1, unit: Literal["C", "F"] = "C") -> Forecast:
        """Forecast for a city.

        Args:
            city: The city name, e.g. "Paris".
            days: How many days ahead,
                counted from today.
            unit: Temperature unit.
        """
        return Forecast(city=city, high=20.0 + days)

    @tools.tool
    def shout(text: str) -> str:
        """Upper-case the text."""
        return text.upper()

    @tools.tool(risk="write")
    def explode(reason: str) -> str:
        """Always fails."""
        raise RuntimeError(f"boom: {reason}")

    return tools


async def names(toolset: Toolset) -> list[str]:
    return [t.name for t in await toolset.list_tools(CTX)]


# -- FunctionToolset: schemas ---------------------------------------------------------------------


async def test_schema_from_signature_and_docstring() -> None:
    tools = {t.name: t for t in await make_tools().list_tools(CTX)}
    forecast = tools["forecast"]
    assert forecast.description == "Forecast for a city."
    assert forecast.risk == "read" and forecast.timeout == 5
    params = forecast.parameters
    assert params["type"] == "object"
    assert params["required"] == ["city"]
    assert params["additionalProperties"] is False
    assert params["properties"]["city"] == {
        "type": "string",
        "description": 'The city name, e.g. "Paris".',
    }
    assert params["properties"]["days"] == {
        "type": "integer",
        "default": 1,
        "description": "How many days ahead, counted from today.",
    }
    assert params["properties"]["unit"]["enum"] == ["C", "F"]
    assert "title" not in str(params)  # pydantic's generated titles are dropped
    assert forecast.output_schema is not None and "high" in forecast.output_schema["properties"]
    # undeclared risk falls back to the toolset default: the most cautious
    assert tools["shout"].risk == "destructive" and tools["shout"].timeout is None
    assert tools["shout"].output_schema is None


async def test_definition_is_what_the_model_sees() -> None:
    tool = (await make_tools().list_tools(CTX))[1]
    definition = tool.definition()
    assert isinstance(definition, ToolDefinition)
    assert definition.name == "shout" and definition.description == "Upper-case the text."
    assert definition.parameters["properties"] == {"text": {"type": "string"}}


def test_sphinx_and_numpy_docstrings() -> None:
    tools = FunctionToolset()

    @tools.tool
    def sphinx(path: str, depth: int = 2) -> str:
        """List a folder.

        :param path: Folder to list.
        :param int depth: How deep to go.
        :returns: The listing.
        """
        return path

    @tools.tool
    def numpy(query: str) -> str:
        """Search the docs.

        Parameters
        ----------
        query : str
            What to look for.

        Returns
        -------
        str
        """
        return query

    sphinx_tool = tools._tools["sphinx"].tool
    assert sphinx_tool.description == "List a folder."
    assert sphinx_tool.parameters["properties"]["path"]["description"] == "Folder to list."
    assert sphinx_tool.parameters["properties"]["depth"]["description"] == "How deep to go."
    numpy_tool = tools._tools["numpy"].tool
    assert numpy_tool.description == "Search the docs."
    assert numpy_tool.parameters["properties"]["query"]["description"] == "What to look for."


def test_decorator_returns_the_function_and_rejects_duplicates() -> None:
    tools = FunctionToolset()

    @tools.tool(name="add_numbers", description="Adds.")
    def add(a: int, b: int) -> int:
        return a + b

    assert add(2, 3) == 5  # still directly callable
    assert tools._tools["add_numbers"].tool.description == "Adds."
    with pytest.raises(ValueError, match="already has a tool named 'add_numbers'"):
        tools.add(add, name="add_numbers")

    def variadic(*items: str) -> str:
        return ""

    with pytest.raises(TypeError, match=r"\*args and \*\*kwargs"):
        tools.add(variadic)


# -- FunctionToolset: calls -----------------------------------------------------------------------


async def test_async_tool_returns_structured_json() -> None:
    result = await make_tools().call_tool("forecast", {"city": "Oslo", "days": "2"}, CTX)
    assert result == ToolResult(
        content='{"city":"Oslo","high":22.0}', structured={"city": "Oslo", "high": 22.0}
    )
    assert result.to_message("call_1") == ToolMessage(
        content='{"city":"Oslo","high":22.0}', tool_call_id="call_1"
    )


async def test_sync_tool_runs_off_the_event_loop_thread() -> None:
    tools = FunctionToolset()
    seen: list[int] = []

    @tools.tool
    def where() -> str:
        seen.append(threading.get_ident())
        return "ok"

    assert (await tools.call_tool("where", {}, CTX)).content == "ok"
    assert seen and seen[0] != threading.get_ident()


async def test_invalid_arguments_come_back_as_an_actionable_result() -> None:
    result = await make_tools().call_tool(
        "forecast", {"days": "soon", "unit": "K", "country": "NO"}, CTX
    )
    assert result.is_error and result.error_code == "invalid_arguments"
    lines = result.content.splitlines()
    assert lines[0] == "Invalid arguments for tool 'forecast':"
    assert "- city: missing required argument" in lines
    assert any(line.startswith("- days: Input should be a valid integer") for line in lines)
    assert any("got 'soon'" in line for line in lines)
    assert any(line.startswith("- unit: Input should be 'C' or 'F'") for line in lines)
    assert "- country: unexpected argument (this tool does not take it)" in lines
    assert lines[-1] == "Call the tool again with corrected arguments."


async def test_tool_exception_is_an_error_result_or_raises_when_configured() -> None:
    result = await make_tools().call_tool("explode", {"reason": "disk full"}, CTX)
    assert result == ToolResult.error("RuntimeError: boom: disk full", code="tool_error")
    with pytest.raises(RuntimeError, match="boom: disk full"):
        await make_tools(raise_errors=True).call_tool("explode", {"reason": "disk full"}, CTX)


async def test_unknown_tool_is_a_not_found_result() -> None:
    result = await make_tools().call_tool("forcast", {}, CTX)
    assert result.is_error and result.error_code == "tool_not_found"
    assert "'forcast'" in result.content


async def test_tool_context_is_injected_and_hidden_from_the_schema() -> None:
    tools = FunctionToolset()

    @tools.tool(risk="write")
    async def charge(amount: int, ctx: ToolContext) -> dict[str, Any]:
        return {"amount": amount, "idempotency_key": ctx.step_key, "caller": ctx.caller}

    (tool,) = await tools.list_tools(CTX)
    assert list(tool.parameters["properties"]) == ["amount"]
    result = await tools.call_tool("charge", {"amount": 5}, CTX)
    assert result.structured == {"amount": 5, "idempotency_key": "run-1:3", "caller": "tester"}


async def test_declared_timeout_stops_a_slow_tool() -> None:
    tools = FunctionToolset()

    @tools.tool(timeout=0.05)
    async def slow() -> str:
        await asyncio.sleep(10)
        return "never"

    @tools.tool(timeout=5)
    async def own_timeout() -> str:
        raise TimeoutError("upstream API timed out")

    loop = asyncio.get_running_loop()
    started = loop.time()
    result = await tools.call_tool("slow", {}, CTX)
    assert loop.time() - started < 2
    assert result.is_error and result.error_code == "tool_timeout"
    assert "'slow' did not finish within 0.05 s" in result.content
    # a TimeoutError the tool raises itself is the tool's error, not our deadline
    result = await tools.call_tool("own_timeout", {}, CTX)
    assert result.error_code == "tool_error" and "upstream API timed out" in result.content


async def test_return_values_become_text_or_json() -> None:
    tools = FunctionToolset()

    @tools.tool
    def nothing() -> None:
        return None

    @tools.tool
    def listing() -> list[int]:
        return [1, 2]

    @tools.tool
    def custom() -> ToolResult:
        return ToolResult.error("quota exceeded", code="quota")

    @tools.tool
    def unserializable() -> object:
        return object()

    assert (await tools.call_tool("nothing", {}, CTX)) == ToolResult(content="null")
    assert (await tools.call_tool("listing", {}, CTX)) == ToolResult(
        content="[1,2]", structured=[1, 2]
    )
    assert (await tools.call_tool("custom", {}, CTX)).error_code == "quota"
    bad = await tools.call_tool("unserializable", {}, CTX)
    assert bad.is_error and bad.error_code == "tool_error"


def test_toolsets_satisfy_the_protocol() -> None:
    inner = FunctionToolset()
    for toolset in (
        inner,
        Filtered(inner, deny=["x"]),
        Prefixed(inner, "p_"),
        WithTimeout(inner, 1),
        Combined([inner]),
        MCPStdioToolset("true"),
        MCPHttpToolset("http://127.0.0.1:9/mcp"),
    ):
        assert isinstance(toolset, Toolset)


# -- wrappers -------------------------------------------------------------------------------------


class Recording:
    """A toolset that records the calls that reach it."""

    def __init__(self, *tool_names: str) -> None:
        self.tools = [Tool(name=n, risk="read") for n in tool_names]
        self.calls: list[str] = []
        self.closed = 0

    def __repr__(self) -> str:
        return f"Recording{tuple(t.name for t in self.tools)}"

    async def list_tools(self, ctx: ToolContext) -> list[Tool]:
        return list(self.tools)

    async def call_tool(self, name: str, args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        if name not in {t.name for t in self.tools}:
            return ToolResult.error(f"No tool named {name!r}.", code="tool_not_found")
        self.calls.append(name)
        return ToolResult(content=f"{name} ok")

    async def aclose(self) -> None:
        self.closed += 1


async def test_filtered_allow_and_deny_with_patterns() -> None:
    inner = Recording("read_file", "read_dir", "write_file", "delete_file")
    assert await names(Filtered(inner, deny=["write_*", "delete_file"])) == [
        "read_file",
        "read_dir",
    ]
    only = Filtered(inner, allow=["read_*", "write_file"], deny=["read_dir"])
    assert await names(only) == ["read_file", "write_file"]
    denied = await only.call_tool("read_dir", {}, CTX)
    assert denied.is_error and denied.error_code == "tool_not_found"
    assert (await only.call_tool("read_file", {}, CTX)).content == "read_file ok"
    assert inner.calls == ["read_file"]  # the denied call never reached the inner toolset


async def test_prefixed_renames_both_ways() -> None:
    inner = Recording("read_file")
    fs = Prefixed(inner, "fs_")
    assert await names(fs) == ["fs_read_file"]
    assert (await fs.call_tool("fs_read_file", {}, CTX)).content == "read_file ok"
    for wrong in ("read_file", "fs_nope"):
        result = await fs.call_tool(wrong, {}, CTX)
        assert result.error_code == "tool_not_found" and repr(wrong) in result.content
    assert inner.calls == ["read_file"]


async def test_with_timeout_bounds_any_toolset() -> None:
    tools = FunctionToolset()

    @tools.tool(timeout=0.05)
    async def quick_limit() -> str:
        await asyncio.sleep(10)
        return "never"

    @tools.tool
    async def nap(seconds: float) -> str:
        await asyncio.sleep(seconds)
        return "rested"

    bounded = WithTimeout(tools, 0.1, per_tool={"nap": 0.5})
    listed = {t.name: t.timeout for t in await bounded.list_tools(CTX)}
    assert listed == {"quick_limit": 0.1, "nap": 0.5}
    assert (await bounded.call_tool("nap", {"seconds": 0.2}, CTX)).content == "rested"
    result = await bounded.call_tool("nap", {"seconds": 5}, CTX)
    assert result.error_code == "tool_timeout" and "0.5 s" in result.content
    # without a bound of its own the wrapper applies each tool's declared timeout
    result = await WithTimeout(tools).call_tool("quick_limit", {}, CTX)
    assert result.error_code == "tool_timeout" and "0.05 s" in result.content


async def test_combined_routes_calls_and_rejects_duplicate_names() -> None:
    a, b = Recording("search", "fetch"), Recording("search", "summarize")
    with pytest.raises(ToolNameConflict) as info:
        await Combined([a, b]).list_tools(CTX)
    message = str(info.value)
    assert "'search'" in message and "Recording('search', 'fetch')" in message
    assert "Recording('search', 'summarize')" in message and "prefix" in message
    assert info.value.code == "tool_name_conflict"

    both = Combined([a, Prefixed(b, "b_")])
    assert await names(both) == ["search", "fetch", "b_search", "b_summarize"]
    assert (await both.call_tool("b_search", {}, CTX)).content == "search ok"
    # a call before any listing routes too
    fresh = Combined([a, Prefixed(b, "b_")])
    assert (await fresh.call_tool("fetch", {}, CTX)).content == "fetch ok"
    assert (await fresh.call_tool("missing", {}, CTX)).error_code == "tool_not_found"
    assert a.calls == ["fetch"] and b.calls == ["search"]


async def test_aclose_reaches_every_wrapped_toolset() -> None:
    a, b = Recording("x"), Recording("y")
    stack = Combined([WithTimeout(Prefixed(Filtered(a, deny=["z"]), "a_"), 1), b])
    await aclose_toolset(stack)
    assert (a.closed, b.closed) == (1, 1)
    await aclose_toolset(FunctionToolset())  # nothing to close is fine


# -- MCP configuration and risk mapping (no server needed) ----------------------------------------


def test_risk_from_annotations_follows_the_spec_defaults() -> None:
    from mcp.types import ToolAnnotations

    assert risk_from_annotations(None) == "destructive"
    assert risk_from_annotations(ToolAnnotations()) == "destructive"
    assert risk_from_annotations(ToolAnnotations(read_only_hint=True)) == "read"
    assert risk_from_annotations(ToolAnnotations(destructive_hint=False)) == "write"
    assert risk_from_annotations(ToolAnnotations(destructive_hint=True)) == "destructive"


def test_mcp_server_config_infers_transport_and_forbids_unknown_keys() -> None:
    stdio = MCPServerConfig.model_validate({"command": "npx", "args": ["-y", "x"]})
    http = MCPServerConfig.model_validate(
        {"url": "http://h/mcp", "headers": {"Authorization": "Bearer secret-token"}}
    )
    assert (stdio.transport, http.transport) == ("stdio", "http")
    assert "secret-token" not in repr(http) and "secret-token" not in str(http.model_dump())
    with pytest.raises(ValueError, match="Extra inputs are not permitted"):
        MCPServerConfig.model_validate({"command": "x", "cmd_args": []})
    with pytest.raises(ValueError, match="either `command`"):
        MCPServerConfig.model_validate({"command": "x", "url": "http://h"})
    with pytest.raises(ValueError, match="are for transport stdio"):
        MCPServerConfig.model_validate({"transport": "http", "url": "http://h", "args": ["a"]})
    with pytest.raises(ValueError, match="needs `command`"):
        MCPServerConfig.model_validate({"transport": "stdio"})


def test_parse_mcp_servers_names_the_server_and_key() -> None:
    servers = parse_mcp_servers({"fs": {"command": "npx", "prefix": "fs_"}})
    assert servers["fs"].prefix == "fs_"
    with pytest.raises(ConfigError) as info:
        parse_mcp_servers({"fs": {"command": "npx", "timeout": -1}}, source="elevenfactor.yaml")
    assert str(info.value).startswith("elevenfactor.yaml: fs.timeout: ")
    with pytest.raises(ConfigError, match=r"fs.risk.write_file: Input should be 'read'"):
        parse_mcp_servers({"fs": {"command": "npx", "risk": {"write_file": "maybe"}}})


def test_mcp_toolset_builds_the_wrapper_stack() -> None:
    config = MCPServerConfig.model_validate(
        {
            "command": "server",
            "args": ["--root", "/srv"],
            "env": {"TOKEN": "t"},
            "prefix": "fs_",
            "deny": ["write_*"],
            "timeout": 7,
            "risk": {"list": "read"},
        }
    )
    toolset = mcp_toolset(config, name="fs")
    assert isinstance(toolset, Prefixed) and toolset.prefix == "fs_"
    assert isinstance(toolset.inner, Filtered) and toolset.inner.deny == ("write_*",)
    server = toolset.inner.inner
    assert isinstance(server, MCPStdioToolset)
    assert server.params.env == {"TOKEN": "t"} and server.params.args == ["--root", "/srv"]
    assert (server.name, server.timeout, server.risk_overrides) == ("fs", 7, {"list": "read"})
    plain = mcp_toolset(MCPServerConfig.model_validate({"url": "http://h/mcp"}))
    assert isinstance(plain, MCPHttpToolset) and plain.url == "http://h/mcp"
