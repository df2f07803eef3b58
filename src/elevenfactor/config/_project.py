"""The project file ``elevenfactor.yaml``: providers, model deployments and routes.

Model ids, versions and parameters come from here, never from code. ``${VAR}`` and
``${VAR:-default}`` are substituted from the environment; an undefined variable is an error that
names the file and the key. ``$${`` writes a literal ``${``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from elevenfactor.errors import ConfigError

__all__ = [
    "BreakerConfig",
    "DeploymentConfig",
    "ErrorClass",
    "FailoverConfig",
    "McpServerSettings",
    "PriceConfig",
    "ProjectConfig",
    "ProviderConfig",
    "QueueConfig",
    "RetryConfig",
    "RouteConfig",
    "RouteRule",
    "RouteTarget",
    "default_project",
    "load_project",
    "parse_project",
]

ErrorClass = Literal[
    "rate_limit",
    "server_error",
    "timeout",
    "connection",
    "context_window",
    "content_filter",
    "malformed_response",
    "circuit_open",
    "auth",
    "bad_request",
]


_RETRY_ON: tuple[ErrorClass, ...] = (
    "rate_limit",
    "server_error",
    "timeout",
    "connection",
    "malformed_response",
)
_FAILOVER_ON: tuple[ErrorClass, ...] = (
    "rate_limit",
    "server_error",
    "timeout",
    "connection",
    "circuit_open",
    "content_filter",
    "malformed_response",
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RetryConfig(_Strict):
    """Retries with exponential backoff and full jitter; Retry-After is honoured up to a cap."""

    attempts: int = Field(default=2, ge=1, le=20, description="Total attempts, first included.")
    backoff_base: float = Field(
        default=0.25,
        ge=0,
        description="Backoff cap in seconds before the first retry; doubles each retry.",
    )
    backoff_max: float = Field(
        default=8.0, ge=0, description="Upper bound in seconds on the backoff cap."
    )
    max_retry_after: float = Field(
        default=30.0, ge=0, description="A longer Retry-After fails over instead of waiting."
    )
    on: list[ErrorClass] = Field(
        default_factory=lambda: list(_RETRY_ON), description="Error classes that are retried."
    )


class BreakerConfig(_Strict):
    """Open after ``failures`` consecutive failures; refuse calls for ``cooldown`` seconds."""

    failures: int = Field(
        default=5, ge=1, description="Consecutive failures that open the breaker."
    )
    cooldown: float = Field(
        default=30.0,
        gt=0,
        description="Seconds the open breaker refuses calls before a trial call.",
    )


class PriceConfig(_Strict):
    """Price in currency units per million tokens."""

    input_per_mtok: float = Field(ge=0, description="Price per million input tokens.")
    output_per_mtok: float = Field(ge=0, description="Price per million output tokens.")


class ProviderConfig(_Strict):
    """A provider account: its type (an entry point name), endpoint and credentials."""

    type: str = Field(description="Provider type: the name of a registered provider entry point.")
    base_url: str | None = Field(
        default=None, description="API endpoint; None: the provider's default."
    )
    api_key: SecretStr | None = Field(default=None, description="API key (use ${VAR}).")
    headers: dict[str, str] = Field(
        default_factory=dict, description="Extra HTTP headers sent with every request."
    )
    options: dict[str, Any] = Field(default_factory=dict, description="Provider-specific options.")


class DeploymentConfig(_Strict):
    """One model at one provider, with its parameters and resilience policy."""

    provider: str = Field(description="Name of a provider under `providers:`.")
    model: str = Field(description="The model id at the provider.")
    context_window: int | None = Field(
        default=None, gt=0, description="Context window in tokens; None: the provider's value."
    )
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="Default model parameters; a request's settings override them.",
    )
    price: PriceConfig | None = None
    timeout: float = Field(default=60.0, gt=0, description="Seconds per attempt.")
    first_token_timeout: float | None = Field(
        default=None, gt=0, description="Seconds to wait for a stream's first chunk; None: timeout."
    )
    retry: RetryConfig = Field(default_factory=RetryConfig)
    breaker: BreakerConfig | None = Field(default_factory=BreakerConfig)
    tags: list[str] = Field(
        default_factory=list, description="Free-form labels for the deployment (informational)."
    )


class FailoverConfig(_Strict):
    """Which error classes move a chain to its next deployment."""

    on: list[ErrorClass] = Field(
        default_factory=lambda: list(_FAILOVER_ON),
        description="Error classes that move on to the next deployment.",
    )
    context_window: Literal["larger", "next", "fail"] = Field(
        default="larger",
        description="On context_window: skip to a deployment with a larger context window.",
    )


class RouteTarget(_Strict):
    """A weighted target of a route."""

    model: str = Field(description="A model or another route.")
    weight: float = Field(
        default=1.0, gt=0, description="Relative weight; share of requests proportional to it."
    )


class RouteRule(_Strict):
    """Send requests carrying all of ``tags`` to ``use`` (a route or a model)."""

    tags: list[str] = Field(
        min_length=1, description="Request tags that must all be present for the rule to match."
    )
    use: str = Field(description="The route or model that matching requests go to.")


class RouteConfig(_Strict):
    """A named route: a failover chain, or weighted targets, optionally preceded by tag rules."""

    chain: list[str] | None = Field(
        default=None,
        min_length=1,
        description="Models to try in order, failing over to the next; exclusive with weights.",
    )
    weights: list[RouteTarget] | None = Field(default=None, min_length=1)
    rules: list[RouteRule] = Field(default_factory=list)
    failover: FailoverConfig = Field(default_factory=FailoverConfig)

    @model_validator(mode="after")
    def _one_shape(self) -> RouteConfig:
        if (self.chain is None) == (self.weights is None):
            raise ValueError("a route needs exactly one of 'chain' or 'weights'")
        return self


class QueueConfig(_Strict):
    """A run queue: how many of its runs may run at once across all workers."""

    concurrency: int | None = Field(
        default=None,
        ge=1,
        description="Most runs of the queue at once across workers; None: no cap.",
    )


class McpServerSettings(_Strict):
    """What elevenfactor exposes as an MCP server (at ``/mcp`` and ``elevenfactor mcp serve``).

    Every call acts for the caller: the API key's user over HTTP, ``mcp serve --as USER`` over
    stdio. Agents run as durable runs owned by that user. A call of an exposed tool goes through
    the same approval policy as inside an agent: the first rule that matches among ``approval``
    (matched against ``<toolset>.<tool>``) and then the ``approval`` rules of every agent using
    that toolset (matched against the name the agent sees, with its prefix). A gated call is a
    durable run of the built-in ``mcp.tool`` program that waits for a reviewer; the call answers
    within ``wait_seconds`` with the tool's result, or with the run id while it waits. A
    destructive tool that no rule governs is neither listed nor callable unless
    ``allow_destructive`` names it.

    ```yaml
    mcp_server:
      tools: ["billing.*"]
      approval:
        - tools: [billing.refund]
          when: [{arg: amount, op: ">", value: 100}]
          group: finance
          timeout: 3600
      allow_destructive: [billing.purge_cache]
    ```
    """

    agents: list[str] | None = Field(default=None, description="Agents to expose; None: all.")
    tools: list[str] = Field(
        default_factory=list,
        description="Tools to expose, as '<toolset>.<tool>' names or shell-style patterns.",
    )
    approval: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Approval rules for the exposed tools, with the schema of an agent's "
        "`approval:` rules (tools, risk, when, group, timeout, on_timeout; no before_model), "
        "matched against '<toolset>.<tool>'. They come before the agents' rules; the first "
        "rule that matches a call gates it. Validated when the runtime is built.",
    )
    allow_destructive: list[str] = Field(
        default_factory=list,
        description="Destructive tools to expose although no approval rule governs them, as "
        "'<toolset>.<tool>' names or patterns. Without a match such a tool is neither listed "
        "nor callable.",
    )
    wait_seconds: float = Field(
        default=120.0,
        gt=0,
        description="How long a call waits for its run (an agent, or a tool call awaiting "
        "approval) before answering with the run id.",
    )


class ProjectConfig(_Strict):
    """The whole project file."""

    version: Literal[1] = Field(default=1, description="Project file format version.")
    providers: dict[str, ProviderConfig] = Field(default_factory=dict)
    models: dict[str, DeploymentConfig] = Field(default_factory=dict)
    routes: dict[str, RouteConfig] = Field(default_factory=dict)
    default_route: str = Field(
        default="default", description="Route or model used when a request names none."
    )
    programs: list[str] = Field(
        default_factory=list,
        description="Durable programs to load, as 'package.module:attribute' references to a "
        "Programs registry or an async function.",
    )
    queues: dict[str, QueueConfig] = Field(default_factory=dict)
    toolsets: dict[str, str] = Field(
        default_factory=dict,
        description="Named Python toolsets, as 'package.module:attribute' references.",
    )
    mcp_servers: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Named MCP servers (validated by the tools layer)."
    )
    agents_dir: str = Field(default="agents", description="Where agents/*.yaml live.")
    mcp_server: McpServerSettings = Field(default_factory=McpServerSettings)

    @model_validator(mode="after")
    def _references(self) -> ProjectConfig:
        for name, dep in self.models.items():
            if dep.provider not in self.providers:
                raise _RefError(f"models.{name}.provider", dep.provider, sorted(self.providers))
        targets = set(self.models) | set(self.routes)
        for name, route in self.routes.items():
            if name in self.models:
                raise _RefError(f"routes.{name}", name, [], "a name not also used by a model")
            for i, member in enumerate(route.chain or []):
                if member not in self.models:
                    raise _RefError(f"routes.{name}.chain[{i}]", member, sorted(self.models))
            for i, target in enumerate(route.weights or []):
                if target.model not in targets:
                    raise _RefError(
                        f"routes.{name}.weights[{i}].model", target.model, sorted(targets)
                    )
            for i, rule in enumerate(route.rules):
                if rule.use not in targets or rule.use == name:
                    raise _RefError(f"routes.{name}.rules[{i}].use", rule.use, sorted(targets))
        if self.routes and self.default_route not in targets:
            raise _RefError("default_route", self.default_route, sorted(targets))
        return self


class _RefError(ValueError):
    def __init__(self, key: str, value: str, known: list[str], expected: str | None = None):
        self.key = key
        self.expected = expected or ("one of: " + ", ".join(known) if known else "a defined name")
        super().__init__(f"unknown name {value!r}")


_VAR = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _substitute(value: Any, path: str, source: str, env: Mapping[str, str]) -> Any:
    if isinstance(value, dict):
        return {
            k: _substitute(v, f"{path}.{k}" if path else str(k), source, env)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_substitute(v, f"{path}[{i}]", source, env) for i, v in enumerate(value)]
    if not isinstance(value, str) or "$" not in value:
        return value

    def repl(match: re.Match[str]) -> str:
        if match.group(0) == "$${":
            return "${"
        name, default = match.group(1), match.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        raise ConfigError(
            f"environment variable ${{{name}}} is not set",
            source=source,
            key=path,
            expected=f"{name} in the environment, or a default: ${{{name}:-value}}",
        )

    return _VAR.sub(repl, value)


def parse_project(
    data: Any, *, source: str = "<memory>", env: Mapping[str, str] | None = None
) -> ProjectConfig:
    """Validate a parsed project document (``${VAR}`` substituted from ``env``)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("the file must hold a mapping", source=source, expected="key: value")
    data = _substitute(data, "", source, os.environ if env is None else env)
    try:
        return ProjectConfig.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        ctx_err = (err.get("ctx") or {}).get("error")
        if isinstance(ctx_err, _RefError):
            raise ConfigError(
                str(ctx_err), source=source, key=ctx_err.key, expected=ctx_err.expected
            ) from None
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        message = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        expected = None
        if err["type"] != "extra_forbidden" and "input" in err:
            message = f"{err['msg']} (got {err['input']!r})"
        raise ConfigError(message, source=source, key=key, expected=expected) from None


def load_project(path: Path | None, env: Mapping[str, str] | None = None) -> ProjectConfig:
    """Load the project file at ``path``, or the built-in default when ``path`` is None."""
    if path is None:
        return default_project()
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            "file not found",
            source=source,
            hint="set ELEVENFACTOR_CONFIG_FILE or create elevenfactor.yaml",
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        raise ConfigError(f"not valid YAML at {where}", source=source, expected="YAML") from None
    return parse_project(data, source=source, env=env)


def default_project() -> ProjectConfig:
    """The embedded default (``defaults/elevenfactor.yaml``): the bundled local model."""
    text = resources.files("elevenfactor.config").joinpath("defaults/elevenfactor.yaml")
    return parse_project(
        yaml.safe_load(text.read_text(encoding="utf-8")), source="built-in default project", env={}
    )
