"""Where the response cache keeps its answers: Redis, the store, or process memory.

All three implement ``CacheBackend``: ``get`` a live entry by key, ``put`` one with a time to
live and its owner, ``forget`` an owner's entries. Entries are opaque bytes (the cache wrapper
encodes them). A backend may raise on any failure; the wrapper never lets that fail a call.

The owner of an entry is the ``(org_id, user_id)`` whose call stored it (None: unknown), so a
privacy request (``forget_user``) can delete every answer to that user's requests. Keys do not
name users (identical requests share an entry), so the last writer owns an entry: a put by
another user (or by an unknown one) takes it over, and overwrites the earlier answer with its
own (to the same request).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, TypeAlias, cast

from elevenfactor.config import Settings
from elevenfactor.store import Executor, Store

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = [
    "CacheBackend",
    "MemoryCache",
    "Owner",
    "RedisCache",
    "StoreCache",
    "forget_owner",
    "open_response_cache",
    "purge_expired",
]

DEFAULT_PREFIX = "elevenfactor:cache:"

Owner: TypeAlias = tuple[str, str]
"""``(org_id, user_id)``: on whose behalf an entry was stored."""


class CacheBackend(Protocol):
    """A key-value store of cached answers with expiry."""

    async def get(self, key: str) -> bytes | None:
        """The live entry under ``key``, or None (absent or expired)."""
        ...

    async def put(
        self, key: str, value: bytes, ttl: int, model: str, owner: Owner | None = None
    ) -> None:
        """Keep ``value`` under ``key`` for ``ttl`` seconds (``model``: who answered;
        ``owner``: whose call it answered, None when unknown). The last writer owns the entry."""
        ...

    async def forget(self, org_id: str, user_id: str) -> int:
        """Delete every entry ``(org_id, user_id)`` owns; return how many went."""
        ...

    async def aclose(self) -> None:
        """Release connections (not the store, which the caller owns)."""
        ...


class MemoryCache:
    """In-process entries, least recently used evicted past ``max_entries``. For the library
    and tests; nothing is shared between processes. Each owner's keys are indexed."""

    def __init__(
        self, max_entries: int = 10_000, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, bytes, Owner | None]] = OrderedDict()
        self._owned: dict[Owner, set[str]] = {}

    async def get(self, key: str) -> bytes | None:
        """The entry if it has not expired (an expired one is dropped)."""
        found = self._entries.get(key)
        if found is None:
            return None
        if found[0] <= self._clock():
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return found[1]

    async def put(
        self, key: str, value: bytes, ttl: int, model: str, owner: Owner | None = None
    ) -> None:
        """Keep the entry (``owner`` now owns it), evicting the least recently used ones past
        the limit."""
        self._drop(key)
        self._entries[key] = (self._clock() + ttl, value, owner)
        if owner is not None:
            self._owned.setdefault(owner, set()).add(key)
        while len(self._entries) > self.max_entries:
            self._drop(next(iter(self._entries)))

    async def forget(self, org_id: str, user_id: str) -> int:
        """Drop the owner's entries (expired ones too); return how many there were."""
        keys = self._owned.pop((org_id, user_id), set())
        for key in keys:
            del self._entries[key]
        return len(keys)

    def _drop(self, key: str) -> None:
        found = self._entries.pop(key, None)
        if found is not None and found[2] is not None:
            keys = self._owned.get(found[2])
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._owned[found[2]]

    async def aclose(self) -> None:
        """Forget everything."""
        self._entries.clear()
        self._owned.clear()


_GET = (
    "UPDATE response_cache SET hits = hits + 1 WHERE key = ? AND expires_at > ? RETURNING response"
)
_PUT = (
    "INSERT INTO response_cache"
    " (key, response, model, created_at, expires_at, hits, org_id, user_id)"
    " VALUES (?, ?, ?, ?, ?, 0, ?, ?) ON CONFLICT (key) DO UPDATE SET"
    " response = excluded.response, model = excluded.model, created_at = excluded.created_at,"
    " expires_at = excluded.expires_at, hits = 0, org_id = excluded.org_id,"
    " user_id = excluded.user_id"
)


async def purge_expired(db: Executor, now: float | None = None) -> int:
    """Delete every expired ``response_cache`` row; return how many went."""
    return await db.execute(
        "DELETE FROM response_cache WHERE expires_at <= ?", (time.time() if now is None else now,)
    )


async def forget_owner(db: Executor, org_id: str, user_id: str) -> int:
    """Delete every ``response_cache`` row ``(org_id, user_id)`` owns, expired or not; return
    how many went (``forget_user`` runs it in its transaction)."""
    return await db.execute(
        "DELETE FROM response_cache WHERE org_id = ? AND user_id = ?", (org_id, user_id)
    )


class StoreCache:
    """Entries in the store's ``response_cache`` table (migrations ``m008_cache``; the owner's
    ``org_id`` and ``user_id`` columns, NULL when unknown: ``m015_semantic_cache``).

    A read counts a hit in the same statement. Expired rows are never served; a write over one
    replaces it (owner included), and every ``purge_every`` seconds a write also purges all
    expired rows.
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

    async def put(
        self, key: str, value: bytes, ttl: int, model: str, owner: Owner | None = None
    ) -> None:
        """Insert or replace the entry and its owner; purge expired rows now and then."""
        now = time.time()
        org, user = owner if owner is not None else (None, None)
        await self.store.execute(_PUT, (key, value.decode(), model, now, now + ttl, org, user))
        if time.monotonic() >= self._next_purge:
            self._next_purge = time.monotonic() + self.purge_every
            await purge_expired(self.store, now)

    async def forget(self, org_id: str, user_id: str) -> int:
        """Delete the owner's rows (``forget_owner``)."""
        return await forget_owner(self.store, org_id, user_id)

    async def aclose(self) -> None:
        """Nothing to release: the store belongs to the caller."""


# One round trip, atomic, on Redis's clock: the entry, and its key in the owner's index scored
# by when the entry expires; index members of expired entries are trimmed, and the index lives
# as long as its longest-lived entry.
_PUT_OWNED = """
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
local now = tonumber(redis.call('TIME')[1])
local ttl = tonumber(ARGV[2])
redis.call('ZADD', KEYS[2], now + ttl, ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. now)
if redis.call('TTL', KEYS[2]) < ttl then redis.call('EXPIRE', KEYS[2], ttl) end
return 1
"""
FORGET_BATCH = 500
_Members: TypeAlias = list[bytes | str]  # ZRANGE without scores


class RedisCache:
    """Entries in Redis as ``SET prefix+key value EX ttl``: shared by every process.

    An owned entry's key is also in its owner's index, the sorted set
    ``prefix + "owner:" + org_id + ":" + user_id`` (scored by expiry on Redis's clock, so
    Redis 5 or later; organisation ids hold no ``:``), written by the same script as the entry
    and living as long as the owner's longest-lived entry. An index may still name an entry
    another user has since taken over; forgetting deletes it too (a miss for the other user,
    never a leak). Entries written before owners were recorded are in no index: they go with
    their ttl.
    """

    def __init__(self, client: Redis, *, prefix: str = DEFAULT_PREFIX) -> None:
        self.client = client
        self.prefix = prefix
        self._put_owned = client.register_script(_PUT_OWNED)

    @classmethod
    def from_url(
        cls, url: str, *, prefix: str = DEFAULT_PREFIX, timeout: float = 0.5
    ) -> RedisCache:
        """A client for ``url`` (no connection yet) whose operations give up after
        ``timeout`` seconds, so a hung Redis slows no call for longer."""
        from redis.asyncio import Redis

        client = Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        return cls(client, prefix=prefix)

    def owner_key(self, org_id: str, user_id: str) -> str:
        """The Redis key of an owner's index."""
        return f"{self.prefix}owner:{org_id}:{user_id}"

    async def get(self, key: str) -> bytes | None:
        """``GET``: Redis expires entries itself."""
        value = await self.client.get(self.prefix + key)
        if value is None:
            return None
        return value.encode() if isinstance(value, str) else bytes(value)

    async def put(
        self, key: str, value: bytes, ttl: int, model: str, owner: Owner | None = None
    ) -> None:
        """``SET ... EX ttl``; with an owner, in one script with its index."""
        if owner is None:
            await self.client.set(self.prefix + key, value, ex=ttl)
            return
        await self._put_owned(
            keys=[self.prefix + key, self.owner_key(*owner)], args=[value, ttl, key]
        )

    async def forget(self, org_id: str, user_id: str) -> int:
        """Delete the entries of the owner's index, a batch per transaction (``MULTI``), and
        the index; return how many entries were live."""
        index = self.owner_key(org_id, user_id)
        prefix = self.prefix.encode()
        deleted = 0
        while members := await self.client.zrange(index, 0, FORGET_BATCH - 1):
            names = [m.encode() if isinstance(m, str) else m for m in cast(_Members, members)]
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.delete(*[prefix + n for n in names])
                pipe.zrem(index, *names)
                gone, _ = await pipe.execute()
            deleted += int(gone)
        return deleted

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
