"""Factor 2, context: prompts as versioned files, the context window's token budget, embeddings
and retrieval (RAG)."""

from __future__ import annotations

from elevenfactor.context._assemble import Assembled, Item, Summariser, assemble
from elevenfactor.context._ctx_target import ModelBudget, budget_for
from elevenfactor.context._embed_local import LocalEmbedder
from elevenfactor.context._embed_openai import OpenAIEmbedder
from elevenfactor.context._embed_registry import (
    EmbedderRegistry,
    MeteredEmbedder,
    open_embedders,
)
from elevenfactor.context._embedder import Embedder, Embedding
from elevenfactor.context._index import IndexInfo, IndexVersion, get_index, list_indexes
from elevenfactor.context._index_build import BuildProgress, BuildReport, build_index
from elevenfactor.context._index_ops import delete_index, open_retrieval, retrieval_url
from elevenfactor.context._manifest import (
    LeftOut,
    Manifest,
    SectionReport,
    SummaryReport,
    Truncation,
    manifest_table,
)
from elevenfactor.context._prompts import (
    Prompt,
    PromptRegistry,
    PromptVersion,
    load_prompts,
    parse_ref,
    prompt_diff,
    record_version,
)
from elevenfactor.context._retrieve import MODES, Hit, IndexRef, Mode, Retrieval, rrf, search
from elevenfactor.context._spec import (
    ContextSpec,
    HistorySection,
    InputSection,
    MemorySection,
    PassagesSection,
    WholeSection,
)
from elevenfactor.context._tokens import (
    CALIBRATED,
    EstimateCounter,
    EstimateWeights,
    GGUFCounter,
    TokenCounter,
    counter_for,
)

__all__ = [
    "CALIBRATED",
    "MODES",
    "Assembled",
    "BuildProgress",
    "BuildReport",
    "ContextSpec",
    "Embedder",
    "EmbedderRegistry",
    "Embedding",
    "EstimateCounter",
    "EstimateWeights",
    "GGUFCounter",
    "HistorySection",
    "Hit",
    "IndexInfo",
    "IndexRef",
    "IndexVersion",
    "InputSection",
    "Item",
    "LeftOut",
    "LocalEmbedder",
    "Manifest",
    "MemorySection",
    "MeteredEmbedder",
    "Mode",
    "ModelBudget",
    "OpenAIEmbedder",
    "PassagesSection",
    "Prompt",
    "PromptRegistry",
    "PromptVersion",
    "Retrieval",
    "SectionReport",
    "Summariser",
    "SummaryReport",
    "TokenCounter",
    "Truncation",
    "WholeSection",
    "assemble",
    "budget_for",
    "build_index",
    "counter_for",
    "delete_index",
    "get_index",
    "list_indexes",
    "load_prompts",
    "manifest_table",
    "open_embedders",
    "open_retrieval",
    "parse_ref",
    "prompt_diff",
    "record_version",
    "retrieval_url",
    "rrf",
    "search",
]
