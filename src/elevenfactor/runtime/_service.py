"""Wiring the runtime from settings and the project file, for ``serve`` and ``worker``:
programs named in the project, agents from ``agents/*.yaml``, their toolsets and models."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from elevenfactor.config import McpServerSettings, ProjectConfig, Settings
from elevenfactor.context import EmbedderRegistry, PromptRegistry, load_prompts, open_embedders
from elevenfactor.context._index_ops import open_backend, retrieval_url
from elevenfactor.errors import ConfigError, PromptError
from elevenfactor.governance import Meter, Sealer, open_meter
from elevenfactor.governance._guard_vault import GuardVault
from elevenfactor.governance._policy_book import PolicyBook
from elevenfactor.models import (
    CacheBackend,
    Limiter,
    ModelRegistry,
    open_limiter,
    open_response_cache,
)
from elevenfactor.observe import CallRecorder
from elevenfactor.runtime._agent import Agent, AgentDeps
from elevenfactor.runtime._agent_spec import AgentSpec, load_agents
from elevenfactor.runtime._housekeeping import Housekeeper
from elevenfactor.runtime._loader import import_ref, load_programs, report
from elevenfactor.runtime._mcp_tools import MCP_TOOL, McpToolProgram, McpTools
from elevenfactor.runtime._programs import Programs
from elevenfactor.runtime._release_binding import ReleaseBinding, ReleasePrograms
from elevenfactor.runtime._replay_whatif import register_replay_program
from elevenfactor.runtime._webhooks import webhook_hook
from elevenfactor.runtime._worker import Worker, WorkerOptions, queues_from
from elevenfactor.store import Store
from elevenfactor.tools import Toolset, aclose_toolset, mcp_toolset, parse_mcp_servers

__all__ = ["Runtime", "build_runtime", "build_worker", "check_config", "require_valid"]


@dataclass
class Runtime:
    """Everything a worker executes with; ``aclose`` stops MCP servers and closes providers."""

    programs: Programs
    registry: ModelRegistry
    toolsets: dict[str, Toolset] = field(default_factory=dict)
    owns_registry: bool = True
    agents: dict[str, AgentSpec] = field(default_factory=dict)
    deps: AgentDeps | None = None
    release: ReleaseBinding | None = None
    """The release the process runs under (``running`` sets it; see ``_release_binding``)."""

    async def aclose(self) -> None:
        """Release tool servers, embedders, the retrieval backend and (if it built them) model
        providers."""
        for toolset in self.toolsets.values():
            await aclose_toolset(toolset)
        if self.deps is not None:
            if self.deps.embedders is not None:
                await self.deps.embedders.aclose()
            if self.deps.retrieval_backend is not None:
                await self.deps.retrieval_backend.close()
        if self.owns_registry:
            await self.registry.aclose()


def _prompts(
    project: ProjectConfig, base: Path, errors: list[ConfigError] | None
) -> PromptRegistry:
    """The project's prompt files; an invalid one is a configuration error (``config check``
    lists every one)."""
    found: list[PromptError] = []
    prompts = load_prompts(
        base / project.prompts.dir, project.prompts.labels, root=base, errors=found
    )
    for problem in found:
        report(ConfigError(problem.message, key="prompts", hint=problem.hint), errors)
    return prompts


def _policies(
    project: ProjectConfig,
    base: Path,
    source: str | None,
    specs: dict[str, AgentSpec],
    agents_dir: Path,
    errors: list[ConfigError] | None,
    book: PolicyBook | None = None,
) -> PolicyBook | None:
    """The project's guard policies (``book`` when the caller loaded them already), with every
    agent's ``policy:`` resolved (its breakers hold the agent's runs); None when they are
    invalid (the errors are reported)."""
    if book is None:
        try:
            book = PolicyBook.load(project.guards, base, source=source or "the project file")
        except ConfigError as exc:
            report(exc, errors)
            return None
    for name, spec in specs.items():
        try:
            book.for_agent(spec.policy)
        except ConfigError as exc:
            where = f"agent {name}: policy"
            report(
                ConfigError(exc.message, source=str(agents_dir), key=where, hint=exc.hint), errors
            )
    return book


def _project_dir(settings: Settings) -> Path:
    source = settings.resolved_config_file()
    return source.resolve().parent if source is not None else Path.cwd()


def _in_file(exc: ConfigError, source: str | None) -> ConfigError:
    """``exc`` naming the project file when it names only a key (errors of the model layer)."""
    if exc.source is not None or source is None:
        return exc
    located = ConfigError(exc.message, source=source, hint=exc.hint)
    located.key, located.expected = exc.key, exc.expected
    return located


def _toolsets(
    project: ProjectConfig, base: Path, source: str | None, errors: list[ConfigError] | None
) -> dict[str, Toolset]:
    toolsets: dict[str, Toolset] = {}
    for name, ref in project.toolsets.items():
        key = f"toolsets.{name}"
        try:
            target = import_ref(ref, key, base=base, source=source)
        except ConfigError as exc:
            report(exc, errors)
            continue
        if not isinstance(target, Toolset):
            expected = "an object with list_tools and call_tool"
            report(
                ConfigError(f"{ref!r} is not a toolset", source=source, key=key, expected=expected),
                errors,
            )
            continue
        toolsets[name] = target
    for name, conf in project.mcp_servers.items():
        key = f"mcp_servers.{name}"
        if name in project.toolsets:
            shared = "a toolset and an MCP server share this name"
            report(ConfigError(shared, source=source, key=key), errors)
            continue
        try:
            server = parse_mcp_servers({name: conf}, source=f"{source or 'project'}: mcp_servers")
        except ConfigError as exc:
            report(exc, errors)
            continue
        toolsets[name] = mcp_toolset(server[name], name=name)  # connects on first use
    return toolsets


def build_runtime(
    settings: Settings,
    project: ProjectConfig,
    registry: ModelRegistry | None = None,
    *,
    errors: list[ConfigError] | None = None,
    recorder: CallRecorder | None = None,
    meter: Meter | None = None,
    cache: CacheBackend | None = None,
    limiter: Limiter | None = None,
    store: Store | None = None,
    policies: PolicyBook | None = None,
) -> Runtime:
    """Programs (from ``programs:``) and agents (from ``agents/*.yaml``) with their toolsets,
    and ``mcp.tool`` (gated tool calls of the MCP server). Agents record their model calls with
    ``recorder`` and check kill switches and reserve budgets through ``meter`` (their owner
    starts and closes both). A registry built here keeps its response cache in ``cache`` (and
    its routes' semantic caches in ``store``, embedded by the agents' embedders) and
    enforces deployment rate limits with ``limiter``. ``policies`` are the guard policies when
    the caller has loaded them (the gateway, with versions pinned in the store); otherwise
    they are read from the project's policy files here.

    Nothing connects yet: MCP servers start on first use. The first configuration error is
    raised; with an ``errors`` list every one is collected instead (``config check``).
    """
    base = _project_dir(settings)
    path = settings.resolved_config_file()
    source = str(path) if path is not None else None
    programs = load_programs(project.programs, base=base, source=source, errors=errors)
    toolsets = _toolsets(project, base, source, errors)
    owns = registry is None
    embedders: EmbedderRegistry | None = None
    if registry is None:
        embedders = open_embedders(project) if store is not None else None
        try:
            registry = ModelRegistry.from_project(
                project, cache=cache, limiter=limiter, store=store, embedders=embedders
            )
        except ConfigError as exc:
            raise _in_file(exc, source) from None
    # What the registry serves: every route and deployment of the project.
    models = set(project.routes) | set(project.models)
    agents_dir = base / project.agents_dir
    prompts = _prompts(project, base, errors)
    known = {p.id for p in prompts.list()}
    specs = load_agents(agents_dir, toolsets, models, errors=errors, known_prompts=known)
    for i, name in enumerate(project.mcp_server.agents or []):
        if name not in specs:
            expected = (
                "one of: " + ", ".join(sorted(specs)) if specs else f"an agent in {agents_dir}"
            )
            unknown = ConfigError(
                f"unknown agent {name!r}",
                source=source,
                key=f"mcp_server.agents[{i}]",
                expected=expected,
            )
            report(unknown, errors)
    deps = AgentDeps(registry, toolsets, specs, recorder, meter, limiter, prompts, embedders)
    deps.policies = _policies(project, base, source, specs, agents_dir, errors, policies)
    try:  # placeholders of guard rules, encrypted; without a key such rules mask
        deps.guard_vault = GuardVault.from_settings(
            settings.guard_vault_key, settings.guard_vault_ttl
        )
    except ConfigError as exc:
        report(exc, errors)
    if any(spec.retrieval is not None for spec in specs.values()):
        deps.retrieval_backend = open_backend(retrieval_url(settings))  # connects on first use
    if MCP_TOOL in programs:
        builtin = f"{MCP_TOOL!r} is the built-in program of gated MCP tool calls"
        report(ConfigError(builtin, source=source, key="programs"), errors)
    try:
        tools = McpTools(project.mcp_server, toolsets, specs, source=source)
    except ConfigError as exc:
        report(exc, errors)
        tools = McpTools(McpServerSettings(), toolsets, specs, source=source)
    if MCP_TOOL not in programs:
        programs.register(MCP_TOOL, McpToolProgram(tools))
    from elevenfactor.evals._program import register_eval_programs  # evals build on runtime

    register_eval_programs(programs, deps, base)  # elevenfactor.eval, elevenfactor.eval.agent
    register_replay_program(programs, deps)  # elevenfactor.replay (what-if replays)
    for name, spec in specs.items():
        if name in programs:
            clash = f"agent {name!r} has the name of a program"
            report(ConfigError(clash, source=str(agents_dir), key="name"), errors)
            continue
        if errors:  # collecting, and something is wrong: the runtime is reported, never run
            continue
        programs.register(name, Agent(spec, deps))
    if project.evals.online:  # online evaluation: the scoring runs' program
        from elevenfactor.evals._online import ONLINE_EVAL
        from elevenfactor.evals._online_program import online_program

        if ONLINE_EVAL in programs:
            clash = f"{ONLINE_EVAL!r} is the built-in program of online evaluation"
            report(ConfigError(clash, source=source, key="programs"), errors)
        else:
            scoring = online_program(project, base, deps, source=source, errors=errors)
            programs.register(ONLINE_EVAL, scoring)
    return Runtime(programs, registry, toolsets, owns, dict(specs), deps)


async def check_config(settings: Settings, project: ProjectConfig) -> list[ConfigError]:
    """Every configuration error ``serve`` would meet, found on the path ``serve`` takes
    (models, toolsets, programs, agents and their references), without opening a connection
    or starting an MCP server. Empty when everything resolves."""
    errors: list[ConfigError] = []
    path = settings.resolved_config_file()
    try:
        registry = ModelRegistry.from_project(project)
    except ConfigError as exc:
        errors.append(_in_file(exc, str(path) if path is not None else None))
        registry = ModelRegistry(project)  # nothing to call; the references are still checked
    try:
        runtime = build_runtime(settings, project, registry, errors=errors)
        await runtime.aclose()
    finally:
        await registry.aclose()
    return errors


def require_valid(errors: list[ConfigError]) -> None:
    """Raise the first of ``errors``, saying how many more there are."""
    if not errors:
        return
    first = errors[0]
    if len(errors) == 1:
        raise first
    more = f"{len(errors) - 1} more; `elevenfactor config check` lists them all"
    raise ConfigError(first.message, hint=f"{first.hint}; {more}" if first.hint else more)


@contextlib.asynccontextmanager
async def running(
    settings: Settings, project: ProjectConfig, store: Store
) -> AsyncIterator[Runtime]:
    """The runtime a worker process (or ``mcp serve``) runs: agents recording their calls,
    metered against budgets and kill switches, limited by the project's rate limits, with the
    response cache and the ledger sealer running; everything stopped and flushed on exit.
    A release that applies (``ELEVENFACTOR_RELEASE`` or the environment's active one) whose
    files are not those on disk stops it first (``ReleaseMismatch``); otherwise its id is
    ``runtime.release`` and every call and run of the process records it."""
    release = await ReleaseBinding.open(store, settings, project)
    recorder = CallRecorder(store, record_payloads=settings.record_payloads)
    recorder.release_id = release.release_id
    meter = await open_meter(settings, project, store)
    limiter = open_limiter(settings, project)
    runtime = build_runtime(
        settings,
        project,
        recorder=recorder,
        meter=meter,
        cache=open_response_cache(settings, store),
        limiter=limiter,
        store=store,
    )
    runtime.release = release
    recorder.start()
    meter.start()
    sealer = Sealer(store, settings)
    sealer.start()
    housekeeper = Housekeeper(store, settings.purge_interval, retention=project.retention)
    housekeeper.start()
    try:
        yield runtime
    finally:
        await housekeeper.aclose()
        await sealer.aclose()
        await runtime.aclose()
        await meter.aclose()
        await limiter.aclose()
        await recorder.aclose()
        release.close()


def build_worker(
    store: Store,
    settings: Settings,
    project: ProjectConfig,
    programs: Programs,
    *,
    queues: list[str] | None = None,
    concurrency: int | None = None,
    release: ReleaseBinding | None = None,
) -> Worker:
    """A worker over ``store`` configured from the environment and the project file; with
    ``release``, each run's release is checked against the files when it starts."""
    options = WorkerOptions(
        queues=queues_from(queues or settings.worker_queues.split(",")),
        concurrency=concurrency or settings.worker_concurrency,
        lease_seconds=settings.lease_seconds,
        max_poll_interval=settings.worker_poll_interval,
        queue_limits={
            name: q.concurrency for name, q in project.queues.items() if q.concurrency is not None
        },
    )
    hooks: dict[str, Any] = {}
    if settings.approval_webhook:
        hooks["approval_pending"] = webhook_hook(settings.approval_webhook)
    if project.evals.online:  # sampled runs get a scoring run as they end
        from elevenfactor.evals._online import OnlineSampler

        hooks["run_ending"] = OnlineSampler(project.evals.online)
    if release is not None:
        programs = ReleasePrograms(programs, release)
    return Worker(store, programs, options, hooks=hooks)
