"""Sessions: a conversation and its state, in the store, so any process continues any session.

A session is keyed by the caller's id within its organisation and belongs to the user that
created it: a member sees only its own sessions, an admin its organisation's. Ownership is part
of every query (``WHERE org_id = ? AND (user_id = ? OR <admin>)``); another user's session is
``NotFound``, as if absent. An append takes its sequence numbers by raising the session's
``next_seq`` in the same transaction as the insert, so appends from any number of processes
never interleave within one call or lose a message. A caller that read the session and appends
what it made of it (a chat completion continuing a session) passes ``expect_seq``: the append
then fails with 409 ``session_conflict`` instead of landing after messages it never saw.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from pydantic import TypeAdapter, ValidationError

from elevenfactor.errors import NotFound, RequestError
from elevenfactor.governance import Principal, check_id
from elevenfactor.models import Message
from elevenfactor.store import Executor, Store

__all__ = [
    "Session",
    "SessionInfo",
    "append_messages",
    "delete_session",
    "list_sessions",
    "load_or_new",
    "load_session",
    "set_state",
]

_MESSAGE: TypeAdapter[Message] = TypeAdapter(Message)
MAX_STATE_BYTES = 1_000_000
_COLUMNS = "id, user_id, state, next_seq, created_at, updated_at"


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """A session without its messages: who owns it, how many messages, when."""

    id: str
    user_id: str
    messages: int
    created_at: float
    updated_at: float

    def to_dict(self) -> dict[str, Any]:
        """The session as JSON."""
        return {
            "id": self.id,
            "object": "session",
            "user_id": self.user_id,
            "messages": self.messages,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


@dataclass(frozen=True, slots=True)
class Session:
    """A session's messages (in order, each with its sequence number and run) and state."""

    info: SessionInfo
    state: dict[str, Any]
    messages: list[Message] = field(default_factory=list)
    seqs: list[int] = field(default_factory=list)
    runs: list[str | None] = field(default_factory=list)

    @property
    def id(self) -> str:
        """The session id."""
        return self.info.id

    def to_dict(self) -> dict[str, Any]:
        """The session with its state and messages as JSON."""
        return {
            **self.info.to_dict(),
            "state": self.state,
            "data": [
                {"seq": s, "run_id": r, "message": m.model_dump(exclude_none=True)}
                for s, r, m in zip(self.seqs, self.runs, self.messages, strict=True)
            ],
        }


def _owner_sql(principal: Principal) -> tuple[str, list[Any]]:
    """Sessions ``principal`` may use: its own, or (an admin) its organisation's."""
    admin = principal.is_admin or principal.unscoped
    return "org_id = ? AND (user_id = ? OR ? = 1)", [
        principal.org_id,
        principal.user_id,
        int(admin),
    ]


def _info(row: tuple[Any, ...]) -> SessionInfo:
    return SessionInfo(row[0], row[1], int(row[3]), float(row[4]), float(row[5]))


def _not_found(session_id: str) -> NotFound:
    return NotFound(
        f"no session {session_id!r}",
        code="session_not_found",
        param="session_id",
        hint="`elevenfactor memory sessions` lists yours",
    )


async def _fetch(db: Executor, principal: Principal, session_id: str) -> tuple[Any, ...] | None:
    cond, params = _owner_sql(principal)
    return await db.fetchone(
        f"SELECT {_COLUMNS} FROM sessions WHERE id = ? AND {cond}", (session_id, *params)
    )


def _state(row: tuple[Any, ...]) -> dict[str, Any]:
    value = orjson.loads(row[2])
    return value if isinstance(value, dict) else {}


async def load_session(
    store: Executor,
    principal: Principal,
    session_id: str,
    limit: int | None = None,
    *,
    missing_ok: bool = False,
) -> Session:
    """The session's state and messages in order (the last ``limit`` if given). An unknown (or
    another user's) session is ``NotFound``, or an empty new one with ``missing_ok``."""
    check_id(session_id, "session_id")
    if limit is not None and (isinstance(limit, bool) or not 1 <= limit <= 100_000):
        raise RequestError("'limit' must be from 1 to 100000", code="invalid_limit", param="limit")
    row = await _fetch(store, principal, session_id)
    if row is None:
        if missing_ok:
            return Session(SessionInfo(session_id, principal.user_id, 0, 0.0, 0.0), {})
        raise _not_found(session_id)
    sql = "SELECT seq, message, run_id FROM session_messages WHERE org_id = ? AND session_id = ?"
    params: list[Any] = [principal.org_id, session_id]
    if limit is not None:
        sql += " AND seq >= ?"
        params.append(int(row[3]) - limit)
    rows = await store.fetchall(sql + " ORDER BY seq", params)
    return Session(
        _info(row),
        _state(row),
        [_MESSAGE.validate_json(r[1]) for r in rows],
        [int(r[0]) for r in rows],
        [r[2] for r in rows],
    )


async def load_or_new(
    store: Executor, principal: Principal, session_id: str, limit: int | None = None
) -> Session:
    """``load_session`` for a caller about to continue the session: an empty new one (owned by
    ``principal``) when no session of the organisation has that id; one held by another user is
    ``NotFound`` (404 ``session_not_found``, as if absent), refused before any work is done."""
    found = await load_session(store, principal, session_id, limit, missing_ok=True)
    if found.info.created_at == 0.0:  # none of the caller's: is the id another user's?
        taken = await store.fetchone(
            "SELECT 1 FROM sessions WHERE org_id = ? AND id = ?", (principal.org_id, session_id)
        )
        if taken is not None:
            raise _not_found(session_id)
    return found


def _conflict(session_id: str) -> RequestError:
    return RequestError(
        f"session {session_id!r} changed while this request ran (another request appended to it)",
        code="session_conflict",
        param="session_id",
        status=409,
        hint="send the turn again: it will see the other request's messages",
    )


def _encode(messages: Sequence[Message | Mapping[str, Any]]) -> list[bytes]:
    out = []
    for i, message in enumerate(messages):
        try:
            parsed = _MESSAGE.validate_python(message)
        except ValidationError as exc:
            raise RequestError(
                f"messages[{i}] is not a valid message: {exc.errors()[0]['msg']}",
                code="invalid_message",
                param=f"messages[{i}]",
            ) from None
        out.append(orjson.dumps(parsed.model_dump(exclude_none=True)))
    return out


async def _create(db: Executor, principal: Principal, session_id: str, now: float) -> None:
    await db.execute(
        "INSERT INTO sessions (org_id, id, user_id, state, next_seq, created_at, updated_at)"
        " VALUES (?, ?, ?, '{}', 0, ?, ?) ON CONFLICT (org_id, id) DO NOTHING",
        (principal.org_id, session_id, principal.user_id, now, now),
    )


async def append_messages(
    store: Store,
    principal: Principal,
    session_id: str,
    messages: Sequence[Message | Mapping[str, Any]],
    run_id: str | None = None,
    *,
    expect_seq: int | None = None,
) -> list[int]:
    """Append ``messages`` to the session (created, owned by ``principal``, on first use); the
    sequence numbers they got, consecutive. ``NotFound`` for another user's session. With
    ``expect_seq`` (the ``SessionInfo.messages`` the caller read) the append happens only if no
    message was added since: otherwise nothing is written and it is a 409 ``session_conflict``."""
    check_id(session_id, "session_id")
    if run_id is not None:
        check_id(run_id, "run_id")
    encoded = _encode(messages)
    now = time.time()
    cond, params = _owner_sql(principal)
    async with store.transaction() as tx:
        await _create(tx, principal, session_id, now)
        expected = "" if expect_seq is None else " AND next_seq = ?"
        row = await tx.fetchone(
            f"UPDATE sessions SET next_seq = next_seq + ?, updated_at = ? WHERE id = ? AND {cond}"
            f"{expected} RETURNING next_seq",
            (len(encoded), now, session_id, *params, *([] if expect_seq is None else [expect_seq])),
        )
        if row is None:
            if expect_seq is not None and await _fetch(tx, principal, session_id) is not None:
                raise _conflict(session_id)
            raise _not_found(session_id)
        first = int(row[0]) - len(encoded)
        seqs = list(range(first, first + len(encoded)))
        if encoded:
            await tx.executemany(
                "INSERT INTO session_messages (org_id, session_id, seq, message, run_id,"
                " created_at) VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (principal.org_id, session_id, s, m.decode(), run_id, now)
                    for s, m in zip(seqs, encoded, strict=True)
                ],
            )
    return seqs


async def set_state(
    store: Store, principal: Principal, session_id: str, state: Mapping[str, Any]
) -> None:
    """Replace the session's state (a JSON object); creates the session on first use."""
    check_id(session_id, "session_id")
    if not isinstance(state, Mapping):
        raise RequestError("a session's state must be a JSON object", code="invalid_state")
    try:
        data = orjson.dumps(dict(state))
    except TypeError as exc:
        raise RequestError(f"state is not JSON: {exc}", code="invalid_state") from None
    if len(data) > MAX_STATE_BYTES:
        raise RequestError(
            f"state is {len(data)} bytes; at most {MAX_STATE_BYTES}", code="invalid_state"
        )
    now = time.time()
    cond, params = _owner_sql(principal)
    async with store.transaction() as tx:
        await _create(tx, principal, session_id, now)
        changed = await tx.execute(
            f"UPDATE sessions SET state = ?, updated_at = ? WHERE id = ? AND {cond}",
            (data.decode(), now, session_id, *params),
        )
        if not changed:
            raise _not_found(session_id)


async def list_sessions(
    db: Executor, principal: Principal, *, user_id: str | None = None, limit: int = 100
) -> list[SessionInfo]:
    """The sessions ``principal`` may see (its own; an admin's: its organisation's, or
    ``user_id``'s), most recently updated first."""
    if isinstance(limit, bool) or not 1 <= limit <= 10_000:
        raise RequestError("'limit' must be from 1 to 10000", code="invalid_limit", param="limit")
    cond, params = _owner_sql(principal)
    sql = f"SELECT {_COLUMNS} FROM sessions WHERE {cond}"
    if user_id is not None:
        sql += " AND user_id = ?"
        params.append(check_id(user_id, "user"))
    rows = await db.fetchall(sql + " ORDER BY updated_at DESC, id LIMIT ?", (*params, limit))
    return [_info(r) for r in rows]


async def delete_session(store: Store, principal: Principal, session_id: str) -> SessionInfo:
    """Delete the session and its messages physically; what was deleted."""
    check_id(session_id, "session_id")
    async with store.transaction() as tx:
        row = await _fetch(tx, principal, session_id)
        if row is None:
            raise _not_found(session_id)
        await tx.execute(
            "DELETE FROM session_messages WHERE org_id = ? AND session_id = ?",
            (principal.org_id, session_id),
        )
        await tx.execute(
            "DELETE FROM sessions WHERE org_id = ? AND id = ?", (principal.org_id, session_id)
        )
    return _info(row)
