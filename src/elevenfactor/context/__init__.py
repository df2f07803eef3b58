"""Factor 2, context: prompts as versioned files, the context window's token budget, embeddings
and retrieval (RAG)."""

from __future__ import annotations

from elevenfactor.context._assemble import Assembled, Item, Summariser, assemble
from elevenfactor.context._ctx_target import ModelBudget, budget_for
from elevenfactor.context._embedder import Embedder, Embedding
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
    "Assembled",
    "ContextSpec",
    "Embedder",
    "Embedding",
    "EstimateCounter",
    "EstimateWeights",
    "GGUFCounter",
    "HistorySection",
    "InputSection",
    "Item",
    "LeftOut",
    "Manifest",
    "MemorySection",
    "ModelBudget",
    "PassagesSection",
    "Prompt",
    "PromptRegistry",
    "PromptVersion",
    "SectionReport",
    "Summariser",
    "SummaryReport",
    "TokenCounter",
    "Truncation",
    "WholeSection",
    "assemble",
    "budget_for",
    "counter_for",
    "load_prompts",
    "manifest_table",
    "parse_ref",
    "prompt_diff",
    "record_version",
]
