"""``MCPServerConfig``: one MCP server as configuration, and the toolset built from it.

```yaml
fs:
  command: npx
  args: ["-y", "@modelcontextprotocol/server-filesystem", "/srv/docs"]
  prefix: fs_
  deny: ["write_*", "move_file"]
  risk: {create_directory: destructive}
search:
  url: https://search.internal/mcp
  headers: {Authorization: "Bearer ${SEARCH_TOKEN}"}
  timeout: 20
```

``transport`` is inferred (``command`` means stdio, ``url`` means http) or given explicitly.
``allow``, ``deny`` and ``risk`` use the server's own tool names (before ``prefix``); ``allow``
and ``deny`` take shell-style patterns. Values in ``env`` and ``headers`` are secrets: they are
masked when the config is printed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from elevenfactor.errors import ConfigError
from elevenfactor.tools._base import Risk, Toolset
from elevenfactor.tools._wrappers import Filtered, Prefixed

if TYPE_CHECKING:
    from elevenfactor.tools._mcp import MCPToolset

__all__ = ["MCPServerConfig", "mcp_toolset", "parse_mcp_servers"]

_NAME_CHARS = r"^[A-Za-z0-9_.-]*$"


class MCPServerConfig(BaseModel):
    """How to reach one MCP server and which of its tools to expose, under what names."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    transport: Literal["stdio", "http"] = Field(
        description="Inferred from `command` (stdio) or `url` (http) when omitted."
    )
    command: str | None = Field(default=None, description="stdio: the executable to start.")
    args: list[str] = Field(default_factory=list, description="stdio: its arguments.")
    env: dict[str, SecretStr] = Field(
        default_factory=dict, description="stdio: environment added to a minimal inherited one."
    )
    cwd: str | None = Field(default=None, description="stdio: working directory.")
    url: str | None = Field(default=None, description="http: the streamable HTTP endpoint.")
    headers: dict[str, SecretStr] = Field(
        default_factory=dict, description="http: headers sent with every request."
    )
    prefix: str | None = Field(
        default=None,
        pattern=_NAME_CHARS,
        description="Put in front of every tool name, e.g. `fs_`.",
    )
    allow: list[str] | None = Field(
        default=None, description="Only these tools (names or patterns); all when omitted."
    )
    deny: list[str] = Field(default_factory=list, description="Never these tools.")
    timeout: float | None = Field(default=60.0, gt=0, description="Seconds per tool call.")
    connect_timeout: float = Field(default=30.0, gt=0, description="Seconds to connect.")
    risk: dict[str, Risk] = Field(
        default_factory=dict, description="Risk level by tool name, overriding annotations."
    )
    trust_annotations: bool = Field(
        default=True,
        description="Derive risk from the server's readOnlyHint/destructiveHint; when false, "
        "every tool not in `risk` is destructive.",
    )

    @model_validator(mode="before")
    @classmethod
    def _infer_transport(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and data.get("transport") is None:
            has_command, has_url = data.get("command") is not None, data.get("url") is not None
            if has_command == has_url:
                raise ValueError("give either `command` (stdio) or `url` (http)")
            return {**data, "transport": "stdio" if has_command else "http"}
        return data

    @model_validator(mode="after")
    def _check_transport(self) -> MCPServerConfig:
        if self.transport == "stdio":
            if not self.command:
                raise ValueError("transport stdio needs `command`")
            if self.url is not None or self.headers:
                raise ValueError("`url` and `headers` are for transport http, not stdio")
        else:
            if not self.url:
                raise ValueError("transport http needs `url`")
            if self.command is not None or self.args or self.env or self.cwd is not None:
                raise ValueError("`command`, `args`, `env` and `cwd` are for transport stdio")
        return self


def mcp_toolset(config: MCPServerConfig, *, name: str | None = None) -> Toolset:
    """The toolset ``config`` describes: the MCP client, filtered, then prefixed. Nothing
    connects until the first ``list_tools`` or ``call_tool``; ``aclose_toolset`` closes it."""
    from elevenfactor.tools._mcp import MCPHttpToolset, MCPStdioToolset

    options: dict[str, Any] = {
        "timeout": config.timeout,
        "connect_timeout": config.connect_timeout,
        "risk": config.risk,
        "trust_annotations": config.trust_annotations,
    }
    server: MCPToolset
    if config.transport == "http":
        assert config.url is not None
        headers = {k: v.get_secret_value() for k, v in config.headers.items()}
        server = MCPHttpToolset(config.url, headers, name=name, **options)
    else:
        assert config.command is not None
        env = {k: v.get_secret_value() for k, v in config.env.items()}
        server = MCPStdioToolset(
            config.command, config.args, env or None, config.cwd, name=name, **options
        )
    toolset: Toolset = server
    if config.allow is not None or config.deny:
        toolset = Filtered(toolset, allow=config.allow, deny=config.deny)
    if config.prefix:
        toolset = Prefixed(toolset, config.prefix)
    return toolset


def parse_mcp_servers(
    data: Mapping[str, Any], *, source: str = "mcp_servers"
) -> dict[str, MCPServerConfig]:
    """Validate a mapping of server name to settings; errors name the server and the key."""
    servers: dict[str, MCPServerConfig] = {}
    for server_name, settings in data.items():
        try:
            servers[server_name] = MCPServerConfig.model_validate(settings)
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            loc = ".".join(str(p) for p in first["loc"])
            key = f"{server_name}.{loc}" if loc else server_name
            raise ConfigError(first["msg"], source=source, key=key) from exc
    return servers
