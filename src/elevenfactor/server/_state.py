"""``Gateway``: what the HTTP app holds — store, models, recorder, key verifier, drain state."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from elevenfactor.config import ProjectConfig, Settings
from elevenfactor.governance import KeyVerifier
from elevenfactor.models import ModelRegistry
from elevenfactor.observe import CallRecorder, log_event
from elevenfactor.store import Store, open_store, require_migrated

__all__ = ["Gateway"]

logger = logging.getLogger("elevenfactor.server")


@dataclass
class Gateway:
    """The server's long-lived parts, opened inside the serving event loop."""

    settings: Settings
    project: ProjectConfig
    store: Store | None = None
    registry: ModelRegistry | None = None
    recorder: CallRecorder | None = None
    keys: KeyVerifier | None = None
    draining: bool = False
    inflight: int = 0
    started_at: float = 0.0
    _ready: bool = field(default=False, repr=False)

    async def open(self) -> None:
        """Open the store (refusing an unmigrated one), build models, start the recorder."""
        self.store = await open_store(self.settings.resolved_database_url())
        try:
            await require_migrated(self.store)
        except BaseException:
            await self.store.close()
            raise
        self.registry = ModelRegistry.from_project(self.project)
        self.recorder = CallRecorder(self.store, record_payloads=self.settings.record_payloads)
        self.recorder.start()
        self.keys = KeyVerifier(self.store)
        self._ready = True
        log_event(
            logger,
            "gateway_ready",
            routes=list(self.registry.routes),
            models=list(self.registry.deployments),
            dev=self.settings.dev,
        )

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
        if self.recorder is not None:
            await self.recorder.aclose()
        if self.registry is not None:
            await self.registry.aclose()
        if self.store is not None:
            await self.store.close()
        log_event(logger, "gateway_closed")
