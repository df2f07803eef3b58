"""The journal: a hash-chained list of step events per run.

Events are chained in the order they are written (``n`` = 0, 1, 2, ...): each hash covers the
event's content and the previous event's hash, and the first links to the run's genesis hash,
which covers the run id, program, input and creation time. ``step_id`` is the step's logical
position in the program ("3", or "3.1.0" inside parallel branch 1 of step 3); replay looks
events up by it. Payloads live in the content-addressed blob table; the journal holds their
hashes. An append only lands while the writer holds the run's current lease (its fence).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from hashlib import sha256
from typing import Any, NamedTuple, cast

import orjson
from orjson import dumps

from elevenfactor.errors import LeaseLost
from elevenfactor.store import BLOB_INSERT, Executor, Store

__all__ = [
    "Event",
    "VerifyReport",
    "append_event",
    "append_inline",
    "describe_steps",
    "event_hash",
    "event_row",
    "genesis_hash",
    "load_events",
    "load_payloads",
]

INLINE_MAX = 16 * 1024
"""Step outputs up to this size are kept inline in the journal row (one row, one write); larger
ones go to the content-addressed blob table once. Either way the event's hash covers the
output's hash, and ``audit`` re-hashes the bytes."""

_COLUMNS = (
    "run_id, n, step_id, kind, name, status, output_hash, error, fence, created_at, prev_hash, hash"
)
_APPEND = (
    f"INSERT INTO journal ({_COLUMNS}, output) SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?"
    " WHERE EXISTS (SELECT 1 FROM runs WHERE id = ? AND fence = ? AND status = 'running')"
)
# PostgreSQL: the fence check, the blob and the event in one autocommit statement (one round trip
# and one commit instead of BEGIN, two INSERTs and COMMIT); the blob is written only with the event.
# The check locks the run's row FOR SHARE until the event commits: a plain read would pass against
# the old fence while a takeover commits and the new holder loads the journal, so a stale event
# would land behind its back (and its own next append would collide on ``n``). Locked, the claim's
# FOR UPDATE SKIP LOCKED passes the run by until the event is in, or the check sees the new fence.
_LIVE = "live AS (SELECT 1 FROM runs WHERE id = ? AND fence = ? AND status = 'running' FOR SHARE)"
_APPEND_ONE = (
    f"WITH {_LIVE} INSERT INTO journal ({_COLUMNS}, output)"
    " SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM live)"
)
_APPEND_ONE_WITH_BLOB = (
    f"WITH {_LIVE}, blob AS (INSERT INTO blobs (hash, size, content, created_at)"
    " SELECT ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM live) ON CONFLICT (hash) DO NOTHING)"
    f" INSERT INTO journal ({_COLUMNS})"
    " SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM live)"
)


class Event(NamedTuple):
    """One journal entry (a named tuple: built once per step, on the hot path)."""

    run_id: str
    n: int
    step_id: str
    kind: str
    name: str
    status: str
    output_hash: str | None
    error: str | None
    fence: int
    created_at: float
    prev_hash: str
    hash: str

    def expected_hash(self) -> str:
        """The hash this event should have given its content and ``prev_hash``."""
        return event_hash(
            self.prev_hash,
            self.run_id,
            self.n,
            self.step_id,
            self.kind,
            self.name,
            self.status,
            self.output_hash,
            self.error,
            self.fence,
            self.created_at,
        )


_new_event = tuple.__new__
"""``Event`` from a row tuple without the generated ``__new__``'s argument unpacking."""


def _sha(parts: list[object]) -> str:
    return sha256(dumps(parts)).hexdigest()


def genesis_hash(run_id: str, program: str, input_hash: str, created_at: float) -> str:
    """The chain's anchor: covers the run's identity and input."""
    return _sha(["genesis", run_id, program, input_hash, created_at])


def event_hash(
    prev_hash: str,
    run_id: str,
    n: int,
    step_id: str,
    kind: str,
    name: str,
    status: str,
    output_hash: str | None,
    error: str | None,
    fence: int,
    created_at: float,
) -> str:
    """SHA-256 over the previous hash and the event's content, as canonical JSON."""
    return _sha(
        [prev_hash, run_id, n, step_id, kind, name, status, output_hash, error, fence, created_at]
    )


def event_row(
    run_id: str,
    n: int,
    step_id: str,
    kind: str,
    name: str,
    status: str,
    output: bytes | None,
    error: str | None,
    fence: int,
    prev_hash: str,
) -> tuple[Any, ...]:
    """The journal row of a new event written now: its columns in ``Event`` order, with the
    output's hash (``blob_hash``) and the event's (``event_hash``), computed inline."""
    now = time.time()
    out_hash = None if output is None else "sha256:" + sha256(output).hexdigest()
    digest = sha256(
        dumps([prev_hash, run_id, n, step_id, kind, name, status, out_hash, error, fence, now])
    ).hexdigest()
    return (run_id, n, step_id, kind, name, status, out_hash, error, fence, now, prev_hash, digest)


def _lease_lost(run_id: str, step_id: str, kind: str, name: str) -> LeaseLost:
    return LeaseLost(
        f"run {run_id}: lease lost before step {step_id} ({kind} {name!r}) was "
        "recorded; another worker owns the run now"
    )


def append_inline(
    try_execute: Callable[[str, Sequence[Any]], int | None],
    run_id: str,
    n: int,
    step_id: str,
    kind: str,
    name: str,
    status: str,
    output: bytes | None,
    error: str | None,
    fence: int,
    prev_hash: str,
) -> Event | None:
    """The fast path of ``append_event`` on a store that can run a statement inline
    (``SQLiteStore.try_execute``): the fenced event with its output inline, committed before
    this returns, without suspending. None (nothing written) when the output is too large to
    go inline or the statement has to wait: then use ``append_event``."""
    if output is not None and len(output) > INLINE_MAX:
        return None
    row = event_row(run_id, n, step_id, kind, name, status, output, error, fence, prev_hash)
    written = try_execute(_APPEND, (*row, output, run_id, fence))
    if written is None:
        return None
    if written != 1:
        raise _lease_lost(run_id, step_id, kind, name)
    return _new_event(Event, row)


async def append_event(
    db: Executor,
    *,
    run_id: str,
    n: int,
    step_id: str,
    kind: str,
    name: str,
    status: str,
    output: bytes | None,
    error: str | None,
    fence: int,
    prev_hash: str,
) -> Event:
    """Write the event (its output inline, or a blob when larger than ``INLINE_MAX``) if the
    run's fence is still ``fence``.

    ``db`` is a transaction, or a store: then the write is atomic on its own (one statement, or
    on SQLite with a large output a ``BEGIN IMMEDIATE`` transaction for the blob and the event).
    Raises ``LeaseLost`` when another worker holds the run now.
    """
    row = event_row(run_id, n, step_id, kind, name, status, output, error, fence, prev_hash)
    out_hash, now = row[6], row[9]
    dialect = getattr(db, "dialect", None)
    inline = output if output is not None and len(output) <= INLINE_MAX else None
    if dialect == "postgresql":
        if output is None or inline is not None:
            written = await db.execute(_APPEND_ONE, (run_id, fence, *row, inline))
        else:
            written = await db.execute(
                _APPEND_ONE_WITH_BLOB,
                (run_id, fence, out_hash, len(output), output, now, *row),
            )
    elif dialect is not None and (output is None or inline is not None):
        # One statement: SQLite makes it its own transaction (the fence check included), with
        # no BEGIN and COMMIT round trips through Python.
        written = await db.execute(_APPEND, (*row, inline, run_id, fence))
    elif dialect is not None:
        async with cast("Store", db).transaction() as tx:
            written = await _append(tx, row, output, inline, run_id, fence)
    else:
        written = await _append(db, row, output, inline, run_id, fence)
    if written != 1:
        raise _lease_lost(run_id, step_id, kind, name)
    return _new_event(Event, row)


async def _append(
    db: Executor,
    row: tuple[Any, ...],
    output: bytes | None,
    inline: bytes | None,
    run_id: str,
    fence: int,
) -> int:
    """The blob (if the output is not inline), then the fenced event, on ``db``: the row count
    of the event's INSERT."""
    if output is not None and inline is None:
        await db.execute(BLOB_INSERT, (row[6], len(output), output, row[9]))
    return await db.execute(_APPEND, (*row, inline, run_id, fence))


async def load_events(db: Executor, run_id: str, start: int = 0) -> list[Event]:
    """The events of a run from write index ``start`` on, in the order written."""
    rows = await db.fetchall(
        f"SELECT {_COLUMNS} FROM journal WHERE run_id = ? AND n >= ? ORDER BY n", (run_id, start)
    )
    return [Event(*r) for r in rows]


async def load_payloads(db: Executor, run_ids: Sequence[str], start: int = 0) -> dict[str, bytes]:
    """The step outputs of ``run_ids`` (events from ``start`` on) by hash: inline ones and those
    in the blob table, in two queries."""
    marks = ", ".join("?" for _ in run_ids)
    inline = await db.fetchall(
        f"SELECT output_hash, output FROM journal WHERE run_id IN ({marks}) AND n >= ?"
        " AND output IS NOT NULL",
        (*run_ids, start),
    )
    stored = await db.fetchall(
        "SELECT b.hash, b.content FROM blobs b JOIN journal j ON j.output_hash = b.hash"
        f" WHERE j.run_id IN ({marks}) AND j.n >= ? AND j.output IS NULL",
        (*run_ids, start),
    )
    return {h: bytes(c) for h, c in (*inline, *stored) if c is not None}


async def describe_steps(db: Executor, run_id: str, start: int = 0) -> list[dict[str, Any]]:
    """The events from ``start`` on as plain dicts with decoded outputs and errors (for the API,
    the CLI and the dashboard); payloads are fetched in two queries."""
    events = await load_events(db, run_id, start)
    payloads = await load_payloads(db, [run_id], start)
    return [
        {
            "n": ev.n,
            "step_id": ev.step_id,
            "kind": ev.kind,
            "name": ev.name,
            "status": ev.status,
            "created_at": ev.created_at,
            "hash": ev.hash,
            "output": orjson.loads(payloads[ev.output_hash])
            if ev.output_hash in payloads
            else None,
            "error": orjson.loads(ev.error) if ev.error else None,
        }
        for ev in events
    ]


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """The outcome of checking one run's chain."""

    run_id: str
    events: int
    ok: bool
    broken_at: int | None = None
    reason: str | None = None
