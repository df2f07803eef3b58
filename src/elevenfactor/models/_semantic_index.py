"""``SemanticIndex``: the semantic cache's answers in the store, searched by vector in memory.

Rows live in the store's ``semantic_cache`` table (migration ``m015_semantic_cache``), shared by
every process. Each process keeps, per namespace it looks up, the ids, vectors and expiry times
of the live rows as numpy arrays. A lookup first reads the namespace's rows with an id above
the last one it saw (one query on the ``(namespace, id)`` index), so a process sees the answers
another one stored at its next lookup; the search is then one matrix-vector product.

A namespace is read again whole once it is ``reload_every`` seconds old: that drops the rows
deleted elsewhere (a forgotten user's, evicted ones) and picks up a row whose id was taken
before a row another process committed first. A hit is read back from its row, which counts
it, so a row deleted or expired is never served, even before the reload. Namespaces unused for
``reload_every`` seconds are dropped from memory, and at most ``max_rows`` vectors are kept in
all: the namespaces used least recently go first (and are read again when needed).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from elevenfactor.store import Executor, Store

__all__ = ["Found", "SemanticIndex", "purge_semantic_expired"]

Vector = npt.NDArray[np.float32]

_SINCE = (
    "SELECT id, vector, expires_at FROM semantic_cache"
    " WHERE namespace = ? AND id > ? AND expires_at > ? ORDER BY id"
)
_HIT = (
    "UPDATE semantic_cache SET hits = hits + 1 WHERE id = ? AND expires_at > ?"
    " RETURNING response, deployment, provider, model"
)
_ADD = (
    "INSERT INTO semantic_cache (namespace, org_id, user_id, vector, query_hash, response,"
    " deployment, provider, model, created_at, expires_at, hits)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0)"
)
# Keeps the newest ``max_entries`` rows of a namespace (none is deleted while it has fewer).
_TRIM = (
    "DELETE FROM semantic_cache WHERE namespace = ? AND id <= (SELECT id FROM semantic_cache"
    " WHERE namespace = ? ORDER BY id DESC LIMIT 1 OFFSET ?)"
)
_CANDIDATES = 3  # rows tried per lookup when the best ones are gone from the store
_EPS = 1e-6  # float32 rounding: a text compared with itself may score 0.9999999


async def purge_semantic_expired(db: Executor, now: float | None = None) -> int:
    """Delete every expired ``semantic_cache`` row; return how many went."""
    return await db.execute(
        "DELETE FROM semantic_cache WHERE expires_at <= ?", (time.time() if now is None else now,)
    )


@dataclass(frozen=True, slots=True)
class Found:
    """A live row close enough to the question: its answer (JSON) and who gave it."""

    response: str
    deployment: str
    provider: str
    model: str
    similarity: float


class _Space:
    """The live rows of one namespace that this process has read."""

    __slots__ = ("dim", "expires", "ids", "last_id", "loaded_at", "used_at", "vectors")

    def __init__(self, dim: int, now: float) -> None:
        self.dim = dim
        self.ids: npt.NDArray[np.int64] = np.zeros(0, np.int64)
        self.vectors: Vector = np.zeros((0, dim), np.float32)
        self.expires: npt.NDArray[np.float64] = np.zeros(0, np.float64)
        self.last_id = 0
        self.loaded_at = self.used_at = now

    def extend(self, rows: Sequence[Sequence[Any]], now: float) -> None:
        """Take in rows ``(id, vector, expires_at)`` newer than those seen (a concurrent read
        of the same rows adds nothing); drop expired ones once they are a quarter."""
        size = 4 * self.dim
        fresh = [r for r in rows if int(r[0]) > self.last_id]
        if fresh:
            self.last_id = max(int(r[0]) for r in fresh)
            fresh = [r for r in fresh if len(r[1]) == size]  # another embedder's: ignored
        if fresh:
            blob = b"".join(bytes(r[1]) for r in fresh)
            vectors = np.frombuffer(blob, "<f4").astype(np.float32).reshape(-1, self.dim)
            self.vectors = np.concatenate([self.vectors, vectors])
            self.ids = np.concatenate([self.ids, np.array([int(r[0]) for r in fresh], np.int64)])
            self.expires = np.concatenate(
                [self.expires, np.array([float(r[2]) for r in fresh], np.float64)]
            )
        expired = self.expires <= now
        if expired.any() and 4 * int(expired.sum()) >= len(self.ids):
            self.keep(~expired)

    def keep(self, mask: npt.NDArray[np.bool_]) -> None:
        """Keep the rows where ``mask`` is true."""
        self.ids, self.expires = self.ids[mask], self.expires[mask]
        self.vectors = self.vectors[mask]

    def best(self, vector: Vector, threshold: float, now: float) -> list[tuple[int, float]]:
        """Up to ``_CANDIDATES`` live rows at least ``threshold`` similar, best first, as
        ``(id, similarity)``."""
        if not len(self.ids):
            return []
        sims = self.vectors @ vector
        ok = np.flatnonzero((sims >= threshold - _EPS) & (self.expires > now))
        order = ok[np.argsort(-sims[ok], kind="stable")][:_CANDIDATES]
        return [(int(self.ids[i]), min(1.0, float(sims[i]))) for i in order]

    def discard(self, row_id: int) -> None:
        """Forget one row (gone from the store)."""
        self.keep(self.ids != row_id)


class SemanticIndex:
    """The ``semantic_cache`` rows of ``store``, per namespace (see the module docstring).

    ``clock`` gives the wall-clock time rows expire by (shared by processes); ``reload_every``
    is in seconds of ``time.monotonic``.
    """

    def __init__(
        self,
        store: Store,
        *,
        clock: Callable[[], float] = time.time,
        reload_every: float = 60.0,
        max_rows: int = 50_000,
        purge_every: float = 60.0,
    ) -> None:
        self.store = store
        self.clock = clock
        self.reload_every = reload_every
        self.max_rows = max_rows
        self.purge_every = purge_every
        self._spaces: OrderedDict[str, _Space] = OrderedDict()
        self._next_purge = time.monotonic() + purge_every

    @property
    def rows(self) -> int:
        """Vectors held in memory."""
        return sum(len(s.ids) for s in self._spaces.values())

    async def search(self, namespace: str, vector: Vector, threshold: float) -> Found | None:
        """The most similar live answer of ``namespace`` at least ``threshold`` similar to
        ``vector`` (a unit vector), its hit counted; None if there is none."""
        now = self.clock()
        space = await self._refreshed(namespace, len(vector), now)
        for row_id, similarity in space.best(vector, threshold, now):
            rows = await self.store.fetchall(_HIT, (row_id, now))
            if rows:
                response, deployment, provider, model = rows[0]
                text = response if isinstance(response, str) else bytes(response).decode()
                return Found(text, str(deployment), str(provider), str(model), similarity)
            space.discard(row_id)  # deleted or expired meanwhile
        return None

    async def add(
        self,
        namespace: str,
        owner: tuple[str, str],
        vector: Vector,
        query_hash: str,
        answer: tuple[str, str, str, str],
        ttl: int,
        max_entries: int,
    ) -> None:
        """Store an answer: ``owner`` is ``(org_id, user_id)``, ``answer`` is ``(response
        JSON, deployment, provider, model)``. Past ``max_entries`` rows in the namespace the
        oldest go; expired rows of every namespace are purged every ``purge_every`` seconds."""
        now = self.clock()
        blob = np.asarray(vector, dtype="<f4").tobytes()
        await self.store.execute(
            _ADD, (namespace, *owner, blob, query_hash, *answer, now, now + ttl)
        )
        space = self._spaces.get(namespace)
        if space is not None and len(space.ids) + 1 > max_entries:
            await self.store.execute(_TRIM, (namespace, namespace, max_entries))
            space.keep(np.arange(len(space.ids)) >= len(space.ids) + 1 - max_entries)
        if time.monotonic() >= self._next_purge:
            self._next_purge = time.monotonic() + self.purge_every
            await purge_semantic_expired(self.store, now)

    def clear(self) -> None:
        """Forget every namespace held in memory."""
        self._spaces.clear()

    async def _refreshed(self, namespace: str, dim: int, now: float) -> _Space:
        mono = time.monotonic()
        while self._spaces:  # the least recently used first: drop the idle ones
            oldest = next(iter(self._spaces.values()))
            if mono - oldest.used_at < self.reload_every:
                break
            self._spaces.popitem(last=False)
        space = self._spaces.get(namespace)
        if space is None or space.dim != dim or mono - space.loaded_at >= self.reload_every:
            space = self._spaces[namespace] = _Space(dim, mono)
        space.used_at = mono
        self._spaces.move_to_end(namespace)
        rows = await self.store.fetchall(_SINCE, (namespace, space.last_id, now))
        space.extend(rows, now)
        total = self.rows
        while total > self.max_rows and len(self._spaces) > 1:
            _, dropped = self._spaces.popitem(last=False)
            total -= len(dropped.ids)  # (this one too, if others were used since: kept no more)
        return space
