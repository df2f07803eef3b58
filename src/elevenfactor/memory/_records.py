"""A long-term memory as stored: ``Memory``, its ``Provenance``, and the row and vector codecs."""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import orjson

from elevenfactor.errors import RequestError
from elevenfactor.governance import check_id, check_text
from elevenfactor.memory._scopes import Scope

__all__ = [
    "KINDS",
    "MAX_TEXT",
    "MEMORY_COLUMNS",
    "Kind",
    "Memory",
    "Provenance",
    "check_importance",
    "check_kind",
    "check_memory_text",
    "encode_vector",
    "memory_from_row",
    "new_memory_id",
    "vectors_of",
]

Kind = Literal["fact", "preference"]
KINDS: tuple[Kind, ...] = ("fact", "preference")
MAX_TEXT = 4000
Source = Literal["run", "tool", "extraction", "api", "cli"]
_SOURCES = ("run", "tool", "extraction", "api", "cli")

MEMORY_COLUMNS = (
    "m.id, m.org_id, m.scope_kind, m.scope_id, m.kind, m.fact_key, m.text, m.embedder,"
    " m.importance, m.user_id, m.created_at, m.recalled_at, m.expires_at, m.superseded_by,"
    " m.supersedes, m.provenance"
)
"""The columns ``memory_from_row`` reads, for a query on ``memories m``."""


def new_memory_id() -> str:
    """A fresh memory id."""
    return "mem_" + uuid.uuid4().hex


@dataclass(frozen=True, slots=True)
class Provenance:
    """Where a memory came from: a run (its step, the message of its conversation), a tool
    call, an extraction after a run, or a user over the API or CLI. The user it was written for
    is the memory's ``user_id``, not part of this."""

    source: Source
    run_id: str | None = None
    step_key: str | None = None
    message_index: int | None = None

    def __post_init__(self) -> None:
        if self.source not in _SOURCES:
            raise RequestError(
                f"provenance source {self.source!r} is not one of {', '.join(_SOURCES)}",
                code="invalid_provenance",
                param="provenance",
            )
        if self.run_id is not None:
            check_id(self.run_id, "run_id")
        if self.step_key is not None:
            check_id(self.step_key, "step_key")
        if self.message_index is not None and (
            isinstance(self.message_index, bool)
            or not isinstance(self.message_index, int)
            or self.message_index < 0
        ):
            raise RequestError(
                "provenance message_index must be an integer >= 0",
                code="invalid_provenance",
                param="provenance",
            )

    def to_dict(self) -> dict[str, Any]:
        """The set fields as JSON."""
        out: dict[str, Any] = {"source": self.source}
        for name in ("run_id", "step_key", "message_index"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out


@dataclass(frozen=True, slots=True)
class Memory:
    """One version of a fact or preference. Active while ``superseded_by`` is None and it has
    not expired."""

    id: str
    org_id: str
    scope: Scope
    kind: str
    key: str | None
    text: str
    embedder: str
    importance: float
    user_id: str
    created_at: float
    recalled_at: float | None
    expires_at: float | None
    superseded_by: str | None
    supersedes: str | None
    provenance: dict[str, Any]

    def active(self, now: float) -> bool:
        """Neither superseded nor expired at ``now``."""
        return self.superseded_by is None and (self.expires_at is None or self.expires_at > now)

    def to_dict(self) -> dict[str, Any]:
        """The memory as JSON (without its vector)."""
        return {
            "id": self.id,
            "object": "memory",
            "scope": str(self.scope),
            "kind": self.kind,
            "key": self.key,
            "text": self.text,
            "importance": self.importance,
            "embedder": self.embedder,
            "user_id": self.user_id,
            "created_at": self.created_at,
            "recalled_at": self.recalled_at,
            "expires_at": self.expires_at,
            "superseded_by": self.superseded_by,
            "supersedes": self.supersedes,
            "provenance": self.provenance,
        }


def memory_from_row(row: tuple[Any, ...]) -> Memory:
    """A ``Memory`` from the ``MEMORY_COLUMNS`` of a row."""
    (mid, org, skind, sid, kind, key, text, embedder, imp, uid, created, recalled, expires,
     sup_by, sups, prov) = row  # fmt: skip
    try:
        provenance = orjson.loads(prov)
    except orjson.JSONDecodeError:
        provenance = {}
    return Memory(
        id=mid,
        org_id=org,
        scope=Scope(skind, sid),
        kind=kind,
        key=key,
        text=text,
        embedder=embedder,
        importance=float(imp),
        user_id=uid,
        created_at=float(created),
        recalled_at=None if recalled is None else float(recalled),
        expires_at=None if expires is None else float(expires),
        superseded_by=sup_by,
        supersedes=sups,
        provenance=provenance if isinstance(provenance, dict) else {},
    )


def encode_vector(vector: npt.NDArray[np.float32]) -> bytes:
    """A vector as little-endian float32 bytes."""
    return np.asarray(vector, dtype="<f4").tobytes()


def vectors_of(blobs: list[bytes], dim: int) -> npt.NDArray[np.float32] | None:
    """Stored vectors as an ``(n, dim)`` float32 matrix (one copy of the bytes); None if any
    is of another dimension."""
    if any(len(b) != 4 * dim for b in blobs):
        return None
    matrix = np.frombuffer(b"".join(blobs), dtype="<f4")
    return matrix.reshape(len(blobs), dim).astype(np.float32, copy=False)


def check_memory_text(text: str, param: str = "text") -> str:
    """Non-empty text of at most ``MAX_TEXT`` characters without control characters."""
    if not isinstance(text, str) or not text.strip():
        raise RequestError(f"{param!r} must be non-empty text", code="invalid_text", param=param)
    return check_text(text.strip(), param, MAX_TEXT)


def check_kind(kind: str) -> Kind:
    """``fact`` or ``preference``."""
    if kind not in KINDS:
        raise RequestError(
            f"'kind' must be one of {', '.join(KINDS)}; got {kind!r:.40}",
            code="invalid_kind",
            param="kind",
        )
    return kind


def check_importance(value: float) -> float:
    """A number in [0, 1]."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not 0 <= value <= 1
    ):
        raise RequestError(
            f"'importance' must be a number from 0 to 1; got {value!r:.40}",
            code="invalid_importance",
            param="importance",
        )
    return float(value)
