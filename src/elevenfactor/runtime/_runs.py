"""Run rows: submitting, reading, cancelling and deleting runs (claiming them is in
``_claims``, settling them in ``_settle``).

Statuses: ``queued`` (runnable once ``wake_at`` passes), ``running`` (leased by a worker),
``waiting`` (parked on an approval; holds no worker), ``succeeded``, ``failed``, ``cancelled``.
``attempt`` counts the attempts started: 0 while a new run is queued, 1 once a worker starts it
(resuming a parked run or taking over a dead worker's lease continues the same attempt), 2 once
a retry after a failure starts, and so on; a run that failed after 3 attempts shows 3.
A lease is taken by bumping ``fence``; every journal append checks it, so a worker whose lease
expired cannot write once another worker has taken over.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from elevenfactor.errors import RequestError, RunNotFound
from elevenfactor.governance import (
    SYSTEM,
    Principal,
    append_entry,
    check_id,
    check_tags,
    local_admin,
)
from elevenfactor.governance._agent_breaker import check_not_paused
from elevenfactor.observe._trace_runs import run_trace
from elevenfactor.runtime._codec import encode
from elevenfactor.runtime._journal import genesis_hash
from elevenfactor.runtime._release_binding import default_release
from elevenfactor.runtime._settle import FINAL, record_end
from elevenfactor.store import BLOB_INSERT, Store, blob_hash, get_blob, wake_local

__all__ = [
    "Lease",
    "RunInfo",
    "cancel_run",
    "delete_run",
    "get_run",
    "list_runs",
    "run_input",
    "run_result",
    "submit_run",
]

_RUN_COLUMNS = (
    "id, program, queue, priority, status, input_hash, result_hash, error, parent_id,"
    " created_at, updated_at, wake_at, deadline_at, attempt, max_attempts, fence,"
    " lease_owner, lease_expires_at, cancel_requested, org_id, team_id, user_id, key_id,"
    " head_hash, release_id"
)


@dataclass(frozen=True, slots=True)
class RunInfo:
    """A run as stored."""

    id: str
    program: str
    queue: str
    priority: int
    status: str
    input_hash: str
    result_hash: str | None
    error: str | None
    parent_id: str | None
    created_at: float
    updated_at: float
    wake_at: float | None
    deadline_at: float | None
    attempt: int
    """Attempts started (see the module docstring)."""
    max_attempts: int
    fence: int
    lease_owner: str | None
    lease_expires_at: float | None
    cancel_requested: int
    org_id: str | None = None
    team_id: str | None = None
    user_id: str | None = None
    key_id: str | None = None
    head_hash: str | None = None
    """Hash of the last journal event when the run last settled (parked, retried, ended)."""
    release_id: str | None = None
    """The release the run was submitted under (``runtime._release``), or None."""

    @property
    def finished(self) -> bool:
        """Succeeded, failed or cancelled."""
        return self.status in FINAL

    def error_dict(self) -> dict[str, Any] | None:
        """The stored error as ``{code, message}``."""
        return orjson.loads(self.error) if self.error else None


@dataclass(frozen=True, slots=True)
class Lease:
    """A worker's hold on a run: valid while ``fence`` is the run's current fence."""

    run_id: str
    program: str
    queue: str
    fence: int
    attempt: int
    input_hash: str
    genesis_hash: str
    deadline_at: float | None
    expires_at: float
    attempt_start_n: int = 0
    """Journal events before this index belong to earlier (failed) attempts of the run."""
    owner: Principal | None = None
    """Whom the run acts for: its tools, approvals and child runs carry this owner."""
    cancel_requested: bool = False
    """A cancel arrived while the run was running (and it parked since): stop at the next step."""
    input_data: bytes | None = None
    """The run's input as stored, read with the claim (None: read it from the blob table)."""
    has_journal: bool = True
    """Whether the run may have journal events to replay. False only for the first claim of a
    run (fence 1) that has none: ``RunContext.open`` then loads nothing (and an approval or a
    child run it issues cannot exist yet)."""
    tags: tuple[str, ...] = ()
    """The run's tags: every model call it makes carries them."""
    session_id: str | None = None
    """The session the run continues (an agent reads its history and appends its turns)."""


async def submit_run(
    store: Store,
    program: str,
    input: Any,
    *,
    queue: str = "default",
    priority: int = 0,
    run_id: str | None = None,
    max_attempts: int = 1,
    retry_backoff: float = 1.0,
    retry_on: Sequence[str] | None = None,
    deadline: float | None = None,
    parent_id: str | None = None,
    session_id: str | None = None,
    start_at: float | None = None,
    owner: Principal | None = None,
    tags: Sequence[str] = (),
    traceparent: str | None = None,
    release_id: str | None = None,
) -> str:
    """Queue a run of ``program``; return its id.

    ``run_id`` makes submission idempotent: submitting the same id again returns it unchanged.
    ``deadline`` is in seconds from now. A failed execution is retried (up to ``max_attempts``
    attempts in all, backing off ``retry_backoff * 2**(attempt - 1)`` seconds after attempt
    ``attempt``) when ``retry_on`` is None or names its
    error code or exception type (for a failed step: the step's original ones too).
    ``owner`` is whom the run acts for (default: the built-in local administrator); its creation
    is recorded in the ledger in the same transaction. ``tags`` (names, at most 32) go with
    every model call the run makes, for cost reports; they are part of the ledger entry.
    A new run of an agent its breaker paused (in the owner's organisation) is refused with
    ``AgentPaused``; submitting an existing run's id again is not. The run's trace context
    is stored with it (the current span's, else ``traceparent`` — an incoming request's —,
    else a new trace; see ``observe._trace_runs``): every execution continues that trace.
    ``release_id`` is the release it runs under (a worker whose files are not that release's
    refuses to start it); None: its parent's, else this process's (``default_release``).
    """
    if max_attempts < 1:
        raise RequestError("max_attempts must be at least 1", param="max_attempts")
    tags = check_tags(tags)
    if session_id is not None:
        check_id(session_id, "session_id")
    rid = run_id or uuid.uuid4().hex
    data = encode(input)
    digest = blob_hash(data)
    now = time.time()
    deadline_at = now + deadline if deadline is not None else None
    who = owner or local_admin("system")
    org_id, team_id, user_id, key_id = who.owner()
    genesis = genesis_hash(rid, program, digest, now)
    trace_id, parent_span = run_trace(traceparent)
    async with store.transaction() as tx:
        if release_id is None and parent_id is not None:
            parent = await tx.fetchone("SELECT release_id FROM runs WHERE id = ?", (parent_id,))
            release_id = parent[0] if parent is not None else None
        if release_id is None:
            release_id = default_release(store.url)
        await tx.execute(BLOB_INSERT, (digest, len(data), data, now))
        inserted = await tx.execute(
            "INSERT INTO runs (id, program, queue, priority, status, input_hash, parent_id,"
            " session_id, created_at, updated_at, wake_at, deadline_at, attempt, max_attempts,"
            " retry_backoff, retry_on, fence, cancel_requested, genesis_hash,"
            " org_id, team_id, user_id, key_id, tags, trace_id, traceparent, release_id)"
            " VALUES (?, ?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?, 0, 0,"
            " ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (id) DO NOTHING",
            (
                rid,
                program,
                queue,
                priority,
                digest,
                parent_id,
                session_id,
                now,
                now,
                start_at,
                deadline_at,
                max_attempts,
                retry_backoff,
                orjson.dumps(list(retry_on)).decode() if retry_on is not None else None,
                genesis,
                org_id,
                team_id,
                user_id,
                key_id,
                orjson.dumps(list(tags)).decode() if tags else None,
                trace_id,
                parent_span,
                release_id,
            ),
        )
        if inserted == 1:
            await check_not_paused(tx, org_id, program)  # rolls the insert back if paused
            await append_entry(
                tx,
                "run.created",
                rid,
                who.actor(),
                {
                    "program": program,
                    "input_hash": digest,
                    "genesis": genesis,
                    "parent_id": parent_id,
                    "owner": [org_id, team_id, user_id, key_id],
                    **({"tags": list(tags)} if tags else {}),
                    **({"release_id": release_id} if release_id is not None else {}),
                },
            )
    if inserted == 1 and (start_at is None or start_at <= now):
        wake_local(store.url)  # a worker of this process starts it now (others: NOTIFY)
    if inserted != 1:
        existing = await get_run(store, rid)
        if (
            existing.program != program
            or existing.input_hash != digest
            or (existing.org_id, existing.user_id) != (org_id, user_id)
        ):
            raise RequestError(
                f"the run id {rid!r} is taken",
                code="run_conflict",
                status=409,
                param="id",
                hint="submitting the same program and input again with your id is idempotent;"
                " pick another id for another run",
            )
    return rid


async def get_run(store: Store, run_id: str, principal: Principal = SYSTEM) -> RunInfo:
    """The run with ``run_id`` if ``principal`` may see it, else raise ``RunNotFound`` (the
    same answer whether the run does not exist or belongs to someone else)."""
    scope, params = principal.scope()
    row = await store.fetchone(
        f"SELECT {_RUN_COLUMNS} FROM runs WHERE id = ? AND {scope}", (run_id, *params)
    )
    if row is None:
        raise RunNotFound(f"no run with id {run_id!r}", hint="`elevenfactor runs list`")
    return RunInfo(*row)


async def run_input(store: Store, run: RunInfo | Lease) -> Any:
    """The decoded input of a run."""
    data = run.input_data if isinstance(run, Lease) else None
    if data is None:
        data = await get_blob(store, run.input_hash)
    return orjson.loads(data) if data is not None else None


async def run_result(store: Store, run: RunInfo) -> Any:
    """The decoded result of a succeeded run, else None."""
    if run.result_hash is None:
        return None
    data = await get_blob(store, run.result_hash)
    return orjson.loads(data) if data is not None else None


async def list_runs(
    store: Store,
    *,
    status: str | None = None,
    program: str | None = None,
    limit: int = 50,
    principal: Principal = SYSTEM,
) -> list[RunInfo]:
    """Newest runs first that ``principal`` may see, optionally filtered."""
    scope, scope_params = principal.scope()
    where: list[str] = [scope]
    params: list[Any] = list(scope_params)
    if status:
        where.append("status = ?")
        params.append(status)
    if program:
        where.append("program = ?")
        params.append(program)
    clause = f" WHERE {' AND '.join(where)}"
    rows = await store.fetchall(
        f"SELECT {_RUN_COLUMNS} FROM runs{clause} ORDER BY created_at DESC LIMIT ?",
        (*params, limit),
    )
    return [RunInfo(*r) for r in rows]


async def cancel_run(
    store: Store, run_id: str, reason: str = "cancelled", principal: Principal = SYSTEM
) -> RunInfo:
    """Cancel a run ``principal`` may see and return it as it is now: ``cancelled`` at once if
    it was queued or waiting; still ``running`` with ``cancel_requested`` set if a worker holds
    it (the worker stops it at its next step; ``Worker.request_cancel`` tells a worker in this
    process at once). A finished run raises ``RequestError`` ``run_finished`` (409)."""
    await get_run(store, run_id, principal)
    now = time.time()
    error = orjson.dumps({"code": "run_cancelled", "message": reason}).decode()
    async with store.transaction() as tx:
        row = await tx.fetchone(
            "UPDATE runs SET status = 'cancelled', error = ?, updated_at = ?,"
            " cancel_requested = 1 WHERE id = ? AND status IN ('queued', 'waiting')"
            " RETURNING head_hash",
            (error, now, run_id),
        )
        if row is not None:
            await record_end(tx, run_id, principal.actor(), "cancelled", row[0], None, error)
        else:
            running = await tx.fetchone(
                "UPDATE runs SET cancel_requested = 1, updated_at = ? WHERE id = ?"
                " AND status = 'running' RETURNING id",
                (now, run_id),
            )
            if running is None:
                status = await tx.fetchone("SELECT status FROM runs WHERE id = ?", (run_id,))
                if status is None:
                    raise RunNotFound(f"no run with id {run_id!r}", hint="`elevenfactor runs list`")
                raise RequestError(
                    f"run {run_id} already {status[0]}; only unfinished runs can be cancelled",
                    code="run_finished",
                    status=409,
                )
        cancelled = await tx.fetchall(
            "UPDATE approvals SET status = 'cancelled' WHERE run_id = ? AND status = 'pending'"
            " RETURNING id",
            (run_id,),
        )
        for (approval_id,) in cancelled:
            await append_entry(
                tx, "approval.cancelled", approval_id, principal.actor(), {"run_id": run_id}
            )
    return await get_run(store, run_id, principal)


async def delete_run(store: Store, run_id: str, principal: Principal, reason: str) -> None:
    """Delete a finished run, its journal and its approvals (an admin's act, e.g. on a data
    subject's request). The deletion is recorded in the ledger with who, why and the run's
    sealed head, so ``audit verify`` tells a deletion from a tampering."""
    principal.require_admin("deleting a run")
    info = await get_run(store, run_id, principal)
    if not info.finished:
        raise RequestError(
            f"run {run_id} is {info.status}; only finished runs can be deleted",
            code="run_not_finished",
            status=409,
            hint="cancel it first",
        )
    async with store.transaction() as tx:
        approvals = await tx.fetchall("SELECT id FROM approvals WHERE run_id = ?", (run_id,))
        count = await tx.fetchone("SELECT COUNT(*) FROM journal WHERE run_id = ?", (run_id,))
        await tx.execute("DELETE FROM journal WHERE run_id = ?", (run_id,))
        await tx.execute("DELETE FROM approvals WHERE run_id = ?", (run_id,))
        await tx.execute("DELETE FROM run_feedback WHERE run_id = ?", (run_id,))
        await tx.execute("DELETE FROM runs WHERE id = ?", (run_id,))
        for (approval_id,) in approvals:
            await append_entry(
                tx, "approval.deleted", approval_id, principal.actor(), {"run_id": run_id}
            )
        await append_entry(
            tx,
            "run.deleted",
            run_id,
            principal.actor(),
            {"reason": reason, "events": int(count[0]) if count else 0},
        )
