"""Factor 4: tools. The ``Toolset`` protocol, Python function tools, MCP client toolsets, and
wrappers (filter, prefix, timeout, combine) that are toolsets themselves.

The MCP client classes load the ``mcp`` SDK (~0.5 s) on first use, not at import, so commands
and processes that never talk to an MCP server start fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from elevenfactor.tools._base import (
    ERROR_CODES,
    Risk,
    Tool,
    ToolContext,
    ToolResult,
    Toolset,
    aclose_toolset,
)
from elevenfactor.tools._config import MCPServerConfig, mcp_toolset, parse_mcp_servers
from elevenfactor.tools._function import FunctionTool, FunctionToolset
from elevenfactor.tools._timeout import WithTimeout
from elevenfactor.tools._wrappers import Combined, Filtered, Prefixed

if TYPE_CHECKING:
    from elevenfactor.tools._mcp import MCPHttpToolset, MCPStdioToolset, MCPToolset
    from elevenfactor.tools._mcp_convert import risk_from_annotations

_LAZY = {
    "MCPHttpToolset": "elevenfactor.tools._mcp",
    "MCPStdioToolset": "elevenfactor.tools._mcp",
    "MCPToolset": "elevenfactor.tools._mcp",
    "risk_from_annotations": "elevenfactor.tools._mcp_convert",
}

__all__ = [
    "ERROR_CODES",
    "Combined",
    "Filtered",
    "FunctionTool",
    "FunctionToolset",
    "MCPHttpToolset",
    "MCPServerConfig",
    "MCPStdioToolset",
    "MCPToolset",
    "Prefixed",
    "Risk",
    "Tool",
    "ToolContext",
    "ToolResult",
    "Toolset",
    "WithTimeout",
    "aclose_toolset",
    "mcp_toolset",
    "parse_mcp_servers",
    "risk_from_annotations",
]


def __getattr__(name: str) -> Any:
    """The MCP names, imported on first use (see the module docstring)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
