"""Factor 4: tools. The ``Toolset`` protocol, Python function tools, MCP client toolsets, and
wrappers (filter, prefix, timeout, combine) that are toolsets themselves."""

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
from elevenfactor.tools._mcp import MCPHttpToolset, MCPStdioToolset, MCPToolset
from elevenfactor.tools._mcp_convert import risk_from_annotations
from elevenfactor.tools._timeout import WithTimeout
from elevenfactor.tools._wrappers import Combined, Filtered, Prefixed

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
