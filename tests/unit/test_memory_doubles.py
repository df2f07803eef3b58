"""Test doubles for the memory tests (no tests here): a deterministic word-hashing embedder.

``WordHashEmbedderDouble`` is not a language model: each lower-cased word adds 1 to a bucket
chosen by its SHA-256, and the vector is normalised. Texts sharing words are similar, texts
sharing none are orthogonal (up to bucket collisions), identical texts have cosine 1. That is
enough to test ranking, supersession and scoping deterministically; the integration tests use
the real local embedder.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import numpy as np

from elevenfactor.context import Embedding


class WordHashEmbedderDouble:
    """A deterministic stand-in for an ``Embedder`` (see the module docstring)."""

    def __init__(self, name: str = "test/word-hash", dim: int = 256) -> None:
        self._name = name
        self._dim = dim
        self.calls = 0

    @property
    def name(self) -> str:
        return self._name

    @property
    def dim(self) -> int:
        return self._dim

    async def embed(self, texts: Sequence[str]) -> Embedding:
        self.calls += 1
        out = np.zeros((len(texts), self._dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"[a-z0-9]+", text.lower()):
                bucket = int.from_bytes(hashlib.sha256(word.encode()).digest()[:4], "big")
                out[row, bucket % self._dim] += 1.0
            norm = float(np.linalg.norm(out[row]))
            if norm:
                out[row] /= norm
        return out
