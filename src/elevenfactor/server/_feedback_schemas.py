"""Schemas of the run feedback endpoints: the body and query string (validated with them) and
the answers are in ``_responses``. Strict types, bounded values, unknown fields refused,
as in ``_schemas``. The giver is the authenticated caller, never a field."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field
from pydantic import StringConstraints as SC

from elevenfactor.runtime._feedback import MAX_COMMENT, MAX_METADATA_BYTES, MAX_SCORE
from elevenfactor.server._schemas import Id, Name, Text, _Schema

__all__ = ["FeedbackCreate", "FeedbackQuery"]

Score = Annotated[float, Field(ge=-MAX_SCORE, le=MAX_SCORE, allow_inf_nan=False, strict=True)]
Comment = Annotated[Text, SC(min_length=1, max_length=MAX_COMMENT)]


class FeedbackCreate(_Schema):
    """``POST /v1/runs/{id}/feedback``: a judgement of the run — at least one of ``score``,
    ``label`` and ``comment``; given by the authenticated user."""

    score: Score | None = Field(
        default=None,
        description="Any finite number in [-1e9, 1e9]; the API imposes no scale (0-1 for a"
        " grade, 1 / -1 for thumbs up / down).",
    )
    label: Name | None = Field(
        default=None,
        description="A name for the judgement, such as `correct` or `hallucination` (1-64"
        " characters of A-Z a-z 0-9 . _ -).",
    )
    comment: Comment | None = Field(
        default=None, description=f"Free text, at most {MAX_COMMENT} characters."
    )
    metadata: dict[str, Any] | None = Field(
        default=None,
        description=f"Any JSON object, at most {MAX_METADATA_BYTES} bytes as compact JSON"
        " (e.g. where the judgement was made).",
    )


class FeedbackQuery(_Schema):
    """``GET /v1/runs/{id}/feedback`` query string."""

    limit: Annotated[int, Field(ge=1, le=1000)] = 100
    before: Id | None = Field(
        default=None,
        description="Only feedback older than this one (the last id of the previous page).",
    )
    source: Literal["human", "online", "offline"] | None = Field(
        default=None,
        description="Only feedback of this source: `human` (the API, the CLI), `online`"
        " (online evaluation rules' scorers) or `offline` (eval runs).",
    )
