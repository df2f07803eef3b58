"""Feedback on runs: human judgements (a score, a label, a comment) attached to a run.

Whoever may read a run may give feedback on it: the query that finds the run carries the
principal's scope (its own runs; its team's where the team shares; an admin's whole
organisation), so a run the principal may not see is ``RunNotFound`` — the same answer as a
missing one. Each feedback is recorded in the ledger in the same transaction (its content hash,
never the comment itself).

The API does not impose a scale on ``score``: any finite number in ``[-1e9, 1e9]``. Use 0-1 for
a quality grade and ``1`` / ``-1`` for thumbs up / down; a ``label`` (a name such as ``correct``
or ``hallucination``) says what the score means when it is not obvious. ``source`` is ``human``
for the API and CLI; online scorers and offline eval results about a run are meant to write
``online`` and ``offline`` rows in the same table.

Each row carries its run's organisation (``org_id``) and owner (``run_user_id``,
``run_team_id``, m032: copied from the run as the row is written), so reads scoped as runs are
(``runtime._feedback_scope``) need no join to ``runs``.
"""

from __future__ import annotations

import hashlib
import math
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any

import orjson

from elevenfactor.errors import RequestError, RunNotFound
from elevenfactor.governance import DEFAULT_ORG, Principal, append_entry, canonical, check_id
from elevenfactor.runtime._runs import get_run
from elevenfactor.store import Store

__all__ = [
    "MAX_COMMENT",
    "MAX_METADATA_BYTES",
    "MAX_SCORE",
    "SOURCES",
    "Feedback",
    "FeedbackPage",
    "ScorerRow",
    "add_feedback",
    "list_feedback",
    "record_scores",
]

MAX_SCORE = 1e9
"""Scores are finite numbers in ``[-MAX_SCORE, MAX_SCORE]``."""
MAX_COMMENT = 4000
"""Characters in a comment."""
MAX_METADATA_BYTES = 4096
"""Bytes of a metadata object, as compact JSON."""
SOURCES = ("human", "online", "offline")
"""Who judged: a person (the API and CLI), an online scorer, an offline eval."""

_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")
_COLUMNS = (
    "id, run_id, org_id, user_id, key_id, score, label, comment, metadata, source, created_at"
)
_RUN_OWNER = "run_user_id, run_team_id"
_OWNER_OF_RUN = (
    "CASE WHEN org_id IS NULL THEN NULL ELSE user_id END,"
    " CASE WHEN org_id IS NULL THEN NULL ELSE team_id END"
)
"""The run's owner (m032), selected from ``runs`` as a row is written: NULL for a run in no
organisation, since the row's is then not the run's (a member's read never matches it)."""


@dataclass(frozen=True, slots=True)
class Feedback:
    """A judgement of a run, as stored."""

    id: str
    run_id: str
    org_id: str
    user_id: str
    key_id: str | None
    score: float | None
    label: str | None
    comment: str | None
    metadata: dict[str, Any] | None
    source: str
    created_at: float

    def to_dict(self) -> dict[str, Any]:
        """The feedback as the API answers it."""
        return {
            "id": self.id,
            "object": "run.feedback",
            "run_id": self.run_id,
            "score": self.score,
            "label": self.label,
            "comment": self.comment,
            "metadata": self.metadata,
            "source": self.source,
            "by": {"user_id": self.user_id, "key_id": self.key_id},
            "created_at": self.created_at,
        }


@dataclass(frozen=True, slots=True)
class ScorerRow:
    """One scorer's judgement of a run, as ``record_scores`` writes it: ``id`` is chosen by
    the caller (the same judgement written twice is one row), ``rule`` and ``scorer`` name
    the online rule and the scorer."""

    id: str
    score: float | None
    label: str | None
    comment: str | None
    metadata: dict[str, Any] | None
    rule: str | None = None
    scorer: str | None = None


@dataclass(frozen=True, slots=True)
class FeedbackPage:
    """One page of a run's feedback, newest first; ``has_more``: older feedback follows (ask
    again with ``before`` set to the last id)."""

    data: list[Feedback]
    has_more: bool


def _row(row: Any) -> Feedback:
    values = list(row)
    values[5] = float(values[5]) if values[5] is not None else None
    values[8] = orjson.loads(values[8]) if values[8] is not None else None
    values[10] = float(values[10])
    return Feedback(*values)


def _check_score(score: float | None) -> float | None:
    if score is None:
        return None
    if isinstance(score, bool) or not isinstance(score, int | float):
        raise RequestError("'score' must be a number", code="invalid_type", param="score")
    value = float(score)
    if not math.isfinite(value) or abs(value) > MAX_SCORE:
        raise RequestError(
            f"'score' must be a finite number between {-MAX_SCORE:g} and {MAX_SCORE:g}",
            code="invalid_value",
            param="score",
            hint="any scale works: 0-1 for a grade, 1/-1 for thumbs up/down",
        )
    return value


def _check_text(comment: str | None) -> str | None:
    if comment is None:
        return None
    if not isinstance(comment, str) or not comment:
        raise RequestError(
            "'comment' must be non-empty text", code="invalid_value", param="comment"
        )
    if len(comment) > MAX_COMMENT or _CONTROL.search(comment):
        raise RequestError(
            f"'comment' must be at most {MAX_COMMENT} characters without control characters",
            code="invalid_value",
            param="comment",
        )
    return comment


def _check_label(label: str | None) -> str | None:
    if label is not None and (not isinstance(label, str) or not _LABEL.match(label)):
        raise RequestError(
            "'label' must be 1-64 characters of A-Z a-z 0-9 . _ - (starting with a letter or"
            " digit)",
            code="invalid_value",
            param="label",
        )
    return label


def _check_metadata(metadata: dict[str, Any] | None) -> str | None:
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        raise RequestError("'metadata' must be an object", code="invalid_type", param="metadata")
    try:
        text = orjson.dumps(metadata)
    except TypeError as exc:
        raise RequestError(
            f"'metadata' must be JSON: {exc}", code="invalid_value", param="metadata"
        ) from None
    if len(text) > MAX_METADATA_BYTES:
        raise RequestError(
            f"'metadata' is {len(text)} bytes as JSON; at most {MAX_METADATA_BYTES}",
            code="invalid_value",
            param="metadata",
        )
    return text.decode()


async def add_feedback(
    store: Store,
    principal: Principal,
    run_id: str,
    *,
    score: float | None = None,
    label: str | None = None,
    comment: str | None = None,
    metadata: dict[str, Any] | None = None,
    source: str = "human",
) -> Feedback:
    """Attach a judgement by ``principal`` to the run ``run_id`` and return it.

    At least one of ``score``, ``label`` and ``comment`` is needed. A run ``principal`` may not
    read raises ``RunNotFound``; an invalid field raises ``RequestError`` naming it."""
    check_id(run_id, "run_id")
    value = _check_score(score)
    label = _check_label(label)
    comment = _check_text(comment)
    meta = _check_metadata(metadata)
    if source not in SOURCES:
        raise RequestError(
            f"'source' must be one of {', '.join(SOURCES)}", code="invalid_value", param="source"
        )
    if value is None and label is None and comment is None:
        raise RequestError(
            "feedback needs at least one of 'score', 'label' and 'comment'",
            code="missing_required_parameter",
            param="score",
        )
    fid = "fb_" + uuid.uuid4().hex
    now = time.time()
    scope, params = principal.scope()
    async with store.transaction() as tx:
        row = await tx.fetchone(
            f"INSERT INTO run_feedback ({_COLUMNS}, {_RUN_OWNER})"
            f" SELECT ?, id, COALESCE(org_id, ?), ?, ?, ?, ?, ?, ?, ?, ?, {_OWNER_OF_RUN}"
            f" FROM runs WHERE id = ? AND {scope}"
            f" RETURNING {_COLUMNS}",
            (
                fid,
                principal.org_id,
                principal.user_id,
                principal.key_id,
                value,
                label,
                comment,
                meta,
                source,
                now,
                run_id,
                *params,
            ),
        )
        if row is None:
            raise RunNotFound(f"no run with id {run_id!r}", hint="`elevenfactor runs list`")
        digest = hashlib.sha256(
            canonical([value, label, comment, metadata, source]).encode()
        ).hexdigest()
        await append_entry(
            tx,
            "run.feedback",
            fid,
            principal.actor(),
            {"run_id": run_id, "source": source, "content_hash": digest},
        )
    return _row(row)


async def record_scores(
    store: Store,
    run_id: str,
    user_id: str,
    rows: list[ScorerRow],
    *,
    source: str = "online",
) -> int:
    """Write scorers' judgements of run ``run_id`` as feedback by ``user_id`` (a scorer's
    identity, such as ``scorer:RULE``) in the run's organisation, each with its ledger entry,
    in one transaction. A row whose id exists already is skipped (a retried write adds
    nothing). Returns how many rows were written (0 if the run is gone)."""
    if source not in SOURCES:
        raise RequestError(
            f"'source' must be one of {', '.join(SOURCES)}", code="invalid_value", param="source"
        )
    now = time.time()
    written = 0
    async with store.transaction() as tx:
        for item in rows:
            value = _check_score(item.score)
            label = _check_label(item.label)
            comment = _check_text(item.comment)
            meta = _check_metadata(item.metadata)
            row = await tx.fetchone(
                f"INSERT INTO run_feedback ({_COLUMNS}, rule, scorer, {_RUN_OWNER})"
                " SELECT ?, id, COALESCE(org_id, ?), ?, NULL, ?, ?, ?, ?, ?, ?, ?, ?,"
                f" {_OWNER_OF_RUN} FROM runs WHERE id = ? ON CONFLICT (id) DO NOTHING"
                " RETURNING org_id",
                (item.id, DEFAULT_ORG, user_id, value, label, comment, meta, source, now,
                 item.rule, item.scorer, run_id),
            )  # fmt: skip
            if row is None:
                continue
            written += 1
            digest = hashlib.sha256(
                canonical([value, label, comment, item.metadata, source]).encode()
            ).hexdigest()
            actor = {"org_id": row[0], "user_id": user_id, "user": user_id, "key_id": None}
            await append_entry(
                tx,
                "run.feedback",
                item.id,
                {**actor, "via": "system"},
                {"run_id": run_id, "source": source, "content_hash": digest},
            )
    return written


async def list_feedback(
    store: Store,
    principal: Principal,
    run_id: str,
    *,
    limit: int = 100,
    before: str | None = None,
    source: str | None = None,
) -> FeedbackPage:
    """The feedback on run ``run_id``, newest first: at most ``limit``, older than the feedback
    ``before`` (an id from an earlier page) if given, only of ``source`` (``human``,
    ``online``, ``offline``) if given. A run ``principal`` may not read raises
    ``RunNotFound``; everyone who may read the run sees all its feedback."""
    if not 1 <= limit <= 1000:
        raise RequestError("'limit' must be 1-1000", code="invalid_value", param="limit")
    if source is not None and source not in SOURCES:
        raise RequestError(
            f"'source' must be one of {', '.join(SOURCES)}", code="invalid_value", param="source"
        )
    info = await get_run(store, check_id(run_id, "run_id"), principal)
    where, params = "run_id = ?", [info.id]
    if source is not None:
        where += " AND source = ?"
        params.append(source)
    if before is not None:
        cursor = await store.fetchone(
            "SELECT created_at, id FROM run_feedback WHERE id = ? AND run_id = ?",
            (check_id(before, "before"), info.id),
        )
        if cursor is None:
            raise RequestError(
                f"'before': no feedback {before!r} on run {info.id}",
                code="invalid_value",
                param="before",
                hint="pass the id of the last feedback of the previous page",
            )
        where += " AND (created_at < ? OR (created_at = ? AND id < ?))"
        params += [cursor[0], cursor[0], cursor[1]]
    rows = await store.fetchall(
        f"SELECT {_COLUMNS} FROM run_feedback WHERE {where}"
        " ORDER BY created_at DESC, id DESC LIMIT ?",
        (*params, limit + 1),
    )
    return FeedbackPage([_row(r) for r in rows[:limit]], has_more=len(rows) > limit)
