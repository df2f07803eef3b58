"""API keys: shown once at creation, stored as SHA-256 hashes, revocable, owned by a user or a
service account whose roles they carry.

A key looks like ``ef_<8-char prefix>_<secret>``; the prefix identifies it in listings. The
verifier resolves a secret to its ``Principal`` (user, team, roles, reviewer groups) and caches
that for ``ttl`` seconds, so a revocation or a role change takes effect everywhere within ``ttl``
without a database round trip on every request.
"""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any

from elevenfactor.errors import AuthenticationFailed, NotFound, RequestError
from elevenfactor.governance._identity import ensure_service_account, get_user
from elevenfactor.governance._ledger import append_entry
from elevenfactor.governance._names import check_name
from elevenfactor.governance._principal import Principal
from elevenfactor.store import Executor, Store

__all__ = [
    "ApiKey",
    "KeyVerifier",
    "create_key",
    "get_key",
    "list_keys",
    "principal_for_key",
    "principal_for_key_id",
    "principal_for_user",
    "rename_key",
    "revoke_key",
]


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A stored key (never the secret) and the user or service account it belongs to."""

    id: str
    name: str
    prefix: str
    created_at: float
    revoked_at: float | None
    user: str | None = None

    @property
    def active(self) -> bool:
        """Not revoked."""
        return self.revoked_at is None

    def to_dict(self) -> dict[str, Any]:
        """The key as the API shows it (no secret)."""
        return {
            "id": self.id,
            "object": "api_key",
            "name": self.name,
            "prefix": self.prefix,
            "user": self.user,
            "created_at": self.created_at,
            "revoked_at": self.revoked_at,
        }


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


_KEY_SQL = (
    "SELECT k.id, k.name, k.prefix, k.created_at, k.revoked_at, u.name FROM api_keys k"
    " JOIN users u ON u.id = k.user_id"
)


async def create_key(
    store: Store, actor: Principal, name: str, *, user: str | None = None
) -> tuple[ApiKey, str]:
    """Create a key for ``user`` (by default, for a service account called ``name``, created
    if needed); return its record and the secret, which is not stored and not shown again."""
    actor.require_admin("creating an API key")
    check_name(name, "name")
    prefix = secrets.token_hex(4)
    secret = f"ef_{prefix}_{secrets.token_urlsafe(32)}"
    now = time.time()
    async with store.transaction() as tx:
        owner = (
            await get_user(tx, actor, user)
            if user is not None
            else await ensure_service_account(tx, actor, name)
        )
        if owner.disabled_at is not None:
            raise RequestError(
                f"user {owner.name!r} is disabled",
                code="conflict",
                status=409,
                param="user",
                hint=f"enable it first: `elevenfactor users update {owner.name} --enable`",
            )
        key = ApiKey(uuid.uuid4().hex, name, prefix, now, None, owner.name)
        await tx.execute(
            "INSERT INTO api_keys (id, name, prefix, key_hash, created_at, user_id)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (key.id, key.name, key.prefix, _hash(secret), now, owner.id),
        )
        await append_entry(tx, "admin.key.create", key.id, actor.actor(), key.to_dict())
    return key, secret


async def list_keys(store: Store, actor: Principal) -> list[ApiKey]:
    """Every key of the organisation, newest first."""
    actor.require_admin("listing API keys")
    rows = await store.fetchall(
        f"{_KEY_SQL} WHERE u.org_id = ? ORDER BY k.created_at DESC", (actor.org_id,)
    )
    return [ApiKey(*r) for r in rows]


async def get_key(db: Executor, actor: Principal, ident: str) -> ApiKey:
    """The organisation's key whose id or prefix is ``ident``."""
    actor.require_admin("reading an API key")
    row = await db.fetchone(
        f"{_KEY_SQL} WHERE u.org_id = ? AND (k.id = ? OR k.prefix = ?)",
        (actor.org_id, ident, ident),
    )
    if row is None:
        raise NotFound(
            f"no API key with id or prefix {ident!r}",
            hint="`elevenfactor keys list` shows them",
        )
    return ApiKey(*row)


async def rename_key(store: Store, actor: Principal, ident: str, name: str) -> ApiKey:
    """Give a key a new name."""
    check_name(name, "name")
    async with store.transaction() as tx:
        key = await get_key(tx, actor, ident)
        await tx.execute("UPDATE api_keys SET name = ? WHERE id = ?", (name, key.id))
        await append_entry(tx, "admin.key.update", key.id, actor.actor(), {"name": name})
        return await get_key(tx, actor, key.id)


async def revoke_key(store: Store, actor: Principal, ident: str) -> ApiKey:
    """Revoke the key whose id or prefix is ``ident`` (idempotent)."""
    async with store.transaction() as tx:
        key = await get_key(tx, actor, ident)
        if key.revoked_at is None:
            await tx.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE id = ?", (time.time(), key.id)
            )
            await append_entry(
                tx, "admin.key.revoke", key.id, actor.actor(), {"prefix": key.prefix}
            )
        return await get_key(tx, actor, key.id)


_PRINCIPAL_SQL = (
    "SELECT k.id, u.id, u.org_id, u.name, u.roles, u.team_id, t.shares, k.name, t.name"
    " FROM api_keys k"
    " JOIN users u ON u.id = k.user_id LEFT JOIN teams t ON t.id = u.team_id"
    " WHERE k.key_hash = ? AND k.revoked_at IS NULL AND u.disabled_at IS NULL"
)


async def principal_for_key(db: Executor, secret: str) -> Principal | None:
    """The principal a key secret stands for, or None (unknown, revoked, or user disabled)."""
    row = await db.fetchone(_PRINCIPAL_SQL, (_hash(secret),))
    if row is None:
        return None
    return await _principal(db, row, "key")


async def principal_for_key_id(db: Executor, key_id: str) -> Principal | None:
    """The principal of the key with id ``key_id``, or None (unknown, revoked, or user
    disabled): what a dashboard session signed in with that key acts as."""
    row = await db.fetchone(_PRINCIPAL_SQL.replace("k.key_hash = ?", "k.id = ?"), (key_id,))
    if row is None:
        return None
    return await _principal(db, row, "key")


async def principal_for_user(db: Executor, name: str, *, org: str = "default") -> Principal:
    """The principal of user ``name`` of organisation ``org``, as an operator with database
    access acts (``elevenfactor ... --as NAME``)."""
    row = await db.fetchone(
        "SELECT NULL, u.id, u.org_id, u.name, u.roles, u.team_id, t.shares, NULL, t.name"
        " FROM users u"
        " JOIN orgs o ON o.id = u.org_id LEFT JOIN teams t ON t.id = u.team_id"
        " WHERE o.name = ? AND u.name = ? AND u.disabled_at IS NULL",
        (org, name),
    )
    if row is None:
        raise NotFound(
            f"no enabled user {name!r} in organisation {org!r}",
            hint="`elevenfactor users list` shows them",
        )
    return await _principal(db, row, "cli")


async def _principal(db: Executor, row: tuple[Any, ...], via: str) -> Principal:
    key_id, user_id, org_id, name, roles, team_id, shares, key_name, team_name = row
    groups = await db.fetchall("SELECT group_name FROM group_members WHERE user_id = ?", (user_id,))
    return Principal(
        org_id=org_id,
        user_id=user_id,
        user_name=name,
        team_id=team_id,
        key_id=key_id,
        roles=frozenset(r for r in roles.split(",") if r),
        groups=frozenset(g[0] for g in groups),
        team_shares=bool(shares),
        via=via,
        key_name=key_name,
        team_name=team_name,
    )


class KeyVerifier:
    """Resolves bearer secrets to principals, with a short positive and negative cache."""

    def __init__(self, store: Store, *, ttl: float = 5.0, max_entries: int = 10_000) -> None:
        self.store = store
        self.ttl = ttl
        self.max_entries = max_entries
        self._cache: dict[str, tuple[Principal | None, float]] = {}

    async def verify(self, secret: str) -> Principal:
        """The principal for ``secret``, or raise ``AuthenticationFailed``."""
        if len(secret) > 256 or "\x00" in secret:
            raise AuthenticationFailed("Incorrect API key provided")
        now = time.monotonic()
        digest = _hash(secret)
        hit = self._cache.get(digest)
        if hit is None or hit[1] < now:
            principal = await principal_for_key(self.store, secret)
            if len(self._cache) >= self.max_entries:
                self._cache.clear()
            hit = (principal, now + self.ttl)
            self._cache[digest] = hit
        if hit[0] is None:
            raise AuthenticationFailed(
                "Incorrect API key provided", hint="create one with `elevenfactor keys create`"
            )
        return hit[0]
