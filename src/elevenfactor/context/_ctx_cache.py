"""A small bounded cache for token counts (and other values derived from message content).

Keys are tuples of the strings they depend on, so a lookup hashes each string once per string
object (Python caches a string's hash): re-assembling a long session costs a dict lookup per
message, not a pass over its text. When full, the oldest half is evicted (insertion order).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from itertools import islice
from typing import Generic, TypeVar

__all__ = ["BoundedCache"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class BoundedCache(Generic[K, V]):
    """A dict of at most ``size`` entries; thread-safe enough for memoisation (a race computes a
    value twice, never returns a wrong one)."""

    def __init__(self, size: int = 16_384) -> None:
        if size < 2:
            raise ValueError("size must be at least 2")
        self.size = size
        self.data: dict[K, V] = {}
        """The entries (read it directly for a fast lookup; add through ``get``)."""
        self.hits = 0
        self.misses = 0

    def get(self, key: K, compute: Callable[[], V]) -> V:
        """The value for ``key``, computed (and kept) on a miss."""
        try:
            value = self.data[key]
        except KeyError:
            pass
        else:
            self.hits += 1
            return value
        self.misses += 1
        value = compute()
        if len(self.data) >= self.size:
            for old in list(islice(self.data, self.size // 2)):
                self.data.pop(old, None)
        self.data[key] = value
        return value

    def clear(self) -> None:
        """Forget every entry."""
        self.data.clear()

    def __len__(self) -> int:
        return len(self.data)
