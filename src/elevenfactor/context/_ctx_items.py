"""Scored items (long-term memories, retrieved passages) in the context: ranked by score, the
best that fit go in, rendered under the section's header in the system message."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from elevenfactor.context._manifest import LeftOut, SectionReport
from elevenfactor.context._spec import ItemsSection
from elevenfactor.context._tokens import TokenCounter

__all__ = ["Eligible", "Item", "ItemsFit", "eligible", "fill_items", "render_items"]


@dataclass(frozen=True, slots=True)
class Item:
    """A memory or a passage: its id (what the manifest names), its text, and its score
    (higher is better; None: unscored, ranked after scored items in the order given)."""

    id: str
    text: str
    score: float | None = None


@dataclass(slots=True)
class Eligible:
    """Items ranked best first, and those below the section's ``min_score``."""

    ranked: list[Item]
    below: list[Item]


@dataclass(slots=True)
class ItemsFit:
    """What a section of items contributes."""

    text: str
    tokens: int
    included: list[str] = field(default_factory=list)
    left_out: list[LeftOut] = field(default_factory=list)

    def report(
        self, name: Literal["memory", "passages"], spec: ItemsSection, floor: int, wanted: int
    ) -> SectionReport:
        """The section's manifest entry."""
        return SectionReport(
            name=name,
            priority=spec.priority,
            min_tokens=floor,
            max_tokens=spec.max_tokens,
            wanted=wanted,
            tokens=self.tokens,
            included=self.included,
            left_out=self.left_out,
        )


def eligible(items: Sequence[Item], spec: ItemsSection) -> Eligible:
    """Rank ``items`` (score descending, unscored last) and set aside those below min_score."""
    floor = spec.min_score
    keep: list[Item] = []
    below: list[Item] = []
    for it in items:
        low = floor is not None and it.score is not None and it.score < floor
        (below if low else keep).append(it)
    keep.sort(key=lambda it: (it.score is None, -(it.score or 0.0)))
    return Eligible(keep, below)


def _line(item: Item, kind: str) -> str:
    return f"\n- {item.text}" if kind == "memory" else f"\n[{item.id}] {item.text}"


def render_items(
    items: Sequence[Item], spec: ItemsSection, counter: TokenCounter, kind: str
) -> tuple[str, int]:
    """The section's text for ``items`` (empty without items) and its tokens."""
    if not items:
        return "", 0
    lines = [_line(it, kind) for it in items]
    tokens = counter.count("\n\n" + spec.header) + sum(counter.count(x) for x in lines)
    return spec.header + "".join(lines), tokens


def fill_items(
    ranked: Eligible, spec: ItemsSection, limit: int, counter: TokenCounter, kind: str
) -> ItemsFit:
    """The best-ranked items that fit in ``limit`` tokens (an item too big is skipped, smaller
    ones after it may still fit)."""
    header = counter.count("\n\n" + spec.header)
    used = 0
    kept: list[Item] = []
    left: list[LeftOut] = [
        LeftOut(id=it.id, reason="below_min_score", tokens=counter.count(it.text), score=it.score)
        for it in ranked.below
    ]
    for it in ranked.ranked:
        cost = counter.count(_line(it, kind))
        extra = cost + (header if not kept else 0)
        if used + extra <= limit:
            kept.append(it)
            used += extra
        else:
            reason = "dropped_low_score" if it.score is not None else "over_budget"
            left.append(LeftOut(id=it.id, reason=reason, tokens=cost, score=it.score))
    text = spec.header + "".join(_line(it, kind) for it in kept) if kept else ""
    return ItemsFit(text, used, [it.id for it in kept], left)
