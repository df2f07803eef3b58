"""Shortening a long text to a token target: its head and tail kept, a marker in between."""

from __future__ import annotations

from typing import TYPE_CHECKING

from elevenfactor.context._ctx_cache import BoundedCache

if TYPE_CHECKING:
    from elevenfactor.context._tokens import TokenCounter

__all__ = ["MARKER", "truncate_middle"]

MARKER = "\n[... {n} tokens cut ...]\n"
"""What stands in for the cut middle; ``{n}`` is the number of tokens cut."""

_HEAD_SHARE = 0.6
_CACHE: BoundedCache[tuple[str, int, str], tuple[str, int]] = BoundedCache(4096)


def truncate_middle(counter: TokenCounter, text: str, target: int) -> tuple[str, int]:
    """``text`` within ``target`` tokens (as ``counter`` counts them) and its token count: 60 %
    head, 40 % tail, and a marker naming how many tokens were cut. Returned unchanged when it
    already fits. Results are cached (the same text and target give the same string)."""
    return _CACHE.get((counter.name, target, text), lambda: _truncate(counter, text, target))


def _truncate(counter: TokenCounter, text: str, target: int) -> tuple[str, int]:
    n = counter.count(text)
    if n <= target:
        return text, n
    marker_tokens = counter.count(MARKER.format(n=n))
    chars = int((target - marker_tokens) * len(text) / n)
    for _ in range(8):
        if chars <= 0:
            break
        head_chars = int(chars * _HEAD_SHARE)
        head = text[:head_chars]
        tail = text[len(text) - (chars - head_chars) :] if chars > head_chars else ""
        cut = max(1, n - counter.count(head) - counter.count(tail))
        out = head + MARKER.format(n=cut) + tail
        used = counter.count(out)
        if used <= target:
            return out, used
        chars = int(chars * target / used * 0.95)
    bare = MARKER.format(n=n).strip()
    return bare, counter.count(bare)
