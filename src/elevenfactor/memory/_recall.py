"""Reading long-term memory: ``recall`` (ranked by similarity, recency and importance) and
``list_memories``.

Recall selects in SQL the active memories (not superseded, not expired) of the organisation in
the scopes asked for that the actor may read, then compares their stored vectors with the
query's in numpy: ``score = w_sim * cos + w_rec * decay + w_imp * importance``, where ``decay``
halves every ``half_life_days`` since the memory was last recalled (or written). The memories
returned have their ``recalled_at`` set, which restarts their decay.

Brute force over one scope's memories is the right tool at per-user sizes: the vectors are read
in one query and scored with one matrix product (see the measured figures in the memory
benchmark test); beyond a few tens of thousands of memories per recall, an approximate index
would pay off.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from elevenfactor.config._memory import MemoryConfig
from elevenfactor.context import Embedder
from elevenfactor.errors import EmbedderMismatch, RequestError
from elevenfactor.governance import check_id
from elevenfactor.memory._records import (
    MEMORY_COLUMNS,
    Memory,
    check_kind,
    memory_from_row,
    vectors_of,
)
from elevenfactor.memory._scopes import (
    MemoryActor,
    Scope,
    check_access,
    default_scopes,
    readable_sql,
    scopes_sql,
)
from elevenfactor.memory._write import embed_one
from elevenfactor.store import Executor, Store

__all__ = ["Recalled", "list_memories", "recall"]

_DEFAULT = MemoryConfig()
_DAY = 86400.0
MAX_QUERY = 4000


@dataclass(frozen=True, slots=True)
class Recalled:
    """A recalled memory, its score and the parts the score is made of."""

    memory: Memory
    score: float
    similarity: float
    recency: float

    def to_dict(self) -> dict[str, Any]:
        """The memory with ``score``, ``similarity`` and ``recency``."""
        return {
            **self.memory.to_dict(),
            "score": self.score,
            "similarity": self.similarity,
            "recency": self.recency,
        }


async def _scopes(db: Executor, actor: MemoryActor, scopes: Sequence[Scope] | None) -> list[Scope]:
    if scopes is None:
        return await default_scopes(db, actor)
    for scope in scopes:
        await check_access(db, actor, scope, "read")
    return list(dict.fromkeys(scopes))


async def recall(
    store: Store,
    embedder: Embedder,
    actor: MemoryActor,
    query: str,
    scopes: Sequence[Scope] | None = None,
    k: int | None = None,
    min_score: float | None = None,
    *,
    config: MemoryConfig | None = None,
    now: float | None = None,
) -> list[Recalled]:
    """The ``k`` best active memories for ``query`` in ``scopes`` (None: every scope ``actor``
    reads by default) scoring at least ``min_score``, best first. ``MemoryDenied`` for a scope
    ``actor`` may not read; ``EmbedderMismatch`` if the memories were embedded by another
    embedder than ``embedder``."""
    conf = config or _DEFAULT
    k = conf.recall.k if k is None else k
    min_score = conf.recall.min_score if min_score is None else min_score
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= 1000:
        raise RequestError("'k' must be an integer from 1 to 1000", code="invalid_k", param="k")
    if not isinstance(query, str) or not query.strip() or len(query) > MAX_QUERY:
        raise RequestError(
            f"'query' must be non-empty text of at most {MAX_QUERY} characters",
            code="invalid_query",
            param="query",
        )
    ts = time.time() if now is None else now
    wanted = await _scopes(store, actor, scopes)
    cond, params = readable_sql(actor)
    in_scopes, scope_params = scopes_sql(wanted)
    # Only what scoring needs; the k winners' full rows are read afterwards.
    rows = await store.fetchall(
        "SELECT m.id, m.embedder, m.importance, m.created_at, m.recalled_at, m.embedding"
        f" FROM memories m WHERE {cond} AND {in_scopes}"
        " AND m.superseded_by IS NULL AND (m.expires_at IS NULL OR m.expires_at > ?)",
        (*params, *scope_params, ts),
    )
    if not rows:
        return []
    others = sorted({r[1] for r in rows} - {embedder.name})
    if others:
        raise EmbedderMismatch(
            f"memories in {', '.join(map(str, wanted))} were embedded by {', '.join(others)},"
            f" not {embedder.name!r}",
            hint="recall with the embedder set as memory.embedder when they were written",
        )
    matrix = vectors_of([r[5] for r in rows], embedder.dim)
    if matrix is None:
        raise EmbedderMismatch(
            f"stored memory vectors do not have {embedder.name!r}'s dimension {embedder.dim}"
        )
    vector = await embed_one(embedder, query)
    sims = matrix @ vector
    last = np.array([r[4] if r[4] is not None else r[3] for r in rows], dtype=np.float64)
    decay = np.power(0.5, np.maximum(ts - last, 0.0) / (conf.half_life_days * _DAY))
    importance = np.array([r[2] for r in rows], dtype=np.float64)
    w = conf.recall.weights
    scores = w.similarity * sims + w.recency * decay + w.importance * importance
    order = [int(i) for i in np.argsort(-scores, kind="stable")[:k] if scores[i] >= min_score]
    if not order:
        return []
    marks = ", ".join("?" for _ in order)
    full = await store.fetchall(
        f"SELECT {MEMORY_COLUMNS} FROM memories m WHERE {cond} AND m.id IN ({marks})",
        (*params, *(rows[i][0] for i in order)),
    )
    by_id = {r[0]: memory_from_row(r) for r in full}
    found = [
        Recalled(
            dataclasses.replace(by_id[rows[i][0]], recalled_at=ts),
            float(scores[i]),
            float(sims[i]),
            float(decay[i]),
        )
        for i in order
        if rows[i][0] in by_id  # forgotten meanwhile: left out
    ]
    if found:
        marks = ", ".join("?" for _ in found)
        await store.execute(
            f"UPDATE memories SET recalled_at = ? WHERE org_id = ? AND id IN ({marks})",
            (ts, actor.org_id, *(r.memory.id for r in found)),
        )
    return found


async def list_memories(
    db: Executor,
    actor: MemoryActor,
    scopes: Sequence[Scope] | None = None,
    *,
    kind: str | None = None,
    key: str | None = None,
    include_inactive: bool = False,
    limit: int = 100,
    now: float | None = None,
) -> list[Memory]:
    """The memories ``actor`` may read in ``scopes`` (None: its default scopes), newest first;
    only active ones unless ``include_inactive``."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 10000:
        raise RequestError("'limit' must be from 1 to 10000", code="invalid_limit", param="limit")
    wanted = await _scopes(db, actor, scopes)
    cond, params = readable_sql(actor)
    in_scopes, scope_params = scopes_sql(wanted)
    sql = f"SELECT {MEMORY_COLUMNS} FROM memories m WHERE {cond} AND {in_scopes}"
    args: list[Any] = [*params, *scope_params]
    if kind is not None:
        sql += " AND m.kind = ?"
        args.append(check_kind(kind))
    if key is not None:
        sql += " AND m.fact_key = ?"
        args.append(check_id(key, "key"))
    if not include_inactive:
        sql += " AND m.superseded_by IS NULL AND (m.expires_at IS NULL OR m.expires_at > ?)"
        args.append(time.time() if now is None else now)
    rows = await db.fetchall(sql + " ORDER BY m.created_at DESC, m.id LIMIT ?", (*args, limit))
    return [memory_from_row(r) for r in rows]
