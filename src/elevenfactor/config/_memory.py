"""The project file's ``memory:``: sessions and long-term memory."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from elevenfactor.config._models import _Strict

__all__ = [
    "ExtractConfig",
    "MemoryConfig",
    "MemoryToolConfig",
    "RecallConfig",
    "RecallWeights",
    "SpaceConfig",
]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_SCOPE = re.compile(r"user|agent|space:[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
Weight = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]


class RecallWeights(_Strict):
    """How a memory's recall score is made: ``similarity * cos + recency * decay + importance *
    importance`` (each weight in [0, 1], not all zero)."""

    similarity: Weight = Field(default=0.7, description="Weight of the cosine similarity.")
    recency: Weight = Field(
        default=0.2, description="Weight of the decay since the memory was last recalled."
    )
    importance: Weight = Field(default=0.1, description="Weight of the memory's importance.")

    @model_validator(mode="after")
    def _not_all_zero(self) -> RecallWeights:
        if self.similarity + self.recency + self.importance <= 0:
            raise ValueError("at least one recall weight must be above 0")
        return self


class RecallConfig(_Strict):
    """What a recall returns by default."""

    k: int = Field(default=5, ge=1, le=100, description="Most memories one recall returns.")
    min_score: float = Field(
        default=0.3,
        ge=-1,
        le=1,
        allow_inf_nan=False,
        description="Memories scoring below this are not returned.",
    )
    weights: RecallWeights = Field(default_factory=RecallWeights)


class SpaceConfig(_Strict):
    """A shared memory space and the agents that may read or write it."""

    description: str = Field(default="", max_length=500, description="What the space holds.")
    grants: dict[str, list[Literal["read", "write"]]] = Field(
        default_factory=dict,
        description="Agent name -> its rights (`read`, `write`); `write` does not imply `read`.",
    )

    @field_validator("grants")
    @classmethod
    def _agent_names(
        cls, value: dict[str, list[Literal["read", "write"]]]
    ) -> dict[str, list[Literal["read", "write"]]]:
        _check_names(value, "an agent name (1-64 of A-Z a-z 0-9 . _ -)")
        return value


class ExtractConfig(_Strict):
    """Facts extracted from a finished run's conversation by a model and remembered."""

    enabled: bool = Field(default=False, description="Extract memories after each agent run.")
    route: str = Field(default="default", description="The model route asked for the facts.")
    scope: Literal["user", "agent"] = Field(
        default="user", description="Where extracted facts are remembered: the run's user or agent."
    )
    max_facts: int = Field(
        default=20, ge=1, le=200, description="Facts kept from one run; the rest are dropped."
    )
    max_chars: int = Field(
        default=16000,
        ge=500,
        le=1_000_000,
        description="Characters of the conversation (its end) shown to the model.",
    )


class MemoryToolConfig(_Strict):
    """The scopes of the memory tools an agent is given (``remember``, ``recall``,
    ``forget_memory``): `user` (the run's user), `agent` (the agent's own) or `space:NAME`."""

    read: list[str] = Field(
        default_factory=lambda: ["user", "agent"], description="Scopes `recall` searches."
    )
    write: list[str] = Field(
        default_factory=lambda: ["user", "agent"],
        min_length=1,
        description="Scopes `remember` may write; the first is the default.",
    )

    @field_validator("read", "write")
    @classmethod
    def _scopes(cls, value: list[str]) -> list[str]:
        for ref in value:
            if not _SCOPE.fullmatch(ref):
                raise ValueError(f"{ref!r} is not `user`, `agent` or `space:NAME`")
        return value


class MemoryConfig(_Strict):
    """Sessions and long-term memory.

    Long-term memories (facts and preferences) are scoped to a user, an agent, or a shared space
    that agents reach only through grants. A new memory with the same `key` in the same scope,
    or (without a key) one at least `supersede_threshold` similar, supersedes the old one, which
    is kept as history. Recall ranks active memories by similarity, recency (halving every
    `half_life_days` since last recalled) and importance.

    ```yaml
    memory:
      embedder: local
      recall: {k: 5, min_score: 0.3, weights: {similarity: 0.7, recency: 0.2, importance: 0.1}}
      half_life_days: 30
      spaces:
        team-notes: {grants: {writer-agent: [read, write], reader-agent: [read]}}
      extract: {route: default, enabled: false}
    ```
    """

    embedder: str | None = Field(
        default=None,
        min_length=1,
        description="The embedder memories are stored with (a name under `embeddings.models`); "
        "None: `embeddings.default`.",
    )
    recall: RecallConfig = Field(default_factory=RecallConfig)
    half_life_days: float = Field(
        default=30.0,
        gt=0,
        allow_inf_nan=False,
        description="Days after which an unrecalled memory's recency weight halves.",
    )
    default_ttl_days: float | None = Field(
        default=None,
        gt=0,
        allow_inf_nan=False,
        description="Days a memory lives when written without a ttl; None: until forgotten.",
    )
    supersede_threshold: float = Field(
        default=0.92,
        gt=0,
        le=1,
        allow_inf_nan=False,
        description="A memory without a key supersedes an active one of the same scope at least"
        " this similar (cosine).",
    )
    spaces: dict[str, SpaceConfig] = Field(
        default_factory=dict,
        description="Shared memory spaces (names of 1-64 of A-Z a-z 0-9 . _ -) and their"
        " per-agent grants.",
    )
    tool: MemoryToolConfig = Field(default_factory=MemoryToolConfig)
    extract: ExtractConfig = Field(default_factory=ExtractConfig)

    @field_validator("spaces")
    @classmethod
    def _space_names(cls, value: dict[str, SpaceConfig]) -> dict[str, SpaceConfig]:
        _check_names(value, "a space name (1-64 of A-Z a-z 0-9 . _ -)")
        return value


def _check_names(names: Iterable[str], what: str) -> None:
    for name in names:
        if not _NAME.fullmatch(name):
            raise ValueError(f"{name!r} is not {what}")
