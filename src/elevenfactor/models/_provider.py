"""The ``Provider`` protocol and the entry-point registry that builds deployments from config.

Built-in providers register through the same ``elevenfactor.providers`` entry-point group third
parties use, so no provider name appears in core code.
"""

from __future__ import annotations

from functools import cache
from importlib.metadata import entry_points
from typing import Protocol

from elevenfactor.config import DeploymentConfig, ProviderConfig
from elevenfactor.errors import ConfigError
from elevenfactor.models._protocol import Model

__all__ = ["Provider", "ProviderFactory", "available_providers", "load_provider"]

ENTRY_POINT_GROUP = "elevenfactor.providers"


class Provider(Protocol):
    """A provider account that makes deployments (raw models, without resilience wrappers)."""

    def deployment(self, name: str, config: DeploymentConfig) -> Model:
        """The raw model for one configured deployment."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


class ProviderFactory(Protocol):
    """What an entry point names: usually the provider class itself."""

    def __call__(self, name: str, config: ProviderConfig) -> Provider: ...


def available_providers() -> list[str]:
    """Names of provider types registered under the ``elevenfactor.providers`` group."""
    return sorted({ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)})


@cache
def _factory(kind: str) -> ProviderFactory | None:
    for ep in entry_points(group=ENTRY_POINT_GROUP, name=kind):
        factory: ProviderFactory = ep.load()
        return factory
    return None


def load_provider(name: str, config: ProviderConfig) -> Provider:
    """Instantiate the provider named in the project file (importing only that one)."""
    factory = _factory(config.type)
    if factory is None:
        raise ConfigError(
            f"unknown provider type {config.type!r}",
            key=f"providers.{name}.type",
            expected="one of: " + ", ".join(available_providers()),
            hint="install the package that registers it under 'elevenfactor.providers'",
        )
    return factory(name, config)
