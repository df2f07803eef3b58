"""The response headers that tell a client its answer came from the response cache."""

from __future__ import annotations

from elevenfactor.models import Call

__all__ = ["CACHE", "CACHE_SIMILARITY", "cache_headers"]

CACHE = "x-elevenfactor-cache"
"""``hit`` (an identical request's answer) or ``semantic`` (a paraphrase's); absent on a miss."""
CACHE_SIMILARITY = "x-elevenfactor-cache-similarity"
"""On a semantic hit: the cosine similarity of the cached question to this one (4 decimals)."""


def cache_headers(call: Call) -> dict[str, str]:
    """The cache headers of a call that was answered (none unless it hit)."""
    final = call.final
    if not call.cache_hit or final is None:
        return {}
    if final.outcome == "semantic_hit" and final.similarity is not None:
        return {CACHE: "semantic", CACHE_SIMILARITY: f"{final.similarity:.4f}"}
    return {CACHE: "hit"}
