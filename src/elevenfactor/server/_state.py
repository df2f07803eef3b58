"""``Gateway``: what the HTTP app holds — store, models, recorder, key verifier, guard policies,
drain state."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mcp.server.transport_security import TransportSecuritySettings

from elevenfactor.config import ProjectConfig, Settings
from elevenfactor.context._embed_registry import EmbedderRegistry, open_embedders
from elevenfactor.governance import KeyVerifier, Meter, Sealer, local_admin, open_meter, price_book
from elevenfactor.governance._guard_pipeline import pipeline_for
from elevenfactor.governance._policy_book import PolicyBook
from elevenfactor.governance._policy_model import Policy
from elevenfactor.memory import apply_spaces
from elevenfactor.models import (
    Call,
    Limiter,
    Message,
    ModelRegistry,
    ModelSettings,
    SystemMessage,
    UserMessage,
    open_limiter,
    open_response_cache,
)
from elevenfactor.observe import CallRecord, CallRecorder, log_event, new_id
from elevenfactor.runtime import (
    Housekeeper,
    Programs,
    Runtime,
    Worker,
    build_runtime,
    build_worker,
)
from elevenfactor.runtime._release_binding import ReleaseBinding
from elevenfactor.server._mcp import McpBridge, build_mcp_server
from elevenfactor.server._mcp_http import McpHttp
from elevenfactor.store import Store, open_store, require_migrated

__all__ = ["Gateway"]

logger = logging.getLogger("elevenfactor.server")


def mcp_security(settings: Settings) -> TransportSecuritySettings:
    """MCP's DNS-rebinding protection: on in dev mode (loopback names and the configured hosts
    and origins) and wherever ``ELEVENFACTOR_ALLOWED_HOSTS`` is set."""
    configured = [h.strip().lower() for h in settings.allowed_hosts.split(",") if h.strip()]
    # As the cross-site guard does: a configured name is served on any port.
    hosts = [*configured, *(f"{h}:*" for h in configured if not h.endswith("]") and ":" not in h)]
    origins = [o.strip().lower() for o in settings.allowed_origins.split(",") if o.strip()]
    if settings.dev:
        for name in ("localhost", "127.0.0.1", "[::1]"):
            hosts += [name, f"{name}:*"]
            origins += [
                f"http://{name}",
                f"http://{name}:*",
                f"https://{name}",
                f"https://{name}:*",
            ]
    elif not configured:
        # Any Host is served (a deployment behind its own proxy); keys authenticate every call.
        return TransportSecuritySettings(enable_dns_rebinding_protection=False)
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True, allowed_hosts=hosts, allowed_origins=origins
    )


@dataclass
class Gateway:
    """The server's long-lived parts, opened inside the serving event loop."""

    settings: Settings
    project: ProjectConfig
    store: Store | None = None
    registry: ModelRegistry | None = None
    recorder: CallRecorder | None = None
    meter: Meter | None = None
    limiter: Limiter | None = None
    keys: KeyVerifier | None = None
    programs: Programs | None = None
    mcp: McpHttp | None = None
    embedders: EmbedderRegistry | None = None
    policies: PolicyBook | None = None
    """The project's guard policies (``guards:``), checked at start-up."""
    release: ReleaseBinding | None = None
    """The release the process serves (``runtime._release_binding``), checked at start-up."""
    _recorded: set[tuple[str, ...]] = field(default_factory=set, repr=False)
    _stack: contextlib.AsyncExitStack = field(default_factory=contextlib.AsyncExitStack)
    runtime: Runtime | None = None
    worker: Worker | None = None
    _worker_task: asyncio.Task[None] | None = field(default=None, repr=False)
    sealer: Sealer | None = None
    housekeeper: Housekeeper | None = None
    draining: bool = False
    inflight: int = 0
    started_at: float = 0.0
    _ready: bool = field(default=False, repr=False)

    async def open(self) -> None:
        """Open the store (refusing an unmigrated one), build models, start the recorder."""
        # Checked first, built lazily: no embedder exists, no model is read, until a request.
        self.embedders = open_embedders(self.project)
        self.store = await open_store(self.settings.resolved_database_url())
        try:
            await require_migrated(self.store)
            # An invalid policy file or a reference to nothing stops the start (ConfigError
            # naming the file or the key); versions pinned by label are read from the store.
            config_file = self.settings.resolved_config_file()
            self.policies = await PolicyBook.open(
                self.project.guards,
                config_file.resolve().parent if config_file is not None else Path.cwd(),
                self.store,
                source=str(config_file) if config_file is not None else "the project file",
            )
            for policy in self.policies.all():  # every rule builds (or the start fails), warm
                pipeline = pipeline_for([policy], judge=self.guard_judge)
                if pipeline.has("input"):
                    await pipeline.check("input", "warm up")
            # A release that applies and is not the files on disk stops the start, naming
            # what differs (ReleaseMismatch).
            self.release = await ReleaseBinding.open(self.store, self.settings, self.project)
        except BaseException:
            await self.store.close()
            raise
        self.limiter = open_limiter(self.settings, self.project)
        self.registry = ModelRegistry.from_project(
            self.project,
            limiter=self.limiter,
            cache=open_response_cache(self.settings, self.store),
            store=self.store,  # semantic caches: answers in the store, embedded as configured
            embedders=self.embedders,
        )
        self.recorder = CallRecorder(self.store, record_payloads=self.settings.record_payloads)
        self.recorder.release_id = self.release.release_id
        self.recorder.start()
        self.meter = await open_meter(self.settings, self.project, self.store)
        self.meter.start()
        # The project file's memory spaces and grants (a ledger entry only when they change).
        await apply_spaces(self.store, local_admin("system"), self.project.memory)
        self.keys = KeyVerifier(self.store)
        self.sealer = Sealer(self.store, self.settings)
        self.sealer.start()
        self.housekeeper = Housekeeper(
            self.store, self.settings.purge_interval, retention=self.project.retention
        )
        self.housekeeper.start()
        self.runtime = build_runtime(
            self.settings,
            self.project,
            self.registry,
            recorder=self.recorder,
            meter=self.meter,
            limiter=self.limiter,
            policies=self.policies,  # read once, with the versions pinned in the store
        )
        self.runtime.release = self.release
        self.programs = self.runtime.programs
        if self.settings.serves_worker():
            self.worker = build_worker(
                self.store, self.settings, self.project, self.programs, release=self.release
            )
            self._worker_task = asyncio.create_task(self.worker.serve(), name="worker")
        self.mcp = McpHttp(
            build_mcp_server(
                McpBridge(self.store, self.runtime, self.project.mcp_server, self.worker)
            ),
            mcp_security(self.settings),
        )
        await self._stack.enter_async_context(self.mcp.run())
        self._ready = True
        log_event(
            logger,
            "gateway_ready",
            routes=list(self.registry.routes),
            models=list(self.registry.deployments),
            dev=self.settings.dev,
            release=self.release.release_id,
        )

    async def record_policies(self, policies: Sequence[Policy]) -> None:
        """Record the versions of ``policies`` in the store the first time this process uses
        them together (a failure is logged and tried again on the next call)."""
        key = tuple(p.full_hash for p in policies)
        if key in self._recorded or self.policies is None or self.store is None:
            return
        try:
            await self.policies.record_used(self.store, policies)
        except Exception:
            logger.warning("recording the guard policy versions in use failed", exc_info=True)
            return
        self._recorded.add(key)

    async def guard_judge(self, route: str, messages: list[dict[str, str]]) -> str:
        """The ``Judge`` of ``relevance`` guard rules: ``route``'s answer to ``messages``
        (a model call recorded like any other, tagged ``guard-judge``)."""
        assert self.registry is not None and self.recorder is not None
        resolved = self.registry.resolve(route)
        call = Call(trace_id=new_id(), route=resolved.route)
        chat: list[Message] = [
            SystemMessage(content=m["content"])
            if m.get("role") == "system"
            else UserMessage(content=m["content"])
            for m in messages
        ]
        response = await resolved.model.request(chat, ModelSettings(temperature=0), call)
        self.recorder.record(
            CallRecord.from_call(
                call,
                response.usage,
                price_book(self.project),
                stream=False,
                status="ok",
                tags=["guard-judge"],
            )
        )
        return response.message.content or ""

    @property
    def ready(self) -> bool:
        """Open and not draining."""
        return self._ready and not self.draining

    def start_draining(self) -> None:
        """Flip readiness; new requests get 503 from now on."""
        if not self.draining:
            self.draining = True
            log_event(logger, "draining", inflight=self.inflight)

    async def aclose(self) -> None:
        """Flush records and release everything."""
        self._ready = False
        await self._stack.aclose()
        if self.worker is not None and self._worker_task is not None:
            await self.worker.shutdown(self.settings.shutdown_timeout)
            await self._worker_task
        if self.runtime is not None:
            await self.runtime.aclose()
        if self.housekeeper is not None:
            await self.housekeeper.aclose()
        if self.sealer is not None:
            await self.sealer.aclose()
        if self.meter is not None:
            await self.meter.aclose()
        if self.recorder is not None:
            await self.recorder.aclose()
        if self.registry is not None:
            await self.registry.aclose()
        if self.embedders is not None:
            await self.embedders.aclose()
        if self.limiter is not None:
            await self.limiter.aclose()
        if self.release is not None:
            self.release.close()
        if self.store is not None:
            await self.store.close()
        log_event(logger, "gateway_closed")
