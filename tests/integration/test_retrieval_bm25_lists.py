"""BM25 from impact-ordered lists (``_index_lists``, ``_index_bm25``) on both backends: exact
while a term's postings fit under the pruning limit; recall@10 >= 0.95 against exact BM25 when
common terms are cut far below their postings (in fact exact: the safe stop); exact under
filters (a filtered query never prunes); each chunk's organisation checked; and a version built
before the lists is scored from its postings, then given lists in place."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from elevenfactor.context import _index_bm25
from elevenfactor.context._bm25 import bm25_scores
from elevenfactor.context._chunk import Chunk, chunk_document
from elevenfactor.context._index import (
    create_index,
    get_index,
    publish_version,
    set_bm25_format,
    start_version,
)
from elevenfactor.context._index_lists import LISTS_FORMAT
from elevenfactor.context._ingest import Document, scan
from elevenfactor.context._retrieve import search
from tests.integration.test_retrieval import ORG, OTHER_ORG, build, retrieval, write_corpus
from tests.integration.test_retrieval_doubles import WordHashEmbedderDouble
from tests.support.pgvector import RetrievalEnv, pgvector_url, retrieval_env

pytestmark = pytest.mark.integration
__all__ = ["pgvector_url", "retrieval_env"]  # fixtures used here

DIM = 8
VOCAB = [f"t{i}" for i in range(600)]


def generated(
    n_docs: int = 300, per_doc: int = 8, seed: int = 11
) -> list[tuple[Document, list[Chunk]]]:
    """Documents of chunks of 8 to 60 words drawn from a Zipf law (the commonest words are in
    nearly every chunk), with random 63-bit keys (their order is not the order written)."""
    rng = np.random.default_rng(seed)
    keys = rng.choice(2**62, size=n_docs * per_doc, replace=False) + 1
    docs = []
    for d in range(n_docs):
        path = f"{'even' if d % 2 == 0 else 'odd'}/{d:04d}.md"
        chunks = []
        for j in range(per_doc):
            ranks = np.minimum(rng.zipf(1.3, int(rng.integers(8, 61))) - 1, len(VOCAB) - 1)
            key = int(keys[d * per_doc + j])
            text = " ".join(VOCAB[r] for r in ranks)
            chunks.append(Chunk(f"c{key:023d}", key, path, j, (), text, len(ranks)))
        meta = {"path": path, "ext": "md", "shard": str(d % 10)}
        docs.append((Document(path, f"h{d}", 100, (), meta), chunks))
    return docs


def queries(count: int = 40, seed: int = 5) -> list[str]:
    """One of the commonest words (in most chunks), then one to three rarer ones."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        words = [VOCAB[int(rng.integers(0, 8))]]
        words += [VOCAB[int(r)] for r in rng.integers(8, 300, int(rng.integers(1, 4)))]
        out.append(" ".join(words))
    return out


async def write_generated(
    env: RetrievalEnv, docs: list[tuple[Document, list[Chunk]]], other: set[str] | None = None
) -> tuple[str, int, dict[str, int]]:
    """A published version holding ``docs`` (random vectors), those whose path is in ``other``
    written for another organisation: ``(index id, version, counts)``."""
    store, backend = env.store, env.backend
    settings = {"embedder_ref": "test"}
    info = await create_index(
        store, ORG, "generated", backend=backend.kind, location=backend.location,
        embedder="test/random", dim=DIM, settings=settings, source=None,
    )  # fmt: skip
    version = await start_version(
        store, info.id, embedder="test/random", dim=DIM, settings=settings
    )
    await backend.prepare(info.id, version, DIM)
    rng = np.random.default_rng(1)
    items: dict[str, list[Any]] = {ORG: [], OTHER_ORG: []}
    for doc, chunks in docs:
        vectors = rng.standard_normal((len(chunks), DIM)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        items[OTHER_ORG if doc.path in (other or set()) else ORG].append((doc, chunks, vectors))
    for org, part in items.items():
        if part:
            await backend.write_documents(info.id, version, org, part)
    counts = await backend.finalize(info.id, version, DIM)
    assert counts["bm25_format"] == LISTS_FORMAT
    await publish_version(
        store, info, version, counts=counts | {"embedded": 0, "reused": 0}, skipped=[]
    )
    return info.id, version, counts


def ranked(scores: dict[int, float]) -> list[int]:
    return sorted(scores, key=lambda k: (-scores[k], k))


def recall_at_10(found: list[tuple[int, float]], expected: dict[int, float]) -> float:
    """Recall@10 against exact BM25, counting ties: a chunk found counts if its exact score
    reaches the exact 10th (the order among equal scores is arbitrary)."""
    top = ranked(expected)[:10]
    if not top:
        return 1.0
    floor = expected[top[-1]] * (1 - 1e-6)
    return sum(1 for k, _ in found[:10] if expected.get(k, 0.0) >= floor) / len(top)


async def test_pruned_lists_keep_recall_and_lists_that_fit_are_exact(
    retrieval_env: RetrievalEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = generated()
    index_id, version, counts = await write_generated(retrieval_env, docs)
    texts = {c.key: c.embed_text for _, chunks in docs for c in chunks}
    common: dict[str, Any] = {"total": counts["chunks"], "total_terms": counts["total_terms"]}
    backend = retrieval_env.backend

    # The default limit is above every list here: the same scores and order as the reference.
    assert _index_bm25.prune_limit(10) >= len(texts)
    exact: dict[str, dict[int, float]] = {}
    for query in queries():
        exact[query] = expected = bm25_scores(texts, query)
        got = await backend.bm25_search(index_id, version, ORG, query, 10, {}, **common)
        assert [k for k, _ in got] == ranked(expected)[:10], query
        assert [s for _, s in got] == pytest.approx([expected[k] for k in ranked(expected)[:10]])

    # Cut every list to its 100 highest impacts: the commonest terms lose 90% and more.
    monkeypatch.setattr(_index_bm25, "PRUNE_MIN", 100)
    monkeypatch.setattr(_index_bm25, "PRUNE_PER_RESULT", 0)
    first_words = {q.split()[0] for q in queries()}
    df = {t: sum(1 for text in texts.values() if t in text.split()) for t in first_words}
    assert min(df.values()) >= 1000, df  # >= 10 x the limit
    reads: list[int | None] = []
    read = _index_bm25._read

    async def counted(reader: Any, terms: Sequence[str], limit: int | None) -> Any:
        reads.append(limit)
        return await read(reader, terms, limit)

    monkeypatch.setattr(_index_bm25, "_read", counted)
    recalls = []
    for query, expected in exact.items():
        got = await backend.bm25_search(index_id, version, ORG, query, 10, {}, **common)
        assert len(got) == 10
        recalls.append(recall_at_10(got, expected))
        assert [s for _, s in got] == pytest.approx([expected[k] for k, _ in got])
    assert float(np.mean(recalls)) >= 0.95, recalls
    # The safe stop: the answer is exact, from the prefixes for most queries; the others read
    # the cut lists whole.
    assert recalls == [1.0] * len(recalls)
    assert 0 < reads.count(None) <= len(exact) // 2, reads


@pytest.mark.parametrize("verify_limit", [4096, 0])  # check the best in SQL; read what passes
async def test_filters_stay_exact_when_lists_are_pruned(
    retrieval_env: RetrievalEnv, monkeypatch: pytest.MonkeyPatch, verify_limit: int
) -> None:
    docs = generated(n_docs=120)
    index_id, version, counts = await write_generated(retrieval_env, docs)
    monkeypatch.setattr(_index_bm25, "PRUNE_MIN", 20)
    monkeypatch.setattr(_index_bm25, "PRUNE_PER_RESULT", 0)
    monkeypatch.setattr(_index_bm25, "VERIFY_LIMIT", verify_limit)
    common: dict[str, Any] = {"total": counts["chunks"], "total_terms": counts["total_terms"]}
    corpus_texts = {c.key: c.embed_text for _, chunks in docs for c in chunks}
    cases: list[tuple[dict[str, str], Callable[[Document], bool]]] = [
        ({"path": "even/"}, lambda d: d.path.startswith("even/")),  # half the chunks
        ({"shard": "3"}, lambda d: d.metadata["shard"] == "3"),  # a tenth
        ({"path": "odd/0007.md"}, lambda d: d.path == "odd/0007.md"),  # one document
    ]
    for query in queries(12):
        everything = bm25_scores(corpus_texts, query)
        for filters, keep in cases:
            allowed = {c.key for d, chunks in docs if keep(d) for c in chunks}
            expected = {k: s for k, s in everything.items() if k in allowed}
            got = await retrieval_env.backend.bm25_search(
                index_id, version, ORG, query, 10, filters, **common
            )
            assert [k for k, _ in got] == ranked(expected)[:10], (query, filters)
            assert [s for _, s in got] == pytest.approx(
                [expected[k] for k in ranked(expected)[:10]]
            )
        # Another organisation's query of this index finds nothing, filtered or not.
        for filters in ({}, {"shard": "3"}):
            assert not await retrieval_env.backend.bm25_search(
                index_id, version, "org_other", query, 10, filters, **common
            )


async def test_a_version_holding_two_organisations_checks_each_chunk(
    retrieval_env: RetrievalEnv,
) -> None:
    # ``build_index`` never mixes organisations in a version; the backend still checks.
    docs = generated(n_docs=60)
    theirs = {d.path for d, _ in docs[::3]}
    index_id, version, counts = await write_generated(retrieval_env, docs, theirs)
    common: dict[str, Any] = {"total": counts["chunks"], "total_terms": counts["total_terms"]}
    texts = {c.key: c.embed_text for _, chunks in docs for c in chunks}
    for org, paths in ((ORG, {d.path for d, _ in docs} - theirs), (OTHER_ORG, theirs)):
        owned = {c.key for d, chunks in docs if d.path in paths for c in chunks}
        for query in queries(8):
            expected = {k: s for k, s in bm25_scores(texts, query).items() if k in owned}
            got = await retrieval_env.backend.bm25_search(
                index_id, version, org, query, 10, {}, **common
            )
            assert [k for k, _ in got] == ranked(expected)[:10], (org, query)
    assert not await retrieval_env.backend.bm25_search(
        index_id, version, "org_nobody", queries(1)[0], 10, {}, **common
    )


async def test_a_version_built_before_the_lists_is_scored_then_upgraded_in_place(
    retrieval_env: RetrievalEnv, tmp_path: Path
) -> None:
    source = write_corpus(tmp_path / "docs")
    double = WordHashEmbedderDouble()
    await build(retrieval_env, source, double)
    info = await get_index(retrieval_env.store, ORG, "docs")
    assert info.version(1).bm25_format == LISTS_FORMAT  # type: ignore[union-attr]
    # Make version 1 what a build before migration m016 left: postings only.
    backend = retrieval_env.backend
    db, ns = await backend._db(info.id, 1), backend._ns(info.id, 1)
    for table in ("bm25_lists", "bm25_chunks", "bm25_meta"):
        await db.execute(f"DROP TABLE {ns}.{table}")
    await set_bm25_format(retrieval_env.store, info.id, 1, 0)

    chunks = [
        c
        for d in scan(source, max_bytes=10_000_000).documents
        for c in chunk_document(d, chunk_tokens=200, overlap_tokens=40)
    ]
    texts = {c.key: c.embed_text for c in chunks}
    ref = retrieval(retrieval_env, double).index("docs")
    for query in ("installer", "signing key rotation", "espresso machine office night"):
        expected = bm25_scores(texts, query)
        hits = await search(ref, query, org_id=ORG, k=5, mode="bm25")
        assert [h.bm25_score for h in hits] == pytest.approx(
            [expected[k] for k in ranked(expected)[:5]]
        )
        assert (await search(ref, query, org_id=ORG, k=5))[0].document == hits[0].document

    # A build with nothing changed adds the lists to the active version; nothing re-embedded.
    calls = double.calls
    report = await build(retrieval_env, source, double)
    assert not report.published and report.version == 1 and double.calls == calls
    info = await get_index(retrieval_env.store, ORG, "docs")
    assert info.version(1).bm25_format == LISTS_FORMAT  # type: ignore[union-attr]
    for query in ("installer", "signing key rotation"):
        expected = bm25_scores(texts, query)
        hits = await search(ref, query, org_id=ORG, k=5, mode="bm25")
        assert [h.bm25_score for h in hits] == pytest.approx(
            [expected[k] for k in ranked(expected)[:5]]
        )
