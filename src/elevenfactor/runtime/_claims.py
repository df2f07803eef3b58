"""Claiming runs: leases with fencing tokens, taken in batches.

A claim leases the most urgent runnable runs (a dead worker's expired lease, a due timer, then
queued runs by priority) by bumping each run's ``fence``; every journal append checks it, so a
worker whose lease expired cannot write once another worker has taken over. The claim returns
with each lease what starting the run needs (its input, its owner, whether it has a journal to
replay), so a fresh run starts without a further query.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import orjson

from elevenfactor.governance import Principal
from elevenfactor.runtime._runs import Lease
from elevenfactor.store import Store

__all__ = ["claim_run", "claim_runs", "run_owner"]


_CLAIM_SET = (
    "status = 'running', lease_owner = ?, lease_expires_at = ?, fence = fence + 1,"
    " updated_at = ?, wake_at = NULL,"
    # A queued run starts a new attempt when it never ran (attempt 0) or when it was queued to
    # retry a failure (the failure's error kept); a parked run resumes its attempt, and a
    # takeover (status 'running') continues it.
    " attempt = CASE WHEN status = 'queued' AND (attempt = 0 OR error IS NOT NULL)"
    " THEN attempt + 1 ELSE attempt END"
)
# What a worker needs to start each run, read by the claim itself: the lease, the input, the
# owner (name, roles, reviewer groups) and whether the run has a journal to replay, so starting
# a fresh run costs no further query.
_CLAIM_RETURNING = (
    " RETURNING id, program, queue, fence, attempt, input_hash, genesis_hash, deadline_at,"
    " attempt_start_n, cancel_requested, org_id, team_id, user_id, key_id,"
    " (SELECT content FROM blobs WHERE blobs.hash = runs.input_hash),"
    " (SELECT name FROM users WHERE users.id = runs.user_id),"
    " (SELECT roles FROM users WHERE users.id = runs.user_id),"
    " (SELECT {groups} FROM group_members WHERE group_members.user_id = runs.user_id),"
    " EXISTS (SELECT 1 FROM journal WHERE journal.run_id = runs.id), tags, session_id"
)
# Resumptions (a dead worker's expired lease, a due timer or approval timeout), then the most
# urgent queued runs: two index-friendly probes instead of one OR over three states (which
# scans and sorts every runnable run).
_DUE = (
    "SELECT id FROM runs WHERE queue IN ({marks}) AND ("
    " (status = 'running' AND lease_expires_at < ?) OR (status = 'waiting' AND wake_at <= ?))"
    " LIMIT {limit}{lock}"
)
_FRESH = (
    "SELECT id FROM runs WHERE status = 'queued' AND queue IN ({marks})"
    " AND (wake_at IS NULL OR wake_at <= ?) ORDER BY priority DESC, created_at"
    " LIMIT {limit}{lock}"
)


async def claim_run(
    store: Store,
    owner: str,
    queues: list[str],
    lease_seconds: float,
    limits: dict[str, int] | None = None,
) -> Lease | None:
    """Lease the most urgent runnable run (see ``claim_runs``), or None."""
    leases = await claim_runs(store, owner, queues, lease_seconds, limits, 1)
    return leases[0] if leases else None


async def claim_runs(
    store: Store,
    owner: str,
    queues: list[str],
    lease_seconds: float,
    limits: dict[str, int] | None = None,
    n: int = 1,
) -> list[Lease]:
    """Lease up to ``n`` of the most urgent runnable runs in ``queues``: queued and due, or
    running with an expired lease (its worker died). ``limits`` caps running runs per queue
    across all workers (a queue with a limit is claimed one run at a time).

    PostgreSQL claims in one statement (``FOR UPDATE SKIP LOCKED`` skips rows other workers
    are claiming); SQLite serialises claims with ``BEGIN IMMEDIATE``.
    """
    if n < 1:
        return []
    now = time.time()
    expires = now + lease_seconds
    if store.dialect == "postgresql" and not limits:
        marks = ", ".join("?" for _ in queues)
        due = _DUE.format(marks=marks, limit="?", lock=" FOR UPDATE SKIP LOCKED")
        fresh = _FRESH.format(
            marks=marks,
            limit="GREATEST(? - (SELECT COUNT(*) FROM due), 0)",
            lock=" FOR UPDATE SKIP LOCKED",
        )
        rows = await store.fetchall(
            f"WITH due AS ({due}), fresh AS ({fresh})"
            f" UPDATE runs SET {_CLAIM_SET}"
            # ``= ANY(ARRAY(...))``: the picked ids as one value, so the row lookups go through
            # the primary key (``IN (subquery)`` let the planner hash-join a scan of ``runs``).
            " WHERE id = ANY(ARRAY(SELECT id FROM due UNION ALL SELECT id FROM fresh))"
            + _CLAIM_RETURNING.format(groups="array_agg(group_name)"),
            (*queues, now, now, n, *queues, now, n, owner, expires, now),
        )
        return [_lease(row, expires) for row in rows]
    async with store.transaction() as tx:
        allowed = list(queues)
        if limits:
            if store.dialect == "postgresql":
                await tx.execute("SELECT pg_advisory_xact_lock(22222)")
            marks = ", ".join("?" for _ in queues)
            counts = await tx.fetchall(
                f"SELECT queue, COUNT(*) FROM runs WHERE status = 'running' AND queue IN ({marks})"
                " AND lease_expires_at >= ? GROUP BY queue",
                (*queues, now),
            )
            busy = {q: int(c) for q, c in counts}
            allowed = [q for q in queues if q not in limits or busy.get(q, 0) < limits[q]]
            if not allowed:
                return []
            n = 1
        marks = ", ".join("?" for _ in allowed)
        lock = " FOR UPDATE SKIP LOCKED" if store.dialect == "postgresql" else ""
        ids = [
            r[0]
            for r in await tx.fetchall(
                _DUE.format(marks=marks, limit="?", lock=lock), (*allowed, now, now, n)
            )
        ]
        if len(ids) < n:
            ids += [
                r[0]
                for r in await tx.fetchall(
                    _FRESH.format(marks=marks, limit="?", lock=lock),
                    (*allowed, now, n - len(ids)),
                )
            ]
        if not ids:
            return []
        groups = (
            "array_agg(group_name)"
            if store.dialect == "postgresql"
            else "json_group_array(group_name)"
        )
        rows = await tx.fetchall(
            f"UPDATE runs SET {_CLAIM_SET} WHERE id IN ({', '.join('?' for _ in ids)})"
            + _CLAIM_RETURNING.format(groups=groups),
            (owner, expires, now, *ids),
        )
    return [_lease(row, expires) for row in rows]


def _lease(row: Sequence[Any], expires: float) -> Lease:
    rid, program, queue, fence, attempt, input_hash, genesis, deadline_at, start_n = row[:9]
    org_id, team_id, user_id, key_id, data, name, roles, groups, events, tags, session = row[10:]
    if isinstance(groups, str):
        groups = orjson.loads(groups)
    # Only the first claim of a run (fence 1) with no events skips the journal: a takeover
    # (fence > 1) loads it even when the claim saw none, since the statement's snapshot may
    # predate an event the dead worker's last append committed just before the claim locked the
    # row (that append holds the row FOR SHARE only while it runs).
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
        _principal((org_id, team_id, user_id, key_id), name, roles, groups or ()),
        bool(row[9]),
        None if data is None else bytes(data),
        bool(events) or int(fence) > 1,
        tuple(orjson.loads(tags)) if tags else (),
        session,
    )


async def run_owner(db: Store, owner: Sequence[Any]) -> Principal:
    """The principal a run acts for, from its owner columns ``(org, team, user, key)``: the
    user's current roles and groups, or a bare member if the user is gone."""
    user_id = owner[2]
    row = await db.fetchone("SELECT name, roles FROM users WHERE id = ?", (user_id,))
    groups = await db.fetchall("SELECT group_name FROM group_members WHERE user_id = ?", (user_id,))
    return _principal(
        owner, row[0] if row else None, row[1] if row else None, [g[0] for g in groups]
    )


def _principal(
    owner: Sequence[Any], name: str | None, roles: str | None, groups: Sequence[str]
) -> Principal:
    org_id, team_id, user_id, key_id = owner
    if name is None:  # the user is gone
        name, roles = str(user_id), "member"
    return Principal(
        org_id=org_id or "org_default",
        user_id=user_id or "user_local",
        user_name=name,
        team_id=team_id,
        key_id=key_id,
        roles=frozenset(r for r in (roles or "").split(",") if r),
        groups=frozenset(g for g in groups if g is not None),
        via="run",
    )
