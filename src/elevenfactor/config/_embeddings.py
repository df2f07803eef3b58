"""The project file's ``embeddings:``: named embedding models (the bundled all-MiniLM-L6-v2 and
OpenAI-compatible ``/v1/embeddings`` upstreams) and the default one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Literal

from pydantic import Field, model_validator

from elevenfactor.config._models import ProviderConfig, _Strict

__all__ = ["LOCAL_PROVIDER", "EmbeddingModelConfig", "EmbeddingPriceConfig", "EmbeddingsConfig"]

LOCAL_PROVIDER = "local"
"""The ``provider`` of the bundled all-MiniLM-L6-v2 (no ``providers:`` entry needed)."""

LOCAL_MODEL = "all-MiniLM-L6-v2"

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")


class EmbeddingPriceConfig(_Strict):
    """What an embedding model costs, in currency units (USD) per million input tokens and per
    request (embeddings have no output tokens). A change is a new price version; old call
    records keep theirs."""

    input_per_mtok: float = Field(ge=0, description="Price per million input tokens.")
    per_request: float = Field(default=0.0, ge=0, description="Fixed price of each request.")


class EmbeddingModelConfig(_Strict):
    """One embedding model: the bundled local one (``provider: local``) or a model behind an
    OpenAI-compatible ``/v1/embeddings`` endpoint (``provider`` names a ``providers:`` entry of
    type ``openai``, whose base URL and API key it uses).

    ```yaml
    embeddings:
      models:
        local: {provider: local}
        small: {provider: openai, model: text-embedding-3-small, dimensions: 512,
                price: {input_per_mtok: 0.02}}
    ```
    """

    provider: str = Field(
        default=LOCAL_PROVIDER,
        description="`local` (the bundled all-MiniLM-L6-v2, 384 dimensions, runs in-process),"
        " or the name of a `providers:` entry of type `openai`.",
    )
    model: str | None = Field(
        default=None,
        min_length=1,
        description="The model id at the provider (required for an upstream); for `local`"
        " only `all-MiniLM-L6-v2` (or nothing).",
    )
    dimensions: int | None = Field(
        default=None,
        gt=0,
        le=65536,
        description="The vectors' size. Required for an upstream: every answer is checked"
        " against it. For `local` only 384 (or nothing).",
    )
    runtime: Literal["auto", "numpy", "onnx"] = Field(
        default="auto",
        description="`local` only: what runs the model. `onnx`: onnxruntime (two to three"
        " times as fast as numpy; the model file is built from the weights on first use and"
        " cached under `$XDG_CACHE_HOME/elevenfactor/embeddings`); `numpy`: plain numpy;"
        " `auto`: onnxruntime when it can be imported, else numpy. Both make the same vectors"
        " (cosine 0.99999), so an index built with one is queried with the other.",
    )
    quantize: Literal["int8"] | None = Field(
        default=None,
        description="`local` only: `int8` runs the dense products in int8 on onnxruntime (about"
        " twice as fast again on 200-token chunks, on CPUs with VNNI) at a cosine of about 0.99"
        " to the float32 vectors. Other vectors, so another embedder name"
        " (`local/all-MiniLM-L6-v2@int8`): an index built with one is rebuilt, not queried,"
        " with the other. Unset: float32.",
    )
    send_dimensions: bool = Field(
        default=True,
        description="Send `dimensions` with each upstream request (models that can shorten"
        " their vectors, like text-embedding-3-*, accept it; a request to `/v1/embeddings` may"
        " then ask for another size); false for models that refuse the parameter.",
    )
    batch_size: int = Field(
        default=2048,
        ge=1,
        le=2048,
        description="Most inputs per upstream request (OpenAI's limit is 2048); longer lists"
        " are sent in several requests.",
    )
    timeout: float = Field(
        default=60.0, gt=0, description="Seconds each upstream request may take."
    )
    price: EmbeddingPriceConfig | None = Field(
        default=None,
        description="What `POST /v1/embeddings` calls of this model cost (budgets hold and"
        " charge it; cost reports show it). Unset: free for `local`; unpriced for an upstream"
        " (cost unknown: it counts 0 toward budgets and as `unpriced` in cost reports).",
    )

    @model_validator(mode="after")
    def _shape(self) -> EmbeddingModelConfig:
        if self.provider == LOCAL_PROVIDER:
            if self.model not in (None, LOCAL_MODEL):
                raise ValueError(f"the local embedder is {LOCAL_MODEL!r}; omit 'model'")
            if self.dimensions not in (None, 384):
                raise ValueError("the local embedder has 384 dimensions; omit 'dimensions'")
            if self.quantize is not None and self.runtime == "numpy":
                raise ValueError("'quantize: int8' runs on onnxruntime: use runtime onnx or auto")
        else:
            if self.runtime != "auto" or self.quantize is not None:
                raise ValueError("'runtime' and 'quantize' are settings of the local embedder")
            if self.model is None:
                raise ValueError("an upstream embedder needs 'model' (the model id)")
            if self.dimensions is None:
                raise ValueError(
                    "an upstream embedder needs 'dimensions' (the vectors' size, e.g. 1536)"
                )
        return self


def _default_models() -> dict[str, EmbeddingModelConfig]:
    return {"local": EmbeddingModelConfig()}


class EmbeddingsConfig(_Strict):
    """Embedding models for retrieval, the semantic cache, long-term memory and
    ``POST /v1/embeddings`` (where ``model`` names one of them). With no ``embeddings:`` key the
    bundled all-MiniLM-L6-v2 is the one model, ``local``. A ``models:`` mapping replaces that
    default: list ``local: {provider: local}`` in it to keep the local one.

    ```yaml
    providers:
      openai: {type: openai, api_key: "${OPENAI_API_KEY}"}
    embeddings:
      default: local
      models:
        local: {provider: local}
        small: {provider: openai, model: text-embedding-3-small, dimensions: 512}
    ```
    """

    default: str = Field(
        default="local",
        description="The model used when none is named (a name under `embeddings.models`).",
    )
    models: dict[str, EmbeddingModelConfig] = Field(
        default_factory=_default_models,
        min_length=1,
        description="Embedding models by name (1-64 characters of A-Z a-z 0-9 . _ : -, starting"
        " with a letter or digit): what a request's `model` names.",
    )

    @model_validator(mode="after")
    def _names(self) -> EmbeddingsConfig:
        for name in self.models:
            if not _NAME.match(name):
                raise ValueError(
                    f"the model name {name!r} under 'models' is not 1-64 characters of"
                    " A-Z a-z 0-9 . _ : - starting with a letter or digit"
                )
        if self.default not in self.models:
            raise ValueError(
                f"'default' is {self.default!r}, which is not under 'models' (one of: "
                + ", ".join(sorted(self.models))
                + ")"
            )
        return self

    def unknown_reference(
        self, providers: Mapping[str, ProviderConfig]
    ) -> tuple[str, str, list[str], str] | None:
        """The first ``provider`` that is neither ``local`` nor a ``providers:`` entry of type
        ``openai``, as (key, name, known names, what was expected), or None."""
        usable = sorted(n for n, p in providers.items() if p.type == "openai")
        for name, model in self.models.items():
            if model.provider != LOCAL_PROVIDER and model.provider not in usable:
                expected = "'local' or a providers: entry of type openai" + (
                    " (" + ", ".join(usable) + ")" if usable else " (none is defined)"
                )
                return f"embeddings.models.{name}.provider", model.provider, usable, expected
        return None
