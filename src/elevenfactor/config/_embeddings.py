"""The project file's ``embeddings:``: Embedding models: the local all-MiniLM-L6-v2 and OpenAI-
compatible upstreams.
"""

from __future__ import annotations

from elevenfactor.config._models import _Strict

__all__ = ["EmbeddingsConfig"]


class EmbeddingsConfig(_Strict):
    """Embedding models: the local all-MiniLM-L6-v2 and OpenAI-compatible upstreams."""
