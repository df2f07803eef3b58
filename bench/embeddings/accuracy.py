"""How close each way to run the local embedder is to the numpy float32 reference, on real
text: the Q&A set of ``tests/data/retrieval`` (its documents cut into 200-token chunks, as an
index build cuts them, and its questions) and the texts of ``tests/data/minilm_reference.json``.

For each variant: the cosine of its vectors to the reference's (mean and min, chunks and short
texts apart), and retrieval by brute force, question against every chunk: recall@1 and @5 of the
answering document, and how often its first chunk and its top five chunks are the reference's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import yaml

from elevenfactor.context._chunk import chunk_document, token_counter
from elevenfactor.context._embed_local import LocalEmbedder
from elevenfactor.context._ingest import scan

DATA = Path(__file__).resolve().parents[2] / "tests" / "data"
F32 = npt.NDArray[np.float32]


def _texts(embedder: LocalEmbedder) -> tuple[list[str], list[str], list[str], list[str]]:
    """The chunk texts and their documents, the questions and their answering documents."""
    docs = scan(DATA / "retrieval" / "docs", max_bytes=1 << 24).documents
    count = token_counter(embedder)
    chunks = [
        c for d in docs for c in chunk_document(d, chunk_tokens=200, overlap_tokens=40, count=count)
    ]
    items = yaml.safe_load((DATA / "retrieval" / "questions.yaml").read_text("utf-8"))
    return (
        [c.embed_text for c in chunks],
        [c.document for c in chunks],
        [q["q"] for q in items],
        [q["doc"] for q in items],
    )


def _short() -> list[str]:
    items = json.loads((DATA / "minilm_reference.json").read_text("utf-8"))["items"]
    return [item["text"] for item in items]


def _retrieval(
    questions: F32, chunks: F32, chunk_docs: list[str], answers: list[str], reference: Any
) -> dict[str, float]:
    top = np.argsort(-(questions @ chunks.T), axis=1)[:, :5]
    docs = [[chunk_docs[i] for i in row] for row in top]
    out = {
        "recall_at_1": float(np.mean([d[0] == a for d, a in zip(docs, answers, strict=True)])),
        "recall_at_5": float(np.mean([a in d for d, a in zip(docs, answers, strict=True)])),
    }
    if reference is not None:
        out["same_top1_chunk"] = float(np.mean(top[:, 0] == reference[:, 0]))
        out["top5_overlap"] = float(
            np.mean([len(set(a) & set(b)) / 5 for a, b in zip(top, reference, strict=True)])
        )
    return out


def accuracy(variants: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per variant (``LocalEmbedder`` settings): cosine to numpy float32 and retrieval."""
    reference = LocalEmbedder(runtime="numpy")
    chunk_texts, chunk_docs, questions, answers = _texts(reference)
    short = questions + _short()
    ref = {"chunks": reference.embed_sync(chunk_texts), "short": reference.embed_sync(short)}
    ref_top = np.argsort(-(ref["short"][: len(questions)] @ ref["chunks"].T), axis=1)[:, :5]
    out: dict[str, Any] = {
        "texts": {"chunks": len(chunk_texts), "short": len(short), "questions": len(questions)},
        "reference": _retrieval(
            ref["short"][: len(questions)], ref["chunks"], chunk_docs, answers, None
        ),
    }
    for name, settings in variants.items():
        embedder = LocalEmbedder(**settings)
        got = {"chunks": embedder.embed_sync(chunk_texts), "short": embedder.embed_sync(short)}
        asked = got["short"][: len(questions)]
        cos = {k: (got[k].astype(np.float64) * ref[k]).sum(axis=1) for k in got}
        out[name] = {
            "name": embedder.name,
            **{f"cosine_{k}_mean": float(v.mean()) for k, v in cos.items()},
            **{f"cosine_{k}_min": float(v.min()) for k, v in cos.items()},
            **_retrieval(asked, got["chunks"], chunk_docs, answers, ref_top),
        }
    return out
