"""``embeddings:`` in the project file, and the registry that builds embedders from it."""

from __future__ import annotations

from typing import Any

import pytest

from elevenfactor.config import parse_project
from elevenfactor.config._embeddings import EmbeddingsConfig
from elevenfactor.context._embed_local import LocalEmbedder
from elevenfactor.context._embed_openai import OpenAIEmbedder
from elevenfactor.context._embed_registry import EmbedderRegistry, open_embedders
from elevenfactor.errors import ConfigError, ModelNotFound

OPENAI = {"openai": {"type": "openai", "api_key": "sk-test", "base_url": "http://127.0.0.1:9"}}


def _project(embeddings: dict[str, Any] | None, providers: dict[str, Any] | None = None) -> Any:
    data: dict[str, Any] = {"providers": providers or {}}
    if embeddings is not None:
        data["embeddings"] = embeddings
    return parse_project(data)


def test_no_embeddings_key_means_the_local_model() -> None:
    project = _project(None)
    assert project.embeddings.default == "local"
    assert {n: m.provider for n, m in project.embeddings.models.items()} == {"local": "local"}
    registry = open_embedders(project)
    embedder = registry.get()
    assert isinstance(embedder, LocalEmbedder)
    assert (embedder.name, embedder.dim) == ("local/all-MiniLM-L6-v2", 384)


def test_the_documented_example() -> None:
    project = _project(
        {
            "default": "local",
            "models": {
                "local": {"provider": "local"},
                "small": {
                    "provider": "openai",
                    "model": "text-embedding-3-small",
                    "dimensions": 512,
                },
            },
        },
        OPENAI,
    )
    registry = open_embedders(project)
    assert registry.names == ["local", "small"]
    small = registry.get("small")
    assert isinstance(small, OpenAIEmbedder)
    assert (small.name, small.dim, small.model) == (
        "openai/text-embedding-3-small@512",
        512,
        "text-embedding-3-small",
    )
    assert small.accepts_dimensions(256)  # sent upstream, which may shorten its vectors
    assert registry.get("small") is small  # built once
    assert isinstance(registry.get(), LocalEmbedder)


@pytest.mark.parametrize(
    ("embeddings", "key", "says"),
    [
        (
            {"models": {"small": {"provider": "openai", "model": "m", "dimensions": 8}}},
            "embeddings",
            "'default' is 'local'",
        ),
        ({"models": {"x": {"provider": "openai", "model": "m"}}}, "embeddings.models.x", "dim"),
        ({"models": {"x": {"provider": "openai", "dimensions": 8}}}, "embeddings.models.x", "mod"),
        ({"models": {"local": {"model": "bge-small"}}}, "embeddings.models.local", "omit"),
        ({"models": {"local": {"dimensions": 768}}}, "embeddings.models.local", "384"),
        ({"models": {"local": {"batch_size": 4096}}}, "embeddings.models.local.batch_size", ""),
        ({"models": {"local": {"provider": "local", "colour": 1}}}, "models.local.colour", ""),
        ({"default": "nope"}, "embeddings", "nope"),
        ({"default": "a b", "models": {"a b": {}}}, "embeddings", "'a b'"),
        ({"models": {}}, "embeddings.models", ""),
    ],
)
def test_mistakes_name_the_key(embeddings: dict[str, Any], key: str, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _project(embeddings, OPENAI)
    assert key in str(caught.value) and says in str(caught.value)


@pytest.mark.parametrize(
    "providers",
    [None, {"anthropic": {"type": "anthropic", "api_key": "k"}}],
)
def test_a_provider_must_be_local_or_an_openai_entry(providers: dict[str, Any] | None) -> None:
    name = "anthropic" if providers else "openai"
    with pytest.raises(ConfigError) as caught:  # when the project file loads, not later
        _project(
            {
                "default": "up",
                "models": {"up": {"provider": name, "model": "m", "dimensions": 8}},
            },
            providers,
        )
    message = str(caught.value)
    assert "embeddings.models.up.provider" in message and "type openai" in message


def test_an_unknown_name_lists_the_configured_ones() -> None:
    registry = EmbedderRegistry(EmbeddingsConfig(), {})
    with pytest.raises(ModelNotFound) as caught:
        registry.get("text-embedding-ada-002")
    assert caught.value.code == "model_not_found" and caught.value.http_status == 404
    assert "local" in str(caught.value)


async def test_names_sharing_the_local_model_share_one_embedder() -> None:
    project = _project({"models": {"local": {}, "minilm": {"provider": "local"}}})
    registry = open_embedders(project)
    assert registry.get("local") is registry.get("minilm")
    await registry.aclose()
    assert registry.get("local") is not None  # usable again after closing: built anew
