"""``SemanticCache``: serve a request with the answer to a paraphrase of its last user message.

``ResponseCache`` asks it after an exact miss, for a request the route caches anyway (the same
ttl rules). It applies when the conversation ends with a user message with text and the call
says on whose behalf it is made (``call.org_id``, and ``call.user_id`` in ``user`` scope).

The *namespace* is the SHA-256 of everything in the exact cache key except that message's text
(the system prompt, earlier turns, the message's ``name``, tools, every setting, the model and
prompt versions), the embedder's name and the scope (the organisation, or the organisation and
the user): only requests identical but for the last question share answers. The question is
embedded (off the event loop: embedders run in a worker thread or upstream) and the most
similar live answer of the namespace is served when its cosine similarity is at least the
threshold. A hit marks ``call.cache_hit`` and records an attempt ``<deployment>:semantic_hit``
with its ``similarity`` (``Call.path`` shows it, e.g. ``m:semantic_hit@0.9731``). A miss keeps
its vector in a ``Probe``; the model's complete answer is stored with it for the request's ttl.

A failure of the embedder or the store (or a lookup slower than ``timeout``) never fails the
call: it goes to the model, the failure is logged at most once a minute, and the semantic cache
is left alone for a second.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt
import orjson

from elevenfactor.config import CacheConfig, SemanticCacheConfig
from elevenfactor.errors import ConfigError, ElevenFactorError
from elevenfactor.models._backoff import COMPLETE, Backoff
from elevenfactor.models._cache import key_payload, payload_hash
from elevenfactor.models._messages import Message, ModelSettings, Response, UserMessage
from elevenfactor.models._protocol import Attempt, Call
from elevenfactor.models._semantic_index import SemanticIndex

__all__ = [
    "Embedders",
    "Probe",
    "SemanticCache",
    "TextEmbedder",
    "build_semantic",
    "last_user_text",
    "semantic_namespace",
    "semantic_scope",
]

logger = logging.getLogger("elevenfactor.cache")


class TextEmbedder(Protocol):
    """What the semantic cache needs of an embedder (``elevenfactor.context.Embedder``)."""

    @property
    def name(self) -> str:
        """A stable id of the model and its settings."""
        ...

    async def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """One L2-normalised row per text."""
        ...


class Embedders(Protocol):
    """Named embedders (``elevenfactor.context.EmbedderRegistry``)."""

    def get(self, name: str | None = None) -> TextEmbedder:
        """The embedder called ``name`` (the default when None)."""
        ...


@dataclass(frozen=True, slots=True)
class Probe:
    """A request that missed: where its answer goes and the vector to find it by."""

    namespace: str
    vector: npt.NDArray[np.float32]
    query_hash: str
    org_id: str
    user_id: str


def last_user_text(messages: Sequence[Message]) -> str | None:
    """The text of the last message if it is a user message with text, else None."""
    last = messages[-1] if messages else None
    if isinstance(last, UserMessage) and last.content.strip():
        return last.content
    return None


def semantic_scope(scope: str, call: Call) -> tuple[str, ...] | None:
    """Who may share answers with this call: ``(org_id,)`` in ``org`` scope, ``(org_id,
    user_id)`` in ``user`` scope; None when the call does not say (no semantic cache)."""
    if not call.org_id:
        return None
    if scope == "org":
        return (call.org_id,)
    return (call.org_id, call.user_id) if call.user_id else None


def semantic_namespace(
    messages: Sequence[Message],
    settings: ModelSettings,
    model_version: str,
    *,
    embedder: str,
    scope: Sequence[str],
) -> str:
    """The SHA-256 (hex) of the exact cache key's contents without the last message's text,
    with ``embedder`` (its name) and ``scope`` (``semantic_scope``)."""
    payload = key_payload(messages[:-1], settings, model_version)
    payload["last"] = messages[-1].model_dump(mode="json", exclude={"content"}) if messages else {}
    payload["embedder"] = embedder
    payload["scope"] = list(scope)
    return payload_hash(payload)


class SemanticCache:
    """The semantic cache of one route: ``config`` (``routes.NAME.cache.semantic``), the
    ``embedder`` it names, the ``index`` of stored answers (shared by a registry's routes) and
    the route's ``model_version`` (see ``cache_key``)."""

    def __init__(
        self,
        config: SemanticCacheConfig,
        embedder: TextEmbedder,
        index: SemanticIndex,
        *,
        model_version: str,
        route: str = "",
    ) -> None:
        self.config = config
        self.embedder = embedder
        self.index = index
        self.model_version = model_version
        self.route = route
        self.backoff = Backoff(
            logger,
            "semantic_cache_unavailable",
            "calls go to the model meanwhile; check the embedder and the store",
            route=route,
        )

    async def lookup(
        self, messages: Sequence[Message], settings: ModelSettings, call: Call, start: float
    ) -> tuple[Probe | None, Response | None]:
        """The answer to a close enough question (recorded on ``call``) if there is one, and
        the probe to store the model's answer with (None when this request does not apply or
        the lookup failed). ``start`` is when the call's cache lookup began (``perf_counter``)."""
        text = last_user_text(messages)
        scope = semantic_scope(self.config.scope, call)
        if text is None or scope is None or self.backoff.down:
            return None, None
        try:
            async with asyncio.timeout(self.config.timeout):
                vector = await self._embed(text)
                namespace = semantic_namespace(
                    messages, settings, self.model_version,
                    embedder=self.embedder.name, scope=scope,
                )  # fmt: skip
                probe = Probe(
                    namespace,
                    vector,
                    hashlib.sha256(text.encode()).hexdigest(),
                    call.org_id,
                    call.user_id,
                )
                found = await self.index.search(namespace, vector, self.config.threshold)
                response = Response.model_validate_json(found.response) if found else None
        except Exception as exc:  # the cache must never fail the call
            self.backoff.failed("lookup", exc)
            return None, None
        if found is None or response is None:
            return probe, None
        call.cache_hit = True
        call.attempts.append(
            Attempt(
                found.deployment,
                found.provider,
                found.model,
                "semantic_hit",
                (time.perf_counter() - start) * 1000,
                similarity=round(found.similarity, 4),
            )
        )
        return probe, response

    async def store(self, probe: Probe, response: Response, call: Call, ttl: int) -> None:
        """Keep a complete answer for ``ttl`` seconds under the probe's namespace."""
        if response.finish_reason not in COMPLETE or self.backoff.down:
            return
        final = call.final
        answer = (
            orjson.dumps(response.model_dump(mode="json")).decode(),
            final.deployment if final else self.route,
            final.provider if final else "",
            final.model if final else response.model,
        )
        try:
            async with asyncio.timeout(self.config.timeout):
                await self.index.add(
                    probe.namespace,
                    (probe.org_id, probe.user_id),
                    probe.vector,
                    probe.query_hash,
                    answer,
                    ttl,
                    self.config.max_entries,
                )
        except Exception as exc:  # the cache must never fail the call
            self.backoff.failed("put", exc)

    async def _embed(self, text: str) -> npt.NDArray[np.float32]:
        rows = await self.embedder.embed([text])
        vector = np.asarray(rows, dtype=np.float32).reshape(-1)
        norm = float(np.linalg.norm(vector))
        if not vector.size or not np.isfinite(norm) or norm == 0.0:
            raise ValueError(f"{self.embedder.name} returned no usable vector")
        return vector / norm


def build_semantic(
    route: str,
    config: CacheConfig | None,
    model_version: str,
    index: SemanticIndex | None,
    embedders: Embedders | None,
) -> SemanticCache | None:
    """The route's semantic cache, if its ``cache.semantic`` asks for one and there is an
    ``index`` (a store); ``ConfigError`` naming the key when its embedder is not available."""
    if config is None or config.semantic is None or index is None:
        return None
    key = f"routes.{route}.cache.semantic.embedder"
    if embedders is None:
        raise ConfigError(
            "the semantic cache needs an embedder and none is available",
            key=key,
            hint="open the project's embedders (open_embedders) and pass them to the registry",
        )
    try:
        embedder = embedders.get(config.semantic.embedder)
    except ElevenFactorError as exc:
        raise ConfigError(
            f"the semantic cache's embedder is not available: {exc.message}",
            key=key,
            expected="a name under embeddings.models, or null for embeddings.default",
        ) from None
    return SemanticCache(config.semantic, embedder, index, model_version=model_version, route=route)
