"""Wiring the runtime from settings and the project file, for ``serve`` and ``worker``:
programs named in the project, agents from ``agents/*.yaml``, their toolsets and models."""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass, field
from pathlib import Path

from elevenfactor.config import ProjectConfig, Settings
from elevenfactor.errors import ConfigError
from elevenfactor.models import ModelRegistry
from elevenfactor.runtime._agent import Agent, AgentDeps
from elevenfactor.runtime._agent_spec import AgentSpec, load_agents
from elevenfactor.runtime._loader import load_programs
from elevenfactor.runtime._mcp_tools import MCP_TOOL, McpToolProgram, McpTools
from elevenfactor.runtime._programs import Programs
from elevenfactor.runtime._webhooks import webhook_hook
from elevenfactor.runtime._worker import Worker, WorkerOptions, queues_from
from elevenfactor.store import Store
from elevenfactor.tools import Toolset, aclose_toolset, mcp_toolset, parse_mcp_servers

__all__ = ["Runtime", "build_runtime", "build_worker"]


@dataclass
class Runtime:
    """Everything a worker executes with; ``aclose`` stops MCP servers and closes providers."""

    programs: Programs
    registry: ModelRegistry
    toolsets: dict[str, Toolset] = field(default_factory=dict)
    owns_registry: bool = True
    agents: dict[str, AgentSpec] = field(default_factory=dict)

    async def aclose(self) -> None:
        """Release tool servers and (if it built them) model providers."""
        for toolset in self.toolsets.values():
            await aclose_toolset(toolset)
        if self.owns_registry:
            await self.registry.aclose()


def _project_dir(settings: Settings) -> Path:
    source = settings.resolved_config_file()
    return source.resolve().parent if source is not None else Path.cwd()


def _import(ref: str, key: str, base: Path) -> object:
    module_name, sep, attr = ref.partition(":")
    if not sep:
        raise ConfigError(f"bad reference {ref!r}", key=key, expected="'package.module:attribute'")
    if str(base) not in sys.path:
        sys.path.insert(0, str(base))
    try:
        target = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"cannot load {ref!r}: {exc}", key=key) from None
    return target


def build_runtime(
    settings: Settings, project: ProjectConfig, registry: ModelRegistry | None = None
) -> Runtime:
    """Programs (from ``programs:``) and agents (from ``agents/*.yaml``) with their toolsets,
    and ``mcp.tool`` (gated tool calls of the MCP server).

    Nothing connects yet: MCP servers start on first use.
    """
    base = _project_dir(settings)
    programs = load_programs(project.programs, base=base)
    toolsets: dict[str, Toolset] = {}
    for name, ref in project.toolsets.items():
        target = _import(ref, f"toolsets.{name}", base)
        if not isinstance(target, Toolset):
            raise ConfigError(
                f"{ref!r} is not a toolset",
                key=f"toolsets.{name}",
                expected="an object with list_tools and call_tool",
            )
        toolsets[name] = target
    for name, server in parse_mcp_servers(project.mcp_servers).items():
        if name in toolsets:
            raise ConfigError(
                "a toolset and an MCP server share this name", key=f"mcp_servers.{name}"
            )
        toolsets[name] = mcp_toolset(server, name=name)
    owns = registry is None
    registry = registry or ModelRegistry.from_project(project)
    specs = load_agents(base / project.agents_dir, toolsets, set(registry.names()))
    deps = AgentDeps(registry, toolsets, specs)
    if MCP_TOOL in programs:
        raise ConfigError(
            f"{MCP_TOOL!r} is the built-in program of gated MCP tool calls", key="programs"
        )
    source = settings.resolved_config_file()
    tools = McpTools(
        project.mcp_server, toolsets, specs, source=str(source) if source is not None else None
    )
    programs.register(MCP_TOOL, McpToolProgram(tools))
    for name, spec in specs.items():
        if name in programs:
            raise ConfigError(
                f"agent {name!r} has the name of a program",
                source=str(base / project.agents_dir),
                key="name",
            )
        programs.register(name, Agent(spec, deps))
    return Runtime(programs, registry, toolsets, owns, dict(specs))


def build_worker(
    store: Store,
    settings: Settings,
    project: ProjectConfig,
    programs: Programs,
    *,
    queues: list[str] | None = None,
    concurrency: int | None = None,
) -> Worker:
    """A worker over ``store`` configured from the environment and the project file."""
    options = WorkerOptions(
        queues=queues_from(queues or settings.worker_queues.split(",")),
        concurrency=concurrency or settings.worker_concurrency,
        lease_seconds=settings.lease_seconds,
        queue_limits={
            name: q.concurrency for name, q in project.queues.items() if q.concurrency is not None
        },
    )
    hooks = {}
    if settings.approval_webhook:
        hooks["approval_pending"] = webhook_hook(settings.approval_webhook)
    return Worker(store, programs, options, hooks=hooks)
