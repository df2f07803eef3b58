"""Run rows: submitting, reading, leasing (with fencing tokens), parking, finishing, cancelling.

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
from elevenfactor.governance import SYSTEM, Principal, append_entry, local_admin
from elevenfactor.runtime._codec import encode
from elevenfactor.runtime._journal import genesis_hash
from elevenfactor.store import BLOB_INSERT, Executor, Store, blob_hash, get_blob

__all__ = [
    "FINAL",
    "Lease",
    "RunInfo",
    "cancel_run",
    "claim_run",
    "delete_run",
    "get_run",
    "list_runs",
    "record_end",
    "run_owner",
    "submit_run",
]

FINAL = frozenset({"succeeded", "failed", "cancelled"})
_RUN_COLUMNS = (
    "id, program, queue, priority, status, input_hash, result_hash, error, parent_id,"
    " created_at, updated_at, wake_at, deadline_at, attempt, max_attempts, fence,"
    " lease_owner, lease_expires_at, cancel_requested, org_id, team_id, user_id, key_id,"
    " head_hash"
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
) -> str:
    """Queue a run of ``program``; return its id.

    ``run_id`` makes submission idempotent: submitting the same id again returns it unchanged.
    ``deadline`` is in seconds from now. A failed execution is retried (up to ``max_attempts``
    attempts in all, backing off ``retry_backoff * 2**(attempt - 1)`` seconds after attempt
    ``attempt``) when ``retry_on`` is None or names its
    error code or exception type (for a failed step: the step's original ones too).
    ``owner`` is whom the run acts for (default: the built-in local administrator); its creation
    is recorded in the ledger in the same transaction.
    """
    if max_attempts < 1:
        raise RequestError("max_attempts must be at least 1", param="max_attempts")
    rid = run_id or uuid.uuid4().hex
    data = encode(input)
    digest = blob_hash(data)
    now = time.time()
    deadline_at = now + deadline if deadline is not None else None
    who = owner or local_admin("system")
    org_id, team_id, user_id, key_id = who.owner()
    genesis = genesis_hash(rid, program, digest, now)
    async with store.transaction() as tx:
        await tx.execute(BLOB_INSERT, (digest, len(data), data, now))
        inserted = await tx.execute(
            "INSERT INTO runs (id, program, queue, priority, status, input_hash, parent_id,"
            " session_id, created_at, updated_at, wake_at, deadline_at, attempt, max_attempts,"
            " retry_backoff, retry_on, fence, cancel_requested, genesis_hash,"
            " org_id, team_id, user_id, key_id)"
            " VALUES (?, ?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?, 0, 0, ?, ?, ?, ?, ?)"
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
            ),
        )
        if inserted == 1:
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
                },
            )
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


async def claim_run(
    store: Store,
    owner: str,
    queues: list[str],
    lease_seconds: float,
    limits: dict[str, int] | None = None,
) -> Lease | None:
    """Lease the most urgent runnable run in ``queues``: queued and due, or running with an
    expired lease (its worker died). ``limits`` caps running runs per queue across all workers.

    PostgreSQL skips rows other workers are claiming (``FOR UPDATE SKIP LOCKED``); SQLite
    serialises claims with ``BEGIN IMMEDIATE``.
    """
    now = time.time()
    marks = ", ".join("?" for _ in queues)
    lock = " FOR UPDATE SKIP LOCKED" if store.dialect == "postgresql" else ""
    async with store.transaction() as tx:
        allowed = list(queues)
        if limits:
            if store.dialect == "postgresql":
                await tx.execute("SELECT pg_advisory_xact_lock(22222)")
            rows = await tx.fetchall(
                f"SELECT queue, COUNT(*) FROM runs WHERE status = 'running' AND queue IN ({marks})"
                " AND lease_expires_at >= ? GROUP BY queue",
                (*queues, now),
            )
            busy = {q: int(n) for q, n in rows}
            allowed = [q for q in queues if q not in limits or busy.get(q, 0) < limits[q]]
            if not allowed:
                return None
            marks = ", ".join("?" for _ in allowed)
        # Two index-friendly probes instead of one OR over three states (which scans and sorts
        # every runnable run): first resumptions (a dead worker's expired lease, a due timer or
        # approval timeout), then the most urgent queued run.
        row = await tx.fetchone(
            f"SELECT id FROM runs WHERE queue IN ({marks}) AND ("
            " (status = 'running' AND lease_expires_at < ?)"
            " OR (status = 'waiting' AND wake_at <= ?)) LIMIT 1" + lock,
            (*allowed, now, now),
        )
        if row is None:
            row = await tx.fetchone(
                f"SELECT id FROM runs WHERE status = 'queued' AND queue IN ({marks})"
                " AND (wake_at IS NULL OR wake_at <= ?)"
                " ORDER BY priority DESC, created_at LIMIT 1" + lock,
                (*allowed, now),
            )
        if row is None:
            return None
        expires = now + lease_seconds
        # A queued run starts a new attempt when it never ran (attempt 0) or when it was queued
        # to retry a failure (the failure's error kept); a parked run resumes its attempt, and a
        # takeover (status 'running') continues it.
        claimed = await tx.fetchone(
            "UPDATE runs SET status = 'running', lease_owner = ?, lease_expires_at = ?,"
            " fence = fence + 1, updated_at = ?, wake_at = NULL,"
            " attempt = CASE WHEN status = 'queued' AND (attempt = 0 OR error IS NOT NULL)"
            " THEN attempt + 1 ELSE attempt END WHERE id = ?"
            " RETURNING id, program, queue, fence, attempt, input_hash, genesis_hash, deadline_at,"
            " attempt_start_n, cancel_requested, org_id, team_id, user_id, key_id",
            (owner, expires, now, row[0]),
        )
    assert claimed is not None
    rid, program, queue, fence, attempt, input_hash, genesis, deadline_at, start_n = claimed[:9]
    return Lease(
        rid,
        program,
        queue,
        int(fence),
        int(attempt),
        input_hash,
        genesis,
        deadline_at,
        expires,
        int(start_n),
        await run_owner(store, claimed[10:]),
        bool(claimed[9]),
    )


async def run_owner(db: Store, owner: Sequence[Any]) -> Principal:
    """The principal a run acts for, from its owner columns ``(org, team, user, key)``: the
    user's current roles and groups, or a bare member if the user is gone."""
    org_id, team_id, user_id, key_id = owner
    row = await db.fetchone("SELECT name, roles FROM users WHERE id = ?", (user_id,))
    name, roles = (row[0], row[1]) if row else (str(user_id), "member")
    groups = await db.fetchall("SELECT group_name FROM group_members WHERE user_id = ?", (user_id,))
    return Principal(
        org_id=org_id or "org_default",
        user_id=user_id or "user_local",
        user_name=name,
        team_id=team_id,
        key_id=key_id,
        roles=frozenset(r for r in roles.split(",") if r),
        groups=frozenset(g[0] for g in groups),
        via="run",
    )


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


async def record_end(
    db: Executor,
    run_id: str,
    actor: dict[str, Any] | str,
    status: str,
    head_hash: str | None,
    result_hash: str | None,
    error: str | None,
    *,
    events: int | None = None,
) -> None:
    """Seal a run's end in the ledger (or, for a run that parks or is retried, a checkpoint):
    its status, chain head, event count and result."""
    if events is None:
        count = await db.fetchone("SELECT COUNT(*) FROM journal WHERE run_id = ?", (run_id,))
        events = int(count[0]) if count else 0
    await append_entry(
        db,
        "run.ended" if status in FINAL else "run.checkpoint",
        run_id,
        actor,
        {
            "status": status,
            "head_hash": head_hash,
            "events": events,
            "result_hash": result_hash,
            "error_hash": blob_hash(error.encode()) if error is not None else None,
        },
    )
