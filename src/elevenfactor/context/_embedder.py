"""The ``Embedder`` protocol: text in, unit vectors out.

Retrieval indexes, the semantic cache and long-term memory all embed through it; the local
all-MiniLM-L6-v2 and an OpenAI-compatible ``/v1/embeddings`` upstream are two implementations.
An index records its embedder's ``name`` (and ``dim``), so querying it with another is refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt

__all__ = ["Embedder", "Embedding"]

Embedding = npt.NDArray[np.float32]
"""A ``(n, dim)`` float32 array of L2-normalised rows (cosine similarity is a dot product)."""


class Embedder(Protocol):
    """Turns texts into vectors."""

    @property
    def name(self) -> str:
        """A stable id of the model and its settings (``local/all-MiniLM-L6-v2``): what an index
        built with it records."""
        ...

    @property
    def dim(self) -> int:
        """The vectors' dimension."""
        ...

    async def embed(self, texts: Sequence[str]) -> Embedding:
        """One L2-normalised row per text, in order."""
        ...
