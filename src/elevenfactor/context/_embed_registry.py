"""``EmbedderRegistry``: the project's named embedders (``embeddings.models``), each built on
first use and kept, and closed together."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from elevenfactor.config import ProjectConfig, ProviderConfig
from elevenfactor.config._embeddings import LOCAL_PROVIDER, EmbeddingsConfig
from elevenfactor.context._embed_local import LocalEmbedder
from elevenfactor.context._embed_openai import OpenAIEmbedder
from elevenfactor.context._embedder import Embedder, Embedding
from elevenfactor.errors import ConfigError, ModelNotFound

__all__ = ["EmbedderRegistry", "MeteredEmbedder", "open_embedders"]


class MeteredEmbedder(Embedder, Protocol):
    """An ``Embedder`` that also reports token usage and the vector sizes it can make (what
    ``POST /v1/embeddings`` needs); both built-in embedders are one."""

    @property
    def model(self) -> str:
        """The model id."""
        ...

    def accepts_dimensions(self, dimensions: int) -> bool:
        """Whether ``embed_with_usage`` can make vectors of that size."""
        ...

    async def embed_with_usage(
        self, texts: Sequence[str], dimensions: int | None = None
    ) -> tuple[Embedding, int]:
        """The vectors (``dimensions`` long, default ``dim``) and the input tokens counted."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


class EmbedderRegistry:
    """The embedders of ``embeddings.models`` by name; nothing is built or loaded until asked."""

    def __init__(
        self,
        config: EmbeddingsConfig,
        providers: Mapping[str, ProviderConfig],
        *,
        source: str = "project",
    ) -> None:
        bad = config.unknown_reference(providers)
        if bad is not None:
            key, value, _, expected = bad
            raise ConfigError(f"unknown provider {value!r}", source=source, key=key,
                              expected=expected)  # fmt: skip
        self._config = config
        self._providers = dict(providers)
        self._built: dict[str, MeteredEmbedder] = {}
        self._local: dict[tuple[str, str | None], LocalEmbedder] = {}

    @property
    def default(self) -> str:
        """The name used when none is given."""
        return self._config.default

    @property
    def names(self) -> list[str]:
        """Every configured name, sorted."""
        return sorted(self._config.models)

    def get(self, name: str | None = None) -> MeteredEmbedder:
        """The embedder called ``name`` (the default when None); ``ModelNotFound`` (404
        ``model_not_found``) for a name that is not configured."""
        key = self._config.default if name is None else name
        embedder = self._built.get(key)
        if embedder is not None:
            return embedder
        config = self._config.models.get(key)
        if config is None:
            raise ModelNotFound(
                f"no embedding model {key!r}",
                param="model",
                hint="use one of: " + ", ".join(self.names) + " (embeddings.models)",
            )
        if config.provider == LOCAL_PROVIDER:
            # One local embedder for every name with the same settings.
            settings = (config.runtime, config.quantize)
            local = self._local.get(settings)
            if local is None:
                local = self._local[settings] = LocalEmbedder(
                    runtime=config.runtime, quantize=config.quantize
                )
            embedder = local
        else:
            embedder = OpenAIEmbedder(f"embeddings.{key}", config, self._providers[config.provider])
        self._built[key] = embedder
        return embedder

    async def aclose(self) -> None:
        """Close every embedder built so far."""
        built = {id(e): e for e in self._built.values()}
        self._built.clear()
        self._local.clear()
        for embedder in built.values():
            await embedder.aclose()


def open_embedders(project: ProjectConfig) -> EmbedderRegistry:
    """The project's embedders (``ConfigError`` naming the key if one refers to a provider that
    is neither ``local`` nor a ``providers:`` entry of type ``openai``)."""
    return EmbedderRegistry(project.embeddings, project.providers)
