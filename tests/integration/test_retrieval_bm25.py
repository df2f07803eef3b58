"""BM25 scored in SQL is real BM25, the same on both backends: every score equals the in-memory
reference (``bm25_scores``) over the same chunks, and so does the order."""

from __future__ import annotations

from pathlib import Path

import pytest

from elevenfactor.config._retrieval import IndexConfig
from elevenfactor.context._bm25 import bm25_scores
from elevenfactor.context._chunk import chunk_document
from elevenfactor.context._index import get_index
from elevenfactor.context._index_build import build_index
from elevenfactor.context._ingest import scan
from elevenfactor.context._retrieve import Retrieval, search
from tests.integration.test_retrieval import ORG, Embedders, write_corpus
from tests.integration.test_retrieval_doubles import WordHashEmbedderDouble
from tests.support.pgvector import RetrievalEnv, pgvector_url, retrieval_env

pytestmark = pytest.mark.integration
__all__ = ["pgvector_url", "retrieval_env"]  # fixtures used here

QUERIES = [
    "installer",
    "signing key rotation",
    "the installer needs python",
    "limit per minute for each API key",
    "espresso machine office night",
    "backups month",
    "key key KEY",
]


async def test_sql_bm25_equals_the_reference_on_every_chunk(
    retrieval_env: RetrievalEnv, tmp_path: Path
) -> None:
    source = write_corpus(tmp_path / "docs")
    for i in range(20):  # more documents, so document frequencies vary
        (source / f"extra{i}.md").write_text(
            f"# Extra {i}\n\n" + "The installer key " * (i % 4) + f"filler text number {i}.\n"
        )
    double = WordHashEmbedderDouble()
    config = IndexConfig(source=str(source), embedder="test", chunk_tokens=40, overlap_tokens=5)
    r = Retrieval(retrieval_env.store, retrieval_env.backend, Embedders(test=double))
    await build_index(r, "docs", config, source=source, org_id=ORG, embedder=double)

    chunks = [
        c
        for d in scan(source, max_bytes=config.max_document_bytes).documents
        for c in chunk_document(d, chunk_tokens=40, overlap_tokens=5)
    ]
    texts = {c.key: c.embed_text for c in chunks}
    info = await get_index(retrieval_env.store, ORG, "docs")
    version = info.version(1)
    assert version is not None and version.chunks == len(texts)
    for query in QUERIES:
        expected = bm25_scores(texts, query)
        got = await retrieval_env.backend.bm25_search(
            info.id, 1, ORG, query, 1000, {},
            total=version.chunks, total_terms=version.total_terms,
        )  # fmt: skip
        assert dict(got) == pytest.approx(expected, rel=1e-6), query
        ranked = sorted(expected, key=lambda k: (-expected[k], k))
        assert [k for k, _ in got] == ranked, query
        hits = await search(r.index("docs"), query, org_id=ORG, k=5, mode="bm25")
        assert [h.bm25_score for h in hits] == pytest.approx([expected[k] for k in ranked[:5]])
