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
from pydantic import Field, ValidationError, model_validator

from elevenfactor.config._embeddings import EmbeddingsConfig
from elevenfactor.config._evals import EvalsConfig
from elevenfactor.config._guards import GuardsConfig
from elevenfactor.config._limits import LimitsConfig
from elevenfactor.config._memory import MemoryConfig
from elevenfactor.config._models import (
    BreakerConfig,
    DeploymentConfig,
    ErrorClass,
    FailoverConfig,
    PriceConfig,
    ProviderConfig,
    RetryConfig,
    RouteConfig,
    RouteRule,
    RouteTarget,
    _Strict,
)
from elevenfactor.config._prompts import PromptsConfig
from elevenfactor.config._retention import RetentionConfig
from elevenfactor.config._retrieval import RetrievalConfig
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
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    prices: dict[str, PriceConfig] = Field(
        default_factory=dict,
        description="Prices keyed by a deployment name under `models:` or a model id one of"
        " them uses; they override the shipped list prices (a deployment's own `price` wins).",
    )
    prompts: PromptsConfig = Field(default_factory=PromptsConfig)
    embeddings: EmbeddingsConfig = Field(default_factory=EmbeddingsConfig)
    retrieval: RetrievalConfig = Field(default_factory=RetrievalConfig)
    memory: MemoryConfig = Field(default_factory=MemoryConfig)
    guards: GuardsConfig = Field(default_factory=GuardsConfig)
    evals: EvalsConfig = Field(default_factory=EvalsConfig)
    retention: RetentionConfig = Field(default_factory=RetentionConfig)

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
            if route.escalate_to is not None and (
                route.escalate_to not in targets or route.escalate_to == name
            ):
                raise _RefError(f"routes.{name}.escalate_to", route.escalate_to, sorted(targets))
            semantic = route.cache.semantic if route.cache is not None else None
            embedder = semantic.embedder if semantic is not None else None
            if embedder is not None and embedder not in self.embeddings.models:
                key = f"routes.{name}.cache.semantic.embedder"
                raise _RefError(key, embedder, sorted(self.embeddings.models))
        if self.routes and self.default_route not in targets:
            raise _RefError("default_route", self.default_route, sorted(targets))
        if (bad := self.limits.unknown_reference(self.models, self.routes)) is not None:
            raise _RefError(*bad)
        if (unknown := self.embeddings.unknown_reference(self.providers)) is not None:
            raise _RefError(*unknown)
        if (unguarded := self.guards.unknown_reference(self.models, self.routes)) is not None:
            raise _RefError(*unguarded)
        if (unjudged := self.evals.unknown_reference(self.models, self.routes)) is not None:
            raise _RefError(*unjudged)
        if self.memory.embedder is not None and self.memory.embedder not in self.embeddings.models:
            known = sorted(self.embeddings.models)
            raise _RefError("memory.embedder", self.memory.embedder, known)
        priceable = set(self.models) | {dep.model for dep in self.models.values()}
        for key in self.prices:
            if key not in priceable:
                raise _RefError(
                    f"prices.{key}",
                    key,
                    sorted(priceable),
                    "a deployment name or a deployment's model id: "
                    + (", ".join(sorted(priceable)) or "(no models are defined)"),
                )
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
