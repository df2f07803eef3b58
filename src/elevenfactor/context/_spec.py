"""``ContextSpec``: how an agent shares its model's context window among the parts of a request.

The budget is the model's context window minus the output reserved for the answer. The
instructions, the tool definitions and the new input are always sent whole (the input's tool
results may be shortened); they come first. What is left goes to the flexible sections — long-term
memory, retrieved passages, conversation history — each guaranteed its ``min_tokens``, then
served in ``priority`` order (highest first) up to its ``max_tokens``.

```yaml
context:
  reserve_output: 512            # None: the request's max_tokens, else the deployment's
  tool_result_tokens: 400        # a shortened tool result keeps this many (head and tail)
  passages: {priority: 70, min_tokens: 0, max_tokens: 3000, min_score: 0.25}
  memory: {priority: 65, max_tokens: 800}
  history: {priority: 60, min_tokens: 1000, summarise: true, summary_tokens: 300}
```
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "ContextSpec",
    "HistorySection",
    "InputSection",
    "ItemsSection",
    "MemorySection",
    "PassagesSection",
    "WholeSection",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WholeSection(_Strict):
    """A section sent whole (instructions, tool definitions): never cut, served before the
    flexible sections; its whole size is its minimum."""

    max_tokens: int | None = Field(
        default=None,
        gt=0,
        description="Refuse (context_overflow) a request where this section is larger; None: "
        "no cap.",
    )


class InputSection(_Strict):
    """The new input: the user's message and the current turn's tool calls and results. Never
    dropped; served before the flexible sections."""

    max_tokens: int | None = Field(
        default=None,
        gt=0,
        description="Most tokens the input may take (its tool results are shortened to fit); "
        "None: no cap.",
    )
    truncate_tool_results: bool = Field(
        default=True,
        description="Shorten the input's tool results (oldest first, to tool_result_tokens, "
        "keeping head and tail) when the input does not fit.",
    )


_PRIORITY = "Flexible sections get room beyond their minimum in this order, highest first."
_MAX = "Most tokens the section may take; None: no cap."


class _Flexible(_Strict):
    priority: int = Field(description=_PRIORITY)
    min_tokens: int = Field(
        default=0,
        ge=0,
        description="Room guaranteed to the section (if it has that much content); the request "
        "fails with context_overflow when the guarantees cannot all be met.",
    )
    max_tokens: int | None = Field(default=None, gt=0, description=_MAX)

    @model_validator(mode="after")
    def _bounds(self) -> _Flexible:
        if self.max_tokens is not None and self.min_tokens > self.max_tokens:
            raise ValueError(
                f"min_tokens ({self.min_tokens}) is larger than max_tokens ({self.max_tokens})"
            )
        return self


class ItemsSection(_Flexible):
    """Scored items (long-term memory entries, retrieved passages): the highest scores go in
    first; those that do not fit are left out (dropped_low_score)."""

    min_score: float | None = Field(
        default=None, description="Leave out items scored below this (below_min_score)."
    )
    header: str = Field(
        description="The line that introduces the items in the system message.", min_length=1
    )


class PassagesSection(ItemsSection):
    """Passages retrieved for the input (RAG), each with its score."""

    priority: int = Field(default=70, description=_PRIORITY)
    max_tokens: int | None = Field(default=4096, gt=0, description=_MAX)
    header: str = Field(
        default="Retrieved passages:",
        min_length=1,
        description="The line that introduces the passages in the system message.",
    )


class MemorySection(ItemsSection):
    """Long-term memory entries recalled for the input, each with its score."""

    priority: int = Field(default=65, description=_PRIORITY)
    max_tokens: int | None = Field(default=1024, gt=0, description=_MAX)
    header: str = Field(
        default="What you remember:",
        min_length=1,
        description="The line that introduces the memories in the system message.",
    )


class HistorySection(_Flexible):
    """The earlier conversation. When it does not fit: old tool results are shortened, then
    (with ``summarise``) the oldest turns are replaced by a summary, then the oldest turns are
    dropped. A tool call is never separated from its results; system messages are kept."""

    priority: int = Field(default=60, description=_PRIORITY)
    min_tokens: int = Field(
        default=512,
        ge=0,
        description="Room guaranteed to the most recent turns (if there are that many).",
    )

    truncate_tool_results: bool = Field(
        default=True,
        description="First shorten tool results longer than tool_result_tokens, oldest first.",
    )
    route: str | None = Field(
        default=None,
        description="The route (a cheaper model) that writes summaries; None: the agent's own.",
    )
    summarise: bool = Field(
        default=False,
        description="Replace the oldest turns with a summary written by a cheaper route (needs a "
        "summariser; without one, turns are dropped).",
    )
    summary_tokens: int = Field(
        default=512,
        ge=16,
        description="Room kept for the summary; a longer summary is shortened to it.",
    )
    keep_after_summary: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="When a new summary is needed, summarise enough turns that the rest take at "
        "most this share of the history's room, so the summary serves the next turns too.",
    )


class ContextSpec(_Strict):
    """How the context window is shared (the agent's ``context:``)."""

    reserve_output: int | None = Field(
        default=None,
        gt=0,
        description="Tokens kept free for the answer; None: the request's max_tokens, else the "
        "deployment's params.max_tokens, else its max_output_tokens, else a quarter of the "
        "window (at most 4096).",
    )
    tool_result_tokens: int = Field(
        default=512,
        ge=32,
        description="The size a shortened tool result keeps (its head and tail, with a marker "
        "saying how much was cut).",
    )
    instructions: WholeSection = Field(
        default_factory=WholeSection, description="The system prompt."
    )
    tools: WholeSection = Field(default_factory=WholeSection, description="Tool definitions.")
    input: InputSection = Field(default_factory=InputSection, description="The new input.")
    passages: PassagesSection = Field(
        default_factory=PassagesSection, description="Passages retrieved for the input (RAG)."
    )
    memory: MemorySection = Field(
        default_factory=MemorySection, description="Long-term memory entries."
    )
    history: HistorySection = Field(
        default_factory=HistorySection, description="The earlier conversation."
    )
