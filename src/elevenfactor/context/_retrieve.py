"""Hybrid search over a retrieval index: BM25 and vector similarity fused by reciprocal rank.

``search`` is what an agent calls (inside a journaled step: its result, a list of ``Hit``, is
plain data). It reads the index's active version from the registry (so it sees the last
complete version, never one being built), embeds the query with the index's own embedder (any
other is ``EmbedderMismatch``), runs the BM25 and vector searches on the organisation's chunks
only (BM25 while the query is embedded), and fuses the two ranked lists with RRF: ``score =
sum(1 / (60 + rank))`` over the lists a chunk appears in.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

from elevenfactor.context._embedder import Embedder
from elevenfactor.context._index import IndexInfo, IndexVersion, get_index
from elevenfactor.context._index_lists import LISTS_FORMAT
from elevenfactor.context._index_sql import SqlBackend
from elevenfactor.errors import ContextError, EmbedderMismatch, IndexNotFound
from elevenfactor.store import Store

__all__ = [
    "MODES",
    "RRF_K",
    "EmbedderSource",
    "Hit",
    "IndexRef",
    "Mode",
    "Retrieval",
    "rrf",
    "search",
]

RRF_K = 60
MODES = ("hybrid", "vector", "bm25")
Mode = Literal["hybrid", "vector", "bm25"]
"""How ``search`` ranks: BM25 and vectors fused (``hybrid``), or one of them alone."""
CANDIDATES = 50
"""Each list of a hybrid search contributes at least this many candidates to the fusion."""
MAX_K = 1000
MAX_QUERY = 10_000
"""Characters in a query at most."""
_FILTER_KEY = re.compile(r"[A-Za-z0-9_.-]{1,64}")


class EmbedderSource(Protocol):
    """Embedders by their name under ``embeddings:`` (``open_embedders(project)``)."""

    def get(self, name: str) -> Embedder:
        """The embedder named ``name``."""
        ...


@dataclass(frozen=True, slots=True)
class Hit:
    """A retrieved chunk, with what an answer needs to cite it."""

    chunk_id: str
    document: str
    """The document's path, relative to the index's source folder."""
    heading_path: tuple[str, ...]
    text: str
    score: float
    """The fused RRF score (hybrid), the cosine similarity (vector) or the BM25 score."""
    rank: int
    """1-based rank in the results."""
    vector_rank: int | None = None
    bm25_rank: int | None = None
    vector_score: float | None = None
    bm25_score: float | None = None
    position: int = 0
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The hit as plain data (what a journaled step records)."""
        return {
            "chunk_id": self.chunk_id,
            "document": self.document,
            "heading_path": list(self.heading_path),
            "text": self.text,
            "score": self.score,
            "rank": self.rank,
            "vector_rank": self.vector_rank,
            "bm25_rank": self.bm25_rank,
            "vector_score": self.vector_score,
            "bm25_score": self.bm25_score,
            "position": self.position,
            "metadata": self.metadata,
        }


class Retrieval:
    """The retrieval indexes of a deployment: the registry (in ``store``), the backend that
    holds their data, and the embedders to query them with."""

    def __init__(
        self,
        store: Store,
        backend: SqlBackend,
        embedders: EmbedderSource | None = None,
        *,
        keep_versions: int = 2,
    ) -> None:
        self.store = store
        self.backend = backend
        self.embedders = embedders
        self.keep_versions = keep_versions

    def index(self, name: str) -> IndexRef:
        """A reference to the index named ``name`` (resolved per organisation at query)."""
        return IndexRef(self, name)

    async def search(
        self,
        name: str,
        query: str,
        *,
        org_id: str,
        k: int = 10,
        filters: Mapping[str, str] | None = None,
        mode: Mode = "hybrid",
        embedder: Embedder | None = None,
    ) -> list[Hit]:
        """``search(self.index(name), ...)``."""
        return await search(
            self.index(name),
            query,
            org_id=org_id,
            k=k,
            filters=filters,
            mode=mode,
            embedder=embedder,
        )

    async def close(self) -> None:
        """Close the backend (the store belongs to the caller)."""
        await self.backend.close()


@dataclass(frozen=True, slots=True)
class IndexRef:
    """An index by name, in a ``Retrieval``."""

    retrieval: Retrieval
    name: str


def rrf(*ranked: list[int], k: int = RRF_K) -> dict[int, float]:
    """Reciprocal rank fusion of ranked key lists: ``key -> sum(1 / (k + rank))``."""
    out: dict[int, float] = {}
    for keys in ranked:
        for rank, key in enumerate(keys, start=1):
            out[key] = out.get(key, 0.0) + 1.0 / (k + rank)
    return out


def check_query(query: str, k: int, mode: str, filters: Mapping[str, str] | None) -> dict[str, str]:
    """The filters as a plain dict if the arguments are valid, else a ``ContextError``."""
    if not isinstance(query, str) or not query.strip():
        raise ContextError("the query is empty", hint="pass the text to search for")
    if len(query) > MAX_QUERY:
        raise ContextError(
            f"the query is {len(query):,} characters long, over the limit of {MAX_QUERY:,}",
            hint="search with a question or a passage, not a document",
        )
    if not 1 <= k <= MAX_K:
        raise ContextError(f"k must be between 1 and {MAX_K} (got {k})")
    if mode not in MODES:
        raise ContextError(f"unknown search mode {mode!r}", hint="one of: " + ", ".join(MODES))
    out: dict[str, str] = {}
    for key, value in (filters or {}).items():
        if not isinstance(key, str) or not _FILTER_KEY.fullmatch(key):
            raise ContextError(
                f"invalid filter key {key!r}",
                hint="a metadata key: letters, digits, '_', '.', '-' (path, ext, title, tags...)",
            )
        if not isinstance(value, str):
            raise ContextError(f"the filter {key} needs a string value (got {value!r})")
        out[key] = value
    return out


async def active_version(store: Store, org_id: str, name: str) -> tuple[IndexInfo, IndexVersion]:
    """The organisation's index and its active version; ``IndexNotFound`` if it has none."""
    info = await get_index(store, org_id, name)
    version = info.version(info.active_version)
    if version is None:
        raise IndexNotFound(
            f"the retrieval index {name!r} has no complete version yet",
            hint=f"build it: `elevenfactor index build {name}`",
        )
    return info, version


def _query_embedder(
    retrieval: Retrieval, info: IndexInfo, version: IndexVersion, embedder: Embedder | None
) -> Embedder:
    if embedder is None:
        ref = str(version.settings.get("embedder_ref", ""))
        if retrieval.embedders is None:
            raise ContextError(
                f"no embedder to query the index {info.name!r} with",
                hint="open the retrieval indexes with the project's embedders",
            )
        embedder = retrieval.embedders.get(ref)
    if embedder.name != version.embedder or embedder.dim != version.dim:
        raise EmbedderMismatch(
            f"the index {info.name!r} was built with {version.embedder} ({version.dim}"
            f" dimensions); it cannot be queried with {embedder.name} ({embedder.dim})",
            hint=f"query it with {version.embedder}, or rebuild it with the new embedder:"
            f" `elevenfactor index build {info.name}`",
        )
    return embedder


async def search(
    ref: IndexRef,
    query: str,
    *,
    org_id: str,
    k: int = 10,
    filters: Mapping[str, str] | None = None,
    mode: Mode = "hybrid",
    embedder: Embedder | None = None,
) -> list[Hit]:
    """The ``k`` best chunks of the index for ``query``, for the organisation ``org_id`` only.

    ``filters`` (``key -> value``) keep chunks whose document's metadata has that value:
    ``path`` is a prefix of the document's path, ``ext`` its extension, any other key a
    front-matter value (or an item of a list, such as ``tags``). ``mode`` is ``hybrid``
    (BM25 and vectors fused by RRF), ``vector`` or ``bm25``. ``embedder`` overrides the
    index's own (it must be the same model: ``EmbedderMismatch`` otherwise).
    """
    wanted = check_query(query, k, mode, filters)
    retrieval = ref.retrieval
    info, version = await active_version(retrieval.store, org_id, ref.name)
    backend = retrieval.backend
    if info.backend != backend.kind:
        raise ContextError(
            f"the index {info.name!r} lives in the {info.backend} backend ({info.location}),"
            f" but the {backend.kind} backend is configured",
            hint="set ELEVENFACTOR_RETRIEVAL_URL to where the index lives, or rebuild it",
        )
    n = k if mode != "hybrid" else max(k, CANDIDATES)
    model = _query_embedder(retrieval, info, version, embedder) if mode != "bm25" else None

    async def by_bm25() -> list[tuple[int, float]]:
        if mode == "vector":
            return []
        return await backend.bm25_search(
            info.id, version.version, org_id, query, n, wanted, total=version.chunks,
            total_terms=version.total_terms, lists=version.bm25_format >= LISTS_FORMAT,
        )  # fmt: skip

    vec: list[tuple[int, float]] = []
    lex_task = asyncio.ensure_future(by_bm25())
    if model is not None:
        # BM25 runs while the query is embedded (a remote model's wait), but not beside the
        # vector search: on a small machine the two slow each other more than they overlap.
        try:
            vector = np.asarray((await model.embed([query]))[0], dtype=np.float32)
        except BaseException:
            lex_task.cancel()
            await asyncio.gather(lex_task, return_exceptions=True)
            raise
    lex = await lex_task
    if model is not None:
        vec = await backend.vector_search(
            info.id, version.version, org_id, vector, n, wanted, total=version.chunks
        )
    vec_rank = {key: (i, s) for i, (key, s) in enumerate(vec, start=1)}
    lex_rank = {key: (i, s) for i, (key, s) in enumerate(lex, start=1)}
    if mode == "hybrid":
        fused = rrf([key for key, _ in vec], [key for key, _ in lex])
        order = sorted(fused, key=lambda key: (-fused[key], key))[:k]
        scores = fused
    else:
        order = [key for key, _ in (vec if mode == "vector" else lex)][:k]
        scores = dict(vec if mode == "vector" else lex)
    rows = await backend.fetch_chunks(info.id, version.version, org_id, order)
    hits: list[Hit] = []
    for key in order:
        row = rows.get(key)
        if row is None:  # not the organisation's, or gone
            continue
        v = vec_rank.get(key)
        b = lex_rank.get(key)
        hits.append(
            Hit(
                chunk_id=row.chunk_id,
                document=row.document,
                heading_path=row.heading_path,
                text=row.text,
                score=scores[key],
                rank=len(hits) + 1,
                vector_rank=v[0] if v else None,
                bm25_rank=b[0] if b else None,
                vector_score=v[1] if v else None,
                bm25_score=b[1] if b else None,
                position=row.position,
                metadata=row.metadata,
            )
        )
    return hits
