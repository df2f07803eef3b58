"""Factor 2, context: prompts as versioned files, the context window's token budget, embeddings
and retrieval (RAG)."""

from __future__ import annotations

from elevenfactor.context._embedder import Embedder, Embedding

__all__ = ["Embedder", "Embedding"]
