"""Writing long-term memory: ``remember`` (with supersession), ``forget``, ``history`` and
``purge_expired``.

A new memory supersedes the active one it contradicts: in the same scope, the one with the same
``key``; without a key, the most similar one if its cosine reaches the configured threshold. The
old row stays, marked ``superseded_by`` the new one, which records what it ``supersedes``; the
chain is the memory's history. Writes to one scope are serialised (the write lock on SQLite, an
advisory lock per scope on PostgreSQL), so two writers never both supersede the same memory,
and a unique index keeps one active memory per key.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import orjson

from elevenfactor.config._memory import MemoryConfig
from elevenfactor.context import Embedder
from elevenfactor.errors import EmbedderMismatch, NotFound, RequestError
from elevenfactor.governance import check_id
from elevenfactor.memory._records import (
    MEMORY_COLUMNS,
    Memory,
    Provenance,
    check_importance,
    check_kind,
    check_memory_text,
    encode_vector,
    memory_from_row,
    new_memory_id,
    vectors_of,
)
from elevenfactor.memory._scopes import MemoryActor, Scope, check_access, readable_sql
from elevenfactor.store import Executor, Store

__all__ = ["embed_one", "forget", "get_memory", "history", "purge_expired", "remember"]

_DEFAULT = MemoryConfig()
_DAY = 86400.0


async def embed_one(embedder: Embedder, text: str) -> np.ndarray[Any, np.dtype[np.float32]]:
    """``text``'s unit vector from ``embedder`` (checked: one row of the embedder's dim)."""
    rows = await embedder.embed([text])
    if rows.shape != (1, embedder.dim):
        raise EmbedderMismatch(
            f"embedder {embedder.name!r} returned shape {rows.shape}, expected (1, {embedder.dim})"
        )
    vec = np.asarray(rows[0], dtype=np.float32)
    norm = float(np.linalg.norm(vec))
    return vec / norm if norm > 0 else vec


async def _lock_scope(db: Executor, dialect: str, org_id: str, scope: Scope) -> None:
    """Serialise writes to one scope (SQLite's write transactions are serial already)."""
    if dialect != "postgresql":
        return
    digest = hashlib.sha256(f"memory\x00{org_id}\x00{scope}".encode()).digest()
    await db.fetchone(
        "SELECT pg_advisory_xact_lock(?)", (int.from_bytes(digest[:8], "big", signed=True),)
    )


async def _superseded(
    db: Executor,
    org_id: str,
    scope: Scope,
    key: str | None,
    vector: np.ndarray[Any, np.dtype[np.float32]],
    embedder: str,
    threshold: float,
    now: float,
) -> tuple[str, str | None] | None:
    """The active memory the new one supersedes, as ``(id, key)``, or None."""
    where = "org_id = ? AND scope_kind = ? AND scope_id = ? AND superseded_by IS NULL"
    if key is not None:
        row = await db.fetchone(
            f"SELECT id, fact_key FROM memories WHERE {where} AND fact_key = ?",
            (org_id, scope.kind, scope.id, key),
        )
        if row is not None:
            return row[0], row[1]
    rows = await db.fetchall(
        f"SELECT id, fact_key, embedding FROM memories WHERE {where} AND embedder = ?"
        " AND (expires_at IS NULL OR expires_at > ?)",
        (org_id, scope.kind, scope.id, embedder, now),
    )
    # Near-duplicates: a keyless memory replaces one of any key; a keyed one only keyless ones.
    candidates = [r for r in rows if key is None or r[1] is None]
    if not candidates:
        return None
    matrix = vectors_of([r[2] for r in candidates], vector.size)
    if matrix is None:
        return None  # vectors of another dimension: not comparable
    sims = matrix @ vector
    best = int(np.argmax(sims))
    if float(sims[best]) >= threshold:
        return candidates[best][0], candidates[best][1]
    return None


async def remember(
    store: Store,
    embedder: Embedder,
    actor: MemoryActor,
    scope: Scope,
    text: str,
    *,
    kind: str = "fact",
    key: str | None = None,
    importance: float = 0.5,
    ttl: float | None = None,
    provenance: Provenance | Mapping[str, Any] | None = None,
    config: MemoryConfig | None = None,
    now: float | None = None,
) -> Memory:
    """Write a memory to ``scope`` and return it. It supersedes the active memory of the same
    ``key`` in the scope, or (without a key) the most similar one at or above the configured
    ``supersede_threshold``. ``ttl`` is in seconds (None: the configured ``default_ttl_days``,
    else never expires). ``MemoryDenied`` if ``actor`` may not write ``scope``."""
    conf = config or _DEFAULT
    text = check_memory_text(text)
    kind = check_kind(kind)
    if key is not None:
        key = check_id(key, "key")
    importance = check_importance(importance)
    if ttl is None and conf.default_ttl_days is not None:
        ttl = conf.default_ttl_days * _DAY
    if ttl is not None and (isinstance(ttl, bool) or not 0 < float(ttl) < 1e10):
        raise RequestError("'ttl' must be a positive number of seconds", code="invalid_ttl")
    prov = _provenance(provenance)
    # Refuse before the (possibly slow) embedding; checked again inside the transaction.
    await check_access(store, actor, scope, "write")
    vector = await embed_one(embedder, text)
    ts = time.time() if now is None else now
    mid = new_memory_id()
    async with store.transaction() as tx:
        await check_access(tx, actor, scope, "write")
        await _lock_scope(tx, store.dialect, actor.org_id, scope)
        old = await _superseded(
            tx, actor.org_id, scope, key, vector, embedder.name, conf.supersede_threshold, ts
        )
        if old is not None:
            key = key if key is not None else old[1]
            await tx.execute(
                "UPDATE memories SET superseded_by = ? WHERE id = ? AND org_id = ?",
                (mid, old[0], actor.org_id),
            )
        await tx.execute(
            "INSERT INTO memories (id, org_id, scope_kind, scope_id, kind, fact_key, text,"
            " embedding, embedder, importance, user_id, created_at, recalled_at, expires_at,"
            " superseded_by, supersedes, provenance)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?, NULL, ?, ?)",
            (
                mid,
                actor.org_id,
                scope.kind,
                scope.id,
                kind,
                key,
                text,
                encode_vector(vector),
                embedder.name,
                importance,
                actor.user_id,
                ts,
                None if ttl is None else ts + float(ttl),
                None if old is None else old[0],
                orjson.dumps(prov).decode(),
            ),
        )
        found = await _get(tx, actor, mid)
    assert found is not None
    return found


def _provenance(value: Provenance | Mapping[str, Any] | None) -> dict[str, Any]:
    if value is None:
        return Provenance("api").to_dict()
    if isinstance(value, Provenance):
        return value.to_dict()
    try:
        return Provenance(**dict(value)).to_dict()
    except TypeError:
        raise RequestError(
            "provenance takes source, run_id, step_key and message_index",
            code="invalid_provenance",
            param="provenance",
        ) from None


async def _get(db: Executor, actor: MemoryActor, memory_id: str) -> Memory | None:
    cond, params = readable_sql(actor)
    row = await db.fetchone(
        f"SELECT {MEMORY_COLUMNS} FROM memories m WHERE m.id = ? AND {cond}", (memory_id, *params)
    )
    return None if row is None else memory_from_row(row)


async def get_memory(db: Executor, actor: MemoryActor, memory_id: str) -> Memory:
    """The memory ``memory_id`` if ``actor`` may read it (else ``NotFound``, as if absent)."""
    check_id(memory_id, "memory_id")
    found = await _get(db, actor, memory_id)
    if found is None:
        raise NotFound(f"no memory {memory_id!r}", code="memory_not_found", param="memory_id")
    return found


async def history(db: Executor, actor: MemoryActor, memory_id: str) -> list[Memory]:
    """Every version of the memory ``memory_id``, oldest first (the active one last)."""
    current = await get_memory(db, actor, memory_id)
    chain = [current]
    seen = {current.id}
    node = current
    while node.supersedes is not None and node.supersedes not in seen:
        older = await _get(db, actor, node.supersedes)
        if older is None:
            break
        chain.insert(0, older)
        seen.add(older.id)
        node = older
    node = current
    while node.superseded_by is not None and node.superseded_by not in seen:
        newer = await _get(db, actor, node.superseded_by)
        if newer is None:
            break
        chain.append(newer)
        seen.add(newer.id)
        node = newer
    return chain


async def forget(store: Store, actor: MemoryActor, memory_id: str) -> int:
    """Delete the memory ``memory_id`` and every version of it (its history), physically.
    Returns how many rows went. ``NotFound`` if ``actor`` cannot see it, ``MemoryDenied`` if it
    may read but not delete it."""
    async with store.transaction() as tx:
        chain = await history(tx, actor, memory_id)
        await check_access(tx, actor, chain[-1].scope, "delete")
        gone = 0
        for m in chain:
            gone += await tx.execute(
                "DELETE FROM memories WHERE id = ? AND org_id = ?", (m.id, actor.org_id)
            )
    return gone


async def purge_expired(store: Store, now: float | None = None) -> int:
    """Delete every memory past its ``expires_at``; how many went."""
    ts = time.time() if now is None else now
    return await store.execute(
        "DELETE FROM memories WHERE expires_at IS NOT NULL AND expires_at <= ?", (ts,)
    )
