"""The manifest of one context assembly: what went into the window, what was left out and why.

It is plain data (``manifest.model_dump(mode="json")`` is what a run's journal stores) and renders
as a table for people (``manifest_table``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from rich.table import Table

__all__ = [
    "LeftOut",
    "Manifest",
    "Reason",
    "SectionName",
    "SectionReport",
    "SummaryReport",
    "Truncation",
    "manifest_table",
]

SectionName = Literal["instructions", "tools", "input", "passages", "memory", "history"]
Reason = Literal[
    "dropped_oldest", "summarised", "dropped_low_score", "below_min_score", "over_budget"
]


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LeftOut(_Data):
    """An item (a history message, a passage, a memory) that is not in the context."""

    id: str = Field(description="The item's id; history messages are 'history[<index>]'.")
    reason: Reason = Field(description="Why it was left out.")
    tokens: int = Field(description="What it would have taken.")
    score: float | None = Field(default=None, description="Its score, for scored items.")


class Truncation(_Data):
    """A tool result kept with its middle cut out."""

    id: str
    from_tokens: int
    to_tokens: int


class SummaryReport(_Data):
    """The summary standing in for the oldest history messages."""

    span: str = Field(description="The key of the summarised span (a digest of its messages).")
    first: int = Field(description="Index of the first summarised history message.")
    end: int = Field(description="Index after the last summarised history message.")
    tokens: int = Field(description="Tokens the summary takes.")
    reused: bool = Field(description="A summary of this span given back was used again.")


class SectionReport(_Data):
    """One section of the context."""

    name: SectionName
    priority: int | None = Field(description="None for sections always sent whole.")
    min_tokens: int = Field(description="Room the section was guaranteed.")
    max_tokens: int | None
    wanted: int = Field(description="Tokens its whole content would take.")
    tokens: int = Field(description="Tokens it takes in the context.")
    included: list[str] = Field(default_factory=list, description="Ids of what went in.")
    left_out: list[LeftOut] = Field(default_factory=list)
    truncated: list[Truncation] = Field(default_factory=list)
    summary: SummaryReport | None = None


class Manifest(_Data):
    """Budget, window, reserved output, the counter, and each section's share."""

    counter: str = Field(description="The token counter (gguf:<file> or estimate:<version>).")
    window: int = Field(description="The model's context window.")
    reserved_output: int = Field(description="Tokens kept free for the answer.")
    budget: int = Field(description="window - reserved_output.")
    overhead: int = Field(description="Tokens the chat template adds (framing, priming).")
    total: int = Field(description="Prompt tokens of the assembled request, as counted.")
    sections: list[SectionReport]
    notes: list[str] = Field(default_factory=list)

    def section(self, name: SectionName) -> SectionReport:
        """The report of one section."""
        return next(s for s in self.sections if s.name == name)


def _left_out(report: SectionReport) -> str:
    parts: list[str] = []
    reasons: dict[str, list[LeftOut]] = {}
    for item in report.left_out:
        reasons.setdefault(item.reason, []).append(item)
    for reason, items in reasons.items():
        tokens = sum(i.tokens for i in items)
        parts.append(f"{len(items)} {reason} ({tokens} tok)")
    for t in report.truncated:
        parts.append(f"{t.id} truncated {t.from_tokens}->{t.to_tokens}")
    if report.summary is not None:
        s = report.summary
        how = "reused" if s.reused else "new"
        parts.append(f"summary of [{s.first}:{s.end}] ({s.tokens} tok, {how})")
    return "; ".join(parts)


def manifest_table(manifest: Manifest) -> Table:
    """A rich table of the manifest: one row per section, a caption with the budget."""
    m = manifest
    table = Table(
        title=f"context: {m.total} of {m.budget} tokens ({m.counter})",
        caption=f"window {m.window} - reserved output {m.reserved_output} = budget {m.budget};"
        f" template overhead {m.overhead}" + ("; " + "; ".join(m.notes) if m.notes else ""),
    )
    for col, justify in (
        ("section", "left"),
        ("priority", "right"),
        ("min", "right"),
        ("max", "right"),
        ("wanted", "right"),
        ("used", "right"),
        ("in", "right"),
        ("left out / changed", "left"),
    ):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for s in m.sections:
        table.add_row(
            s.name,
            "-" if s.priority is None else str(s.priority),
            str(s.min_tokens),
            "-" if s.max_tokens is None else str(s.max_tokens),
            str(s.wanted),
            str(s.tokens),
            str(len(s.included)),
            _left_out(s),
        )
    return table
