"""``ResponseCache``: serve identical requests from a cache of complete answers.

The key is the SHA-256 of the normalised request (messages, tools, tool choice, response
format and every sampling setting; dict keys sorted, integral floats written as integers; not
``stream``, ``user``, tags or the ``cache`` parameter itself), the model version (the route's
deployments: provider, model id and params) and the prompt version of the settings.

A request is looked up and stored when it asks (``settings.cache`` is a ``CacheRequest``), or
when the route has a ``cache`` config and the request is deterministic (temperature 0, or a
seed) or the config accepts non-deterministic ones; ``cache: false`` bypasses the cache. Only
complete answers (finish reason ``stop``, ``length`` or ``tool_calls``) are stored, with their
owner (the call's ``org_id`` and ``user_id``, so ``forget_user`` can delete them). A hit marks
``call.cache_hit`` and records an attempt ``<deployment>:cache_hit`` with the deployment that
first answered, so the call can be priced as a saving. A stream that hits is replayed as chunks;
a stream that misses is stored once it completes. With the route's ``cache.semantic``
(``SemanticCache``) an exact miss is then looked up by meaning, and the model's answer is
stored in both.

Identical misses in one process go to the model once (single flight): the others wait for the
first one's answer. A failing backend never fails a call: the call goes to the model and the
failure is logged at most once a minute (and the backend is left alone for a second).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Coroutine, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from elevenfactor.config import CacheConfig
from elevenfactor.models._assembler import StreamAssembler
from elevenfactor.models._backoff import COMPLETE, Backoff
from elevenfactor.models._cache_backends import CacheBackend, Owner
from elevenfactor.models._messages import (
    CacheRequest,
    Message,
    ModelSettings,
    Response,
    StreamChunk,
)
from elevenfactor.models._protocol import Attempt, Call, Model
from elevenfactor.models.providers.testing import response_to_chunks

if TYPE_CHECKING:
    from elevenfactor.models._semantic_cache import Probe, SemanticCache

__all__ = [
    "CacheDefaults",
    "ResponseCache",
    "StreamAssembler",
    "cache_key",
    "normalised",
    "owner_of",
]

logger = logging.getLogger("elevenfactor.cache")

_NOT_IN_KEY = {"user", "tags", "cache", "prompt_version"}
DEFAULT_TTL = 300


class CacheDefaults:
    """What a route's deployments do when a request leaves temperature or seed unset."""

    __slots__ = ("seeded", "temperature_zero")

    def __init__(self, *, temperature_zero: bool = False, seeded: bool = False) -> None:
        self.temperature_zero = temperature_zero
        self.seeded = seeded


def normalised(value: Any) -> Any:
    """``value`` with integral floats as integers and ``-0.0`` as ``0``, recursively, so equal
    numbers hash equally (``1`` and ``1.0`` in a schema or an extra parameter)."""
    if isinstance(value, float):
        return int(value) if value.is_integer() else value
    if isinstance(value, dict):
        return {str(k): normalised(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [normalised(v) for v in value]
    return value


def key_payload(
    messages: Sequence[Message], settings: ModelSettings, model_version: str
) -> dict[str, Any]:
    """What ``cache_key`` hashes (the semantic cache's namespace hashes it too)."""
    return {
        "messages": [m.model_dump(mode="json") for m in messages],
        "settings": settings.model_dump(mode="json", exclude=_NOT_IN_KEY),
        "model": model_version,
        "prompt": settings.prompt_version,
    }


def payload_hash(payload: Any) -> str:
    """The SHA-256 (hex) of ``payload`` normalised, keys sorted."""
    return hashlib.sha256(
        orjson.dumps(normalised(payload), option=orjson.OPT_SORT_KEYS)
    ).hexdigest()


def cache_key(messages: Sequence[Message], settings: ModelSettings, model_version: str) -> str:
    """The SHA-256 (hex) of the normalised request, the model version and the prompt version."""
    return payload_hash(key_payload(messages, settings, model_version))


class ResponseCache:
    """Cache the answers of ``inner`` (a route or a deployment) in ``backend``.

    ``config`` is the route's ``cache`` (None: only requests that ask are cached);
    ``model_version`` identifies what answers (see ``cache_key``); ``defaults`` says whether
    the deployments are deterministic when a request leaves temperature and seed unset;
    ``semantic`` (the route's ``cache.semantic``) is asked after an exact miss.
    """

    def __init__(
        self,
        inner: Model,
        backend: CacheBackend,
        *,
        config: CacheConfig | None = None,
        model_version: str = "",
        defaults: CacheDefaults | None = None,
        semantic: SemanticCache | None = None,
    ) -> None:
        self.inner = inner
        self.backend = backend
        self.config = config
        self.semantic = semantic
        self.model_version = model_version or inner.name
        self.defaults = defaults or CacheDefaults()
        self._inflight: dict[str, asyncio.Future[bytes | None]] = {}
        self.backoff = Backoff(
            logger,
            "cache_unavailable",
            "calls go to the model meanwhile; check REDIS_URL or the store",
        )

    @property
    def name(self) -> str:
        """The inner model's name."""
        return self.inner.name

    @property
    def context_window(self) -> int | None:
        """The inner model's context window."""
        return self.inner.context_window

    def ttl_for(self, settings: ModelSettings) -> int | None:
        """Seconds to keep this request's answer, or None when it is not cached."""
        asked = settings.cache
        if asked is False:
            return None
        if isinstance(asked, CacheRequest):
            return asked.ttl or (self.config.ttl if self.config else DEFAULT_TTL)
        if self.config is None:
            return None
        if self.config.nondeterministic or self.deterministic(settings):
            return self.config.ttl
        return None

    def deterministic(self, settings: ModelSettings) -> bool:
        """Temperature 0 (given or the deployments' default) or a seed (likewise)."""
        if settings.seed is not None or self.defaults.seeded:
            return True
        if settings.temperature is None:
            return self.defaults.temperature_zero
        return settings.temperature == 0

    # -- the Model protocol: a request that cannot be cached costs one function call -------------

    def request(
        self, messages: Sequence[Message], settings: ModelSettings, call: Call
    ) -> Coroutine[Any, Any, Response]:
        """Answer from the cache, or from the inner model (storing a complete answer)."""
        if settings.cache is None and self.config is None:
            return self.inner.request(messages, settings, call)
        ttl = self.ttl_for(settings)
        if ttl is None:
            return self.inner.request(messages, settings, call)
        return self._request(messages, settings, call, ttl)

    def request_stream(
        self, messages: Sequence[Message], settings: ModelSettings, call: Call
    ) -> AsyncIterator[StreamChunk]:
        """Replay a cached answer as chunks, or stream from the inner model and store the
        answer once the stream completes."""
        if settings.cache is None and self.config is None:
            return self.inner.request_stream(messages, settings, call)
        ttl = self.ttl_for(settings)
        if ttl is None:
            return self.inner.request_stream(messages, settings, call)
        return self._stream(messages, settings, call, ttl)

    # -- the cached paths -----------------------------------------------------------------------

    async def _request(
        self, messages: Sequence[Message], settings: ModelSettings, call: Call, ttl: int
    ) -> Response:
        key = cache_key(messages, settings, self.model_version)
        start = time.perf_counter()
        leader = await self._lookup(key)
        if isinstance(leader, _Entry):
            return self._hit(call, leader, start)
        probe, found = await self._similar(messages, settings, call, key, leader, start)
        if found is not None:
            return found
        if leader is None:  # not the first of identical misses, and the first one failed
            return await self.inner.request(messages, settings, call)
        stored: bytes | None = None
        try:
            response = await self.inner.request(messages, settings, call)
            stored = await self._store(key, response, call, ttl, probe)
            return response
        finally:
            self._release(key, leader, stored)

    async def _stream(
        self, messages: Sequence[Message], settings: ModelSettings, call: Call, ttl: int
    ) -> AsyncIterator[StreamChunk]:
        key = cache_key(messages, settings, self.model_version)
        start = time.perf_counter()
        leader = await self._lookup(key)
        if isinstance(leader, _Entry):
            for chunk in response_to_chunks(self._hit(call, leader, start)):
                yield chunk
            return
        probe, found = await self._similar(messages, settings, call, key, leader, start)
        if found is not None:
            for chunk in response_to_chunks(found):
                yield chunk
            return
        stream = aiter(self.inner.request_stream(messages, settings, call))
        assembler = StreamAssembler() if leader is not None else None
        stored: bytes | None = None
        try:
            async for chunk in stream:
                if assembler is not None:
                    assembler.add(chunk)
                yield chunk
            if assembler is not None and leader is not None:
                stored = await self._store(key, assembler.response(), call, ttl, probe)
        finally:
            closer = getattr(stream, "aclose", None)
            if closer is not None:
                await closer()
            if leader is not None:
                self._release(key, leader, stored)

    async def _lookup(self, key: str) -> _Entry | asyncio.Future[bytes | None] | None:
        """A cached answer; or this call's future when it is the first miss (it must call the
        model and ``_release``); or None when it waited for a first miss that stored nothing."""
        pending = self._inflight.get(key)
        if pending is not None:
            found = await asyncio.shield(pending)
            return _decode(found) if found is not None else None
        future: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        found = None
        if not self.backoff.down:
            try:
                found = await self.backend.get(key)
            except Exception as exc:  # a cache failure must never fail the call
                self.backoff.failed("get", exc)
            except BaseException:
                self._release(key, future, None)
                raise
        answer = _decode(found) if found is not None else None
        if answer is None:
            return future
        self._release(key, future, found)
        return answer

    async def _similar(
        self,
        messages: Sequence[Message],
        settings: ModelSettings,
        call: Call,
        key: str,
        leader: asyncio.Future[bytes | None] | None,
        start: float,
    ) -> tuple[Probe | None, Response | None]:
        """After an exact miss: the semantic cache's answer, if any, and its probe (to store
        the model's answer with). A semantic hit releases identical waiters empty-handed: the
        hit may be another scope's, so each of them looks up for itself."""
        if self.semantic is None:
            return None, None
        try:
            probe, found = await self.semantic.lookup(messages, settings, call, start)
        except BaseException:
            if leader is not None:
                self._release(key, leader, None)
            raise
        if found is not None and leader is not None:
            self._release(key, leader, None)
        return probe, found

    def _release(self, key: str, future: asyncio.Future[bytes | None], value: bytes | None) -> None:
        if self._inflight.get(key) is future:
            del self._inflight[key]
        if not future.done():
            future.set_result(value)

    async def _store(
        self, key: str, response: Response, call: Call, ttl: int, probe: Probe | None = None
    ) -> bytes | None:
        if response.finish_reason not in COMPLETE:
            return None
        if probe is not None and self.semantic is not None:
            await self.semantic.store(probe, response, call, ttl)
        final = call.final
        value = orjson.dumps(
            {
                "response": response.model_dump(mode="json"),
                "deployment": final.deployment if final else self.inner.name,
                "provider": final.provider if final else "",
                "model": final.model if final else response.model,
            }
        )
        if self.backoff.down:
            return value
        try:
            model = final.deployment if final else self.name
            await self.backend.put(key, value, ttl, model, owner_of(call))
        except Exception as exc:  # a cache failure must never fail the call
            self.backoff.failed("put", exc)
        return value

    def _hit(self, call: Call, entry: _Entry, start: float) -> Response:
        call.cache_hit = True
        call.attempts.append(
            Attempt(
                entry.deployment,
                entry.provider,
                entry.model,
                "cache_hit",
                (time.perf_counter() - start) * 1000,
            )
        )
        return entry.response


@dataclass(frozen=True, slots=True)
class _Entry:
    """A cached answer and the deployment that first gave it."""

    response: Response
    deployment: str
    provider: str
    model: str


def owner_of(call: Call) -> Owner | None:
    """Whose call stored an entry: ``(org_id, user_id)``, or None when either is unknown."""
    return (call.org_id, call.user_id) if call.org_id and call.user_id else None


def _decode(value: bytes) -> _Entry | None:
    try:
        data = orjson.loads(value)
        return _Entry(
            Response.model_validate(data["response"]),
            str(data.get("deployment") or ""),
            str(data.get("provider") or ""),
            str(data.get("model") or ""),
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None  # an entry of another version, or corrupted: a miss
