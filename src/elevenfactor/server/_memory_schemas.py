"""Schemas of the memory and session endpoints: request bodies and query strings (validated with
them) and the answers (for the OpenAPI document). Strict types, bounded strings, unknown fields
refused, as in ``_schemas``."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, StrictInt
from pydantic import StringConstraints as SC

from elevenfactor.server._schemas import Id, Text, _Schema

__all__ = [
    "ForgetUser",
    "ForgetUserResult",
    "MemoryCreate",
    "MemoryDeleted",
    "MemoryDetail",
    "MemoryList",
    "MemoryObject",
    "MemoryQuery",
    "MemorySearch",
    "RecalledList",
    "SessionDeleted",
    "SessionDetail",
    "SessionList",
    "SessionObject",
    "SessionQuery",
    "SessionsQuery",
]

_ID = r"[A-Za-z0-9][A-Za-z0-9._:-]{0,199}"
_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"
ScopeRef = Annotated[str, SC(pattern=rf"^(user|agent|space):{_ID}$", max_length=210)]
WriteScope = Annotated[str, SC(pattern=rf"^(user|space:{_NAME})$", max_length=80)]
MemoryText = Annotated[Text, SC(min_length=1, max_length=4000)]
Kind = Literal["fact", "preference"]
Fraction = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False, strict=True)]
Score = Annotated[float, Field(ge=-1, le=1, allow_inf_nan=False, strict=True)]
Seconds = Annotated[float, Field(gt=0, le=10 * 365 * 86400, allow_inf_nan=False, strict=True)]
_SCOPES = "`user:ID`, `agent:NAME` or `space:NAME`."


class MemoryQuery(_Schema):
    """``GET /v1/memories`` query string."""

    scope: ScopeRef | None = Field(
        default=None,
        description=f"Only this scope: {_SCOPES} Default: the caller's own memory and the"
        " spaces it may read (an admin: every space).",
    )
    kind: Kind | None = None
    key: Id | None = None
    include_inactive: Literal["true", "false"] = Field(
        default="false", description="Also superseded and expired memories."
    )
    limit: Annotated[int, Field(ge=1, le=1000)] = 100


class MemoryCreate(_Schema):
    """``POST /v1/memories``: remember a fact or preference in the caller's memory or a space it
    may write."""

    text: MemoryText
    kind: Kind = "fact"
    key: Id | None = Field(
        default=None,
        description="A subject such as `user.favorite_color`: a new memory with the same key"
        " supersedes the old one (kept as history).",
    )
    importance: Fraction = 0.5
    ttl_seconds: Seconds | None = Field(
        default=None, description="Forgotten after this many seconds; default: the configured."
    )
    scope: WriteScope = Field(
        default="user", description="`user` (the caller's memory) or `space:NAME`."
    )


class MemorySearch(_Schema):
    """``POST /v1/memories/search``: recall by similarity, recency and importance."""

    query: MemoryText
    scopes: list[ScopeRef] | None = Field(
        default=None, max_length=20, description=f"Scopes to search, each {_SCOPES}"
    )
    k: Annotated[StrictInt, Field(ge=1, le=100)] | None = None
    min_score: Score | None = None


class SessionsQuery(_Schema):
    """``GET /v1/sessions`` query string."""

    limit: Annotated[int, Field(ge=1, le=1000)] = 100


class SessionQuery(_Schema):
    """``GET /v1/sessions/{id}`` query string."""

    limit: Annotated[int, Field(ge=1, le=100000)] | None = Field(
        default=None, description="Only the last this many messages."
    )


class ForgetUser(_Schema):
    """``POST /v1/admin/memory/forget``: erase what memory holds of a user."""

    user: Id = Field(description="The user's name or id.")


class MemoryObject(BaseModel):
    """A long-term memory (one version of it)."""

    id: str
    object: Literal["memory"]
    scope: str
    kind: Kind
    key: str | None
    text: str
    importance: float
    embedder: str
    user_id: str = Field(description="On whose behalf it was written.")
    created_at: float
    recalled_at: float | None
    expires_at: float | None
    superseded_by: str | None
    supersedes: str | None
    provenance: dict[str, Any]


class MemoryList(BaseModel):
    """Newest first."""

    object: Literal["list"]
    data: list[MemoryObject]


class MemoryDetail(MemoryObject):
    """A memory and its history (every version, oldest first)."""

    history: list[MemoryObject]


class Recalled(MemoryObject):
    """A recalled memory with its score."""

    score: float
    similarity: float
    recency: float


class RecalledList(BaseModel):
    """Best first."""

    object: Literal["list"]
    data: list[Recalled]


class MemoryDeleted(BaseModel):
    """The memory and its history are deleted."""

    id: str
    object: Literal["memory.deleted"]
    deleted: int = Field(description="Versions deleted.")


class SessionObject(BaseModel):
    """A session (a conversation and its state)."""

    id: str
    object: Literal["session"]
    user_id: str
    messages: int
    created_at: float
    updated_at: float


class SessionList(BaseModel):
    """Most recently updated first."""

    object: Literal["list"]
    data: list[SessionObject]


class SessionMessage(BaseModel):
    """A message of a session."""

    seq: int
    run_id: str | None
    message: dict[str, Any]


class SessionDetail(SessionObject):
    """A session with its state and messages in order."""

    state: dict[str, Any]
    data: list[SessionMessage]


class SessionDeleted(SessionObject):
    """The session and its messages are deleted."""

    deleted: Literal[True]


class ForgetUserResult(BaseModel):
    """What was erased (counts only)."""

    object: Literal["memory.forgotten"]
    user_id: str
    memories: int
    derived_memories: int
    sessions: int
    messages: int
    grants: int
    cache_entries: int = Field(
        description="Semantic response cache entries: the user's questions, embedded, and the"
        " answers to them."
    )
    response_cache_entries: int = Field(
        description="Exact response cache entries: the answers to the user's calls (rows of"
        " the store's `response_cache` table, and entries in Redis when `REDIS_URL` is set)."
    )
    runs: int = Field(
        default=0, description="The user's ended runs whose evidence was erased (hashes kept)."
    )
    run_payloads: int = Field(
        default=0, description="Run inputs, step outputs and results erased (hashes kept)."
    )
    approval_payloads: int = Field(
        default=0, description="Approval requests and decision texts of those runs erased."
    )
    call_records: int = Field(
        default=0, description="Call records of the user and of the user's runs touched."
    )
    call_payloads: int = Field(
        default=0, description="Request and response bodies of those call records erased."
    )
    active_runs: int = Field(
        default=0,
        description="The user's runs still queued, running or waiting: their content is kept"
        " (they need it to resume); forget again once they end.",
    )
