"""Retrieval quality of each way to run the local embedder: the recall@5 and recall@1 of
``test_retrieval_quality`` (same Q&A set, same thresholds) with the numpy runtime, onnxruntime in
float32 and onnxruntime with int8 products, on the embedded backend (the backend does not change
what the embedder finds; ``test_retrieval_quality`` covers both with the default runtime).

The figures are printed (``-s``). Measured: recall@5 1.0 for vector and hybrid search with all
three; the int8 vectors are at a cosine of about 0.99 to the float32 ones, close enough to rank
the same answers first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from elevenfactor.config._retrieval import IndexConfig
from elevenfactor.context._embed_local import LocalEmbedder
from elevenfactor.context._index_build import build_index
from elevenfactor.context._index_embedded import EmbeddedBackend
from elevenfactor.context._retrieve import Retrieval, search
from elevenfactor.store import migrate, open_store
from tests.integration.test_retrieval_quality import DATA, THRESHOLDS, TOP1

pytestmark = pytest.mark.integration
ORG = "org_default"


class _One:
    def __init__(self, embedder: LocalEmbedder) -> None:
        self.embedder = embedder

    def get(self, name: str) -> LocalEmbedder:
        return self.embedder


@pytest.mark.parametrize(
    "settings",
    [{"runtime": "numpy"}, {"runtime": "onnx"}, {"runtime": "onnx", "quantize": "int8"}],
    ids=["numpy", "onnx-fp32", "onnx-int8"],
)
async def test_recall_with_each_runtime(settings: dict[str, Any], tmp_path: Path) -> None:
    embedder = LocalEmbedder(**settings)
    questions = yaml.safe_load((DATA / "questions.yaml").read_text())
    store = await open_store(f"sqlite:///{tmp_path}/main.db")
    await migrate(store)
    backend = EmbeddedBackend(tmp_path / "indexes")
    try:
        r = Retrieval(store, backend, _One(embedder))
        config = IndexConfig(source=str(DATA / "docs"), embedder="local")
        await build_index(r, "qa", config, source=DATA / "docs", org_id=ORG, embedder=embedder)
        recall: dict[str, float] = {}
        top1: dict[str, float] = {}
        for mode in ("hybrid", "vector"):
            found = first = 0
            for item in questions:
                hits = await search(r.index("qa"), item["q"], org_id=ORG, k=5, mode=mode)
                documents = [h.document for h in hits]
                found += item["doc"] in documents
                first += documents[:1] == [item["doc"]]
            recall[mode] = found / len(questions)
            top1[mode] = first / len(questions)
    finally:
        await backend.close()
        await store.close()
    print(f"\n{embedder.name} on {embedder.runtime}: recall@5 {recall}, recall@1 {top1}")
    for mode, value in recall.items():
        assert value >= THRESHOLDS[mode], (mode, recall)
        assert top1[mode] >= TOP1[mode], (mode, top1)
