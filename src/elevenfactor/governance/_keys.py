"""API keys: shown once at creation, stored as SHA-256 hashes, revocable.

A key looks like ``ef_<8-char prefix>_<secret>``; the prefix identifies it in listings. The
verifier caches lookups for ``ttl`` seconds, so a revocation takes effect everywhere within
``ttl`` without a database round trip on every request.
"""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from dataclasses import dataclass

from elevenfactor.errors import AuthenticationFailed, RequestError
from elevenfactor.store import Store

__all__ = ["ApiKey", "KeyVerifier", "create_key", "list_keys", "revoke_key"]


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A stored key (never the secret)."""

    id: str
    name: str
    prefix: str
    created_at: float
    revoked_at: float | None

    @property
    def active(self) -> bool:
        """Not revoked."""
        return self.revoked_at is None


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


async def create_key(store: Store, name: str) -> tuple[ApiKey, str]:
    """Create a key; return its record and the secret, which is not stored and not shown again."""
    if not name.strip():
        raise RequestError("a key needs a non-empty name", code="invalid_key_name", param="name")
    prefix = secrets.token_hex(4)
    secret = f"ef_{prefix}_{secrets.token_urlsafe(32)}"
    key = ApiKey(uuid.uuid4().hex, name.strip(), prefix, time.time(), None)
    await store.execute(
        "INSERT INTO api_keys (id, name, prefix, key_hash, created_at) VALUES (?, ?, ?, ?, ?)",
        (key.id, key.name, key.prefix, _hash(secret), key.created_at),
    )
    return key, secret


async def list_keys(store: Store) -> list[ApiKey]:
    """Every key, newest first."""
    rows = await store.fetchall(
        "SELECT id, name, prefix, created_at, revoked_at FROM api_keys ORDER BY created_at DESC"
    )
    return [ApiKey(*r) for r in rows]


async def revoke_key(store: Store, ident: str) -> ApiKey:
    """Revoke the key whose id or prefix is ``ident``."""
    row = await store.fetchone(
        "SELECT id, name, prefix, created_at, revoked_at FROM api_keys WHERE id = ? OR prefix = ?",
        (ident, ident),
    )
    if row is None:
        raise RequestError(
            f"no API key with id or prefix {ident!r}",
            code="key_not_found",
            status=404,
            hint="`elevenfactor keys list` shows them",
        )
    key = ApiKey(*row)
    if key.revoked_at is None:
        now = time.time()
        await store.execute("UPDATE api_keys SET revoked_at = ? WHERE id = ?", (now, key.id))
        key = ApiKey(key.id, key.name, key.prefix, key.created_at, now)
    return key


class KeyVerifier:
    """Checks bearer secrets against the store, with a short positive and negative cache."""

    def __init__(self, store: Store, *, ttl: float = 5.0, max_entries: int = 10_000) -> None:
        self.store = store
        self.ttl = ttl
        self.max_entries = max_entries
        self._cache: dict[str, tuple[str | None, float]] = {}

    async def verify(self, secret: str) -> str:
        """The key id for ``secret``, or raise ``AuthenticationFailed``."""
        digest = _hash(secret)
        now = time.monotonic()
        hit = self._cache.get(digest)
        if hit is None or hit[1] < now:
            row = await self.store.fetchone(
                "SELECT id FROM api_keys WHERE key_hash = ? AND revoked_at IS NULL", (digest,)
            )
            if len(self._cache) >= self.max_entries:
                self._cache.clear()
            hit = (row[0] if row else None, now + self.ttl)
            self._cache[digest] = hit
        if hit[0] is None:
            raise AuthenticationFailed(
                "Incorrect API key provided", hint="create one with `elevenfactor keys create`"
            )
        return hit[0]
