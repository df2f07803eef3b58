"""Synthetic corpora for the retrieval benchmark.

Query benchmarks use synthetic vectors (no model could embed 100k chunks here in reasonable
time), 384-dimensional unit vectors of two shapes:

- ``lowrank`` (embedding-like): points around one random centre per 100 chunks in a
  48-dimensional subspace, plus isotropic noise; queries are stored points moved within the
  subspace, plus noise. A query's nearest neighbours have cosines of about 0.60 (1st), 0.40
  (10th), 0.31 (100th), 0.20 (1000th): the spread of all-MiniLM-L6-v2 between a question and
  the passages of a corpus, where the answer stands out but not by much.
- ``isotropic`` (the hard case): points around one random centre per 100 chunks in all 384
  dimensions with isotropic noise; a query is a stored point plus a little noise. After that
  point (0.89) come its cluster's other members, nearly tied (0.70 for the 2nd, 0.68 for the
  10th): an approximate index finds the exact 2nd to 10th only by luck among near-ties.

Each chunk has a pseudo-word text (a Zipf draw from a 5,000-word vocabulary, 30 words) so BM25
has postings to score; a query has three words drawn the same way, without the 50 most common.

The ingestion benchmark uses real prose: the Q&A test documents, each copied many times with a
different number in every paragraph, so no two chunks share a text (nothing is reused).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from elevenfactor.context._chunk import Chunk
from elevenfactor.context._ingest import Document
from elevenfactor.context._retr_formats import Section

__all__ = ["Synthetic", "make_markdown_corpus", "synthetic"]

DIM = 384
LATENT = 48
DOCS_OF = 10
"""Chunks per synthetic document."""
VOCAB = [f"w{i}" for i in range(5000)]
QA_DOCS = Path(__file__).resolve().parents[2] / "tests" / "data" / "retrieval" / "docs"


@dataclass
class Synthetic:
    """``n`` chunks in documents of ``DOCS_OF``, their vectors, and queries."""

    docs: list[tuple[Document, list[Chunk]]]
    vectors: np.ndarray
    queries: np.ndarray
    query_texts: list[str]


def _unit(rows: np.ndarray) -> np.ndarray:
    out: np.ndarray = (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)
    return out


def _vectors(
    kind: str, n: int, n_queries: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Stored vectors and queries of one of the two shapes (see the module docstring)."""
    picks = rng.integers(0, n, n_queries)
    if kind == "isotropic":
        centres = rng.standard_normal((max(1, n // 100), DIM)).astype(np.float32)
        labels = rng.integers(0, len(centres), n)
        noise = rng.standard_normal((n, DIM)).astype(np.float32)
        vectors = _unit(centres[labels] + 0.6 * noise)
        extra = rng.standard_normal((n_queries, DIM)).astype(np.float32)
        return vectors, _unit(vectors[picks] + 0.5 * extra / np.sqrt(DIM))
    basis = np.linalg.qr(rng.standard_normal((DIM, LATENT)))[0].T.astype(np.float32)
    centres = rng.standard_normal((max(1, n // 100), LATENT)).astype(np.float32)
    labels = rng.integers(0, len(centres), n)
    latent = centres[labels] + rng.standard_normal((n, LATENT)).astype(np.float32)
    vectors = _unit(latent @ basis + 0.35 * rng.standard_normal((n, DIM)).astype(np.float32))
    near = latent[picks] + 0.8 * rng.standard_normal((n_queries, LATENT)).astype(np.float32)
    queries = _unit(near @ basis + 0.35 * rng.standard_normal((n_queries, DIM)).astype(np.float32))
    return vectors, queries


def synthetic(n: int, n_queries: int, kind: str = "lowrank", seed: int = 7) -> Synthetic:
    """A corpus of ``n`` synthetic chunks and ``n_queries`` queries; ``kind`` is ``lowrank``
    or ``isotropic``."""
    rng = np.random.default_rng(seed)
    vectors, queries = _vectors(kind, n, n_queries, rng)
    ranks = np.minimum(rng.zipf(1.2, (n, 30)) - 1, len(VOCAB) - 1)
    docs: list[tuple[Document, list[Chunk]]] = []
    for d in range(0, n, DOCS_OF):
        path = f"synthetic/{d // DOCS_OF:06d}.md"
        chunks = []
        for i in range(d, min(n, d + DOCS_OF)):
            text = " ".join(VOCAB[r] for r in ranks[i])
            chunks.append(Chunk(f"c{i:023d}", i + 1, path, i - d, ("Synthetic",), text, 30))
        meta = {"path": path, "ext": "md", "shard": str(d % 7)}
        doc = Document(path, f"h{d}", 1000, (Section(("Synthetic",), ()),), meta)
        docs.append((doc, chunks))
    # Query words follow the texts' Zipf law, without its 50 most common words (the stand-ins
    # of the stop words a real analyser drops).
    words = 50 + np.minimum(rng.zipf(1.2, (n_queries, 3)) - 1, len(VOCAB) - 51)
    texts = [" ".join(VOCAB[w] for w in row) for row in words]
    return Synthetic(docs, vectors, queries, texts)


def make_markdown_corpus(folder: Path, copies: int) -> int:
    """Write ``copies`` numbered variants of each Q&A document; returns the files written."""
    folder.mkdir(parents=True, exist_ok=True)
    sources = sorted(QA_DOCS.glob("*.md"))
    for c in range(copies):
        for src in sources:
            text = src.read_text()
            text = re.sub(r"(?m)^([A-Z][^\n]{20,})$", rf"\1 (variant {c}.)", text)
            (folder / f"{src.stem}-{c:04d}.md").write_text(text)
    return copies * len(sources)
