"""``OpenAIEmbedder``: a model behind an OpenAI-compatible ``POST {base_url}/embeddings``.

The base URL, API key and extra headers come from the project's ``providers:`` entry (as for
chat deployments), through the same pooled HTTP client. Long input lists are sent in requests of
at most ``batch_size`` inputs; each request has ``timeout`` seconds. Every answer is checked (one
vector per input, by index, of the configured size, finite, not zero) and its rows normalised;
an upstream failure is the ``ModelError`` the chat providers raise for it (rate limit, server
error, timeout, connection, bad request, credentials, malformed answer).
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Sequence
from typing import Any, NoReturn

import numpy as np

from elevenfactor.config import ProviderConfig
from elevenfactor.config._embeddings import EmbeddingModelConfig
from elevenfactor.context._embedder import Embedding
from elevenfactor.errors import ContextError, MalformedResponse, ModelTimeout
from elevenfactor.models.providers._http import HttpClient

__all__ = ["OpenAIEmbedder"]

DEFAULT_BASE_URL = "https://api.openai.com/v1"


class OpenAIEmbedder:
    """Embeddings from an OpenAI-compatible upstream (OpenAI, vLLM, llama.cpp, another
    elevenfactor gateway, ...)."""

    def __init__(
        self,
        label: str,
        config: EmbeddingModelConfig,
        provider: ProviderConfig,
        http: HttpClient | None = None,
    ) -> None:
        if config.model is None or config.dimensions is None:
            raise ValueError("an upstream embedder needs 'model' and 'dimensions'")
        self._label = label
        self._model = config.model
        self._dim = config.dimensions
        self._send_dimensions = config.send_dimensions
        self._batch_size = config.batch_size
        self._timeout = config.timeout
        if http is None:
            headers = dict(provider.headers)
            if provider.api_key is not None:
                headers["Authorization"] = f"Bearer {provider.api_key.get_secret_value()}"
            http = HttpClient(provider.base_url or DEFAULT_BASE_URL, headers)
        self.http = http

    @property
    def name(self) -> str:
        """``openai/<model id>@<dimensions>``: the vector space, whichever provider serves it."""
        return f"openai/{self._model}@{self._dim}"

    @property
    def dim(self) -> int:
        """The configured ``dimensions``."""
        return self._dim

    @property
    def model(self) -> str:
        """The model id at the upstream."""
        return self._model

    def accepts_dimensions(self, dimensions: int) -> bool:
        """Whether a request may ask for vectors of that size: any size when ``dimensions`` is
        sent upstream (the upstream decides), else only the configured one."""
        return self._send_dimensions or dimensions == self._dim

    async def embed(self, texts: Sequence[str]) -> Embedding:
        """One L2-normalised row per text, in order."""
        vectors, _ = await self.embed_with_usage(texts)
        return vectors

    async def embed_with_usage(
        self, texts: Sequence[str], dimensions: int | None = None
    ) -> tuple[Embedding, int]:
        """The vectors and the prompt tokens the upstream reported (0 if it reported none)."""
        if isinstance(texts, str):
            raise TypeError("embed takes a sequence of strings, not one string: embed([text])")
        items = list(texts)
        size = self._dim if dimensions is None else dimensions
        if not self.accepts_dimensions(size):
            raise ContextError(
                f"{self._label} makes {self._dim}-dimensional vectors, not {size}",
                hint="omit 'dimensions', or set send_dimensions for a model that accepts it",
            )
        out = np.empty((len(items), size), np.float32)
        tokens = 0
        for start in range(0, len(items), self._batch_size):
            batch = items[start : start + self._batch_size]
            out[start : start + len(batch)], used = await self._request(batch, size)
            tokens += used
        return out, tokens

    async def _request(self, batch: list[str], size: int) -> tuple[Embedding, int]:
        payload: dict[str, Any] = {
            "model": self._model,
            "input": batch,
            "encoding_format": "float",
        }
        if self._send_dimensions:
            payload["dimensions"] = size
        try:
            async with asyncio.timeout(self._timeout):
                answer = await self.http.post_json("/embeddings", payload, self._label)
        except TimeoutError:
            raise ModelTimeout(
                f"{self._label}: no embeddings within {self._timeout:g}s",
                deployment=self._label,
                hint="raise the embedder's timeout or lower its batch_size",
            ) from None
        return self._parse(answer, len(batch), size)

    def _parse(self, answer: Any, count: int, size: int) -> tuple[Embedding, int]:
        data = answer.get("data") if isinstance(answer, dict) else None
        if not isinstance(data, list) or len(data) != count:
            got = len(data) if isinstance(data, list) else "no"
            self._malformed(f"{got} embeddings for {count} inputs")
        out = np.full((count, size), np.nan, np.float32)
        seen = np.zeros(count, bool)
        for item in data:
            index = item.get("index") if isinstance(item, dict) else None
            if type(index) is not int or not 0 <= index < count or seen[index]:
                self._malformed(f"an embedding with index {index!r}")
            row = _vector(item.get("embedding"))
            if row is None or row.shape != (size,):
                shape = "no vector" if row is None else f"{row.shape[0]} dimensions"
                self._malformed(f"{shape} where {size} were expected", hint_dim=True)
            out[index], seen[index] = row, True
        norms = np.sqrt(np.einsum("ij,ij->i", out, out))
        if not np.all(np.isfinite(norms)) or np.any(norms == 0):
            self._malformed("a vector that is zero or not finite")
        out /= norms[:, None]
        usage = answer.get("usage")
        tokens = usage.get("prompt_tokens") if isinstance(usage, dict) else None
        return out, tokens if type(tokens) is int and tokens >= 0 else 0

    def _malformed(self, what: str, hint_dim: bool = False) -> NoReturn:
        raise MalformedResponse(
            f"{self._label}: the upstream answered {what}",
            deployment=self._label,
            hint="set the embedder's 'dimensions' to the model's vector size" if hint_dim else None,
        )

    async def aclose(self) -> None:
        """Close pooled connections."""
        await self.http.aclose()


def _vector(value: Any) -> np.ndarray[Any, np.dtype[np.float32]] | None:
    """A list of numbers, or base64 of little-endian float32 (what some servers send)."""
    try:
        if isinstance(value, list):
            if not all(type(v) in (int, float) for v in value):
                return None
            with np.errstate(over="ignore"):  # a huge number becomes inf, refused below
                return np.asarray(value, np.float32)
        if isinstance(value, str):
            raw = base64.b64decode(value, validate=True)
            if len(raw) % 4:
                return None
            return np.frombuffer(raw, "<f4").astype(np.float32)
    except (ValueError, OverflowError):
        return None
    return None
