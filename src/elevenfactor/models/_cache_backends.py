"""Where the response cache keeps its answers: Redis, the store, or process memory.

All three implement ``CacheBackend``: ``get`` a live entry by key, ``put`` one with a time to
live. Entries are opaque bytes (the cache wrapper encodes them). A backend may raise on any
failure; the wrapper never lets that fail a call.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from elevenfactor.config import Settings
from elevenfactor.store import Executor, Store

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = [
    "CacheBackend",
    "MemoryCache",
    "RedisCache",
    "StoreCache",
    "open_response_cache",
    "purge_expired",
]

DEFAULT_PREFIX = "elevenfactor:cache:"


class CacheBackend(Protocol):
    """A key-value store of cached answers with expiry."""

    async def get(self, key: str) -> bytes | None:
        """The live entry under ``key``, or None (absent or expired)."""
        ...

    async def put(self, key: str, value: bytes, ttl: int, model: str) -> None:
        """Keep ``value`` under ``key`` for ``ttl`` seconds (``model``: who answered)."""
        ...

    async def aclose(self) -> None:
        """Release connections (not the store, which the caller owns)."""
        ...


class MemoryCache:
    """In-process entries, least recently used evicted past ``max_entries``. For the library
    and tests; nothing is shared between processes."""

    def __init__(
        self, max_entries: int = 10_000, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    async def get(self, key: str) -> bytes | None:
        """The entry if it has not expired (an expired one is dropped)."""
        found = self._entries.get(key)
        if found is None:
            return None
        if found[0] <= self._clock():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return found[1]

    async def put(self, key: str, value: bytes, ttl: int, model: str) -> None:
        """Keep the entry, evicting the least recently used ones past the limit."""
        self._entries[key] = (self._clock() + ttl, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    async def aclose(self) -> None:
        """Forget everything."""
        self._entries.clear()


_GET = (
    "UPDATE response_cache SET hits = hits + 1 WHERE key = ? AND expires_at > ? RETURNING response"
)
_PUT = (
    "INSERT INTO response_cache (key, response, model, created_at, expires_at, hits)"
    " VALUES (?, ?, ?, ?, ?, 0) ON CONFLICT (key) DO UPDATE SET response = excluded.response,"
    " model = excluded.model, created_at = excluded.created_at,"
    " expires_at = excluded.expires_at, hits = 0"
)


async def purge_expired(db: Executor, now: float | None = None) -> int:
    """Delete every expired ``response_cache`` row; return how many went."""
    return await db.execute(
        "DELETE FROM response_cache WHERE expires_at <= ?", (time.time() if now is None else now,)
    )


class StoreCache:
    """Entries in the store's ``response_cache`` table (migration ``m008_cache``).

    A read counts a hit in the same statement. Expired rows are never served; a write over one
    replaces it, and every ``purge_every`` seconds a write also purges all expired rows.
    """

    def __init__(self, store: Store, *, purge_every: float = 60.0) -> None:
        self.store = store
        self.purge_every = purge_every
        self._next_purge = time.monotonic() + purge_every

    async def get(self, key: str) -> bytes | None:
        """The live entry (its hit counted), or None."""
        rows = await self.store.fetchall(_GET, (key, time.time()))
        if not rows:
            return None
        value = rows[0][0]
        return value.encode() if isinstance(value, str) else bytes(value)

    async def put(self, key: str, value: bytes, ttl: int, model: str) -> None:
        """Insert or replace the entry; purge expired rows now and then."""
        now = time.time()
        await self.store.execute(_PUT, (key, value.decode(), model, now, now + ttl))
        if time.monotonic() >= self._next_purge:
            self._next_purge = time.monotonic() + self.purge_every
            await purge_expired(self.store, now)

    async def aclose(self) -> None:
        """Nothing to release: the store belongs to the caller."""


class RedisCache:
    """Entries in Redis as ``SET prefix+key value EX ttl``: shared by every process."""

    def __init__(self, client: Redis, *, prefix: str = DEFAULT_PREFIX) -> None:
        self.client = client
        self.prefix = prefix

    @classmethod
    def from_url(
        cls, url: str, *, prefix: str = DEFAULT_PREFIX, timeout: float = 0.5
    ) -> RedisCache:
        """A client for ``url`` (no connection yet) whose operations give up after
        ``timeout`` seconds, so a hung Redis slows no call for longer."""
        from redis.asyncio import Redis

        client = Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        return cls(client, prefix=prefix)

    async def get(self, key: str) -> bytes | None:
        """``GET``: Redis expires entries itself."""
        value = await self.client.get(self.prefix + key)
        if value is None:
            return None
        return value.encode() if isinstance(value, str) else bytes(value)

    async def put(self, key: str, value: bytes, ttl: int, model: str) -> None:
        """``SET ... EX ttl``."""
        await self.client.set(self.prefix + key, value, ex=ttl)

    async def aclose(self) -> None:
        """Close the client's connections."""
        await self.client.aclose()


def open_response_cache(settings: Settings, store: Store | None) -> CacheBackend:
    """The backend for a deployment: Redis when ``REDIS_URL`` is set (keys
    ``<ELEVENFACTOR_REDIS_PREFIX>cache:<sha256>``), else the store (else process memory, for a
    library user without a store). Opens no connection."""
    if settings.redis_url:
        return RedisCache.from_url(settings.redis_url, prefix=f"{settings.redis_prefix}cache:")
    if store is not None:
        return StoreCache(store)
    return MemoryCache()
