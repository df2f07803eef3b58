"""Settling runs: ending them (succeeded, failed, cancelled), parking and retrying them, the
ledger entry that seals each, and waking a parent waiting on a child that ended."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import orjson

from elevenfactor.governance import append_entry, canonical
from elevenfactor.governance._ledger import entry_hash
from elevenfactor.store import BLOB_INSERT, Executor, Store, blob_hash

__all__ = ["FINAL", "WAKE_RUN", "end_error", "record_end", "settle_final", "settle_run"]

FINAL = frozenset({"succeeded", "failed", "cancelled"})
"""The statuses a run ends in."""

WAKE_RUN = (
    "UPDATE runs SET status = CASE WHEN status = 'waiting' THEN 'queued' ELSE status END,"
    " wake_at = CASE WHEN status = 'waiting' THEN NULL ELSE wake_at END,"
    " updated_at = CASE WHEN status = 'waiting' THEN ? ELSE updated_at END"
    " WHERE id = {run}"
)
"""Wake a run parked (``waiting``) on something that just happened: an approval decided, a
child ended. (Parameters: now, then those of ``{run}``.)

The row is written whatever its status, never filtered on ``status = 'waiting'``: on
PostgreSQL a run that is parking right now holds its row locked until it commits, so this
waits for that commit and then sees ``waiting`` (a filter would skip the row as it was before
the park, while the parking transaction, which checks its wake-up condition before this commits,
misses the event too: a run parked for ever). Either this runs first and the park, waiting on
the lock, re-checks its condition after this commits, or the park commits first and this wakes
it."""


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
        _end_body(status, head_hash, events, result_hash, error),
    )


def _end_body(
    status: str, head_hash: str | None, events: int, result_hash: str | None, error: str | None
) -> dict[str, Any]:
    return {
        "status": status,
        "head_hash": head_hash,
        "events": events,
        "result_hash": result_hash,
        "error_hash": blob_hash(error.encode()) if error is not None else None,
    }


async def settle_final(
    store: Store,
    run_id: str,
    fence: int,
    actor: dict[str, Any],
    status: str,
    *,
    head_hash: str,
    events: int,
    result: bytes | None = None,
    error: str | None = None,
) -> tuple[bool, bool]:
    """End a run its worker still holds (``fence``) as ``succeeded`` or ``failed`` in one
    statement on PostgreSQL: the result blob, the run's row, its ``run.ended`` ledger entry
    (the same entry ``record_end`` writes) and the wake-up of a parent waiting on it.

    Returns (whether the run was ended — False if the lease was lost, whether a parent woke).
    """
    if status not in ("succeeded", "failed"):
        raise ValueError(f"settle_final ends a run succeeded or failed, not {status!r}")
    now = time.time()
    result_hash = blob_hash(result) if result is not None else None
    actor_s = canonical(actor)
    body_s = canonical(_end_body(status, head_hash, events, result_hash, error))
    ledger = ("run.ended", run_id, actor_s, body_s, now)
    blob = ""
    params: list[Any] = []
    if result is not None:
        blob = f"b AS ({BLOB_INSERT}), "
        params += [result_hash, len(result), result, now]
    params += [status, result_hash, error, head_hash, now, run_id, fence]
    params += [*ledger, entry_hash(*ledger), now]
    row = await store.fetchone(
        f"WITH {blob}u AS (UPDATE runs SET status = ?, wake_at = NULL,"
        " result_hash = COALESCE(?, result_hash), error = ?, head_hash = ?, lease_owner = NULL,"
        " lease_expires_at = NULL, updated_at = ? WHERE id = ? AND fence = ?"
        " RETURNING parent_id),"
        " l AS (INSERT INTO ledger (kind, subject, actor, body, created_at, hash)"
        " SELECT ?, ?, ?, ?, ?, ? FROM u),"
        f" p AS ({WAKE_RUN.format(run='(SELECT parent_id FROM u)')} RETURNING status)"
        " SELECT (SELECT COUNT(*) FROM u), (SELECT COUNT(*) FROM p WHERE status = 'queued')",
        params,
    )
    assert row is not None
    return int(row[0]) == 1, int(row[1]) > 0


def end_error(code: str, message: str) -> str:
    """A run's stored error: ``{code, message}`` as JSON."""
    return orjson.dumps({"code": code, "message": message}).decode()


async def settle_run(
    store: Store,
    run_id: str,
    fence: int,
    actor: dict[str, Any],
    status: str,
    *,
    head_hash: str,
    events: int,
    wake_at: float | None = None,
    result: bytes | None = None,
    error: str | None = None,
    new_attempt: bool = False,
    wake_when: Sequence[tuple[str, tuple[Any, ...]]] | None = None,
) -> tuple[str, bool, bool]:
    """Write the new status of a run its worker still holds (``fence``): a worker that lost
    the lease changes nothing. Ends it (``succeeded``, ``failed``, ``cancelled``), parks it
    (``waiting``, or ``queued`` until ``wake_at``) or queues a retry (``new_attempt``: the
    journal's ``events`` so far belong to the failed attempt), sealing it in the ledger.

    A run cancelled while running that would park or retry ends ``cancelled`` instead; if a
    ``wake_when`` condition already holds as it parks, it is queued at once.

    Returns (the status written, whether the run changed — False if the lease was lost,
    whether a run became runnable at once: this one, or a parent waiting on it).
    """
    if (
        store.dialect == "postgresql"
        and status in ("succeeded", "failed")
        and not new_attempt
        and not wake_when
    ):
        # The common end: one statement, one round trip.
        ended, woke = await settle_final(
            store,
            run_id,
            fence,
            actor,
            status,
            head_hash=head_hash,
            events=events,
            result=result,
            error=error,
        )
        return status, ended, woke
    now = time.time()
    result_hash = blob_hash(result) if result is not None else None
    woke = False
    async with store.transaction() as tx:
        if result is not None:
            await tx.execute(BLOB_INSERT, (result_hash, len(result), result, now))
        row = await tx.fetchone(
            "UPDATE runs SET status = ?, wake_at = ?, result_hash = COALESCE(?, result_hash),"
            " error = ?, head_hash = ?, lease_owner = NULL, lease_expires_at = NULL,"
            " updated_at = ?,"
            " attempt_start_n = CASE WHEN ? = 1 THEN ? ELSE attempt_start_n END"
            " WHERE id = ? AND fence = ? RETURNING cancel_requested",
            (
                status,
                wake_at,
                result_hash,
                error,
                head_hash,
                now,
                int(new_attempt),
                events,
                run_id,
                fence,
            ),
        )
        if row is None:
            return status, False, False
        if row[0] and status in ("queued", "waiting"):
            status, error = "cancelled", end_error("run_cancelled", "cancelled by request")
            await tx.execute(
                "UPDATE runs SET status = 'cancelled', wake_at = NULL, error = ? WHERE id = ?",
                (error, run_id),
            )
            wake_when = None
        if status == "cancelled":
            # An approval requested after the cancel was asked for (as the run parked).
            approvals = await tx.fetchall(
                "UPDATE approvals SET status = 'cancelled' WHERE run_id = ?"
                " AND status = 'pending' RETURNING id",
                (run_id,),
            )
            for (approval_id,) in approvals:
                await append_entry(tx, "approval.cancelled", approval_id, actor, {"run_id": run_id})
        for condition, params in wake_when or ():
            # Something we park on may have happened while we were deciding to park.
            if await tx.fetchone(f"SELECT 1 WHERE {condition}", params):
                woke = True
                await tx.execute(
                    "UPDATE runs SET status = 'queued', wake_at = NULL"
                    " WHERE id = ? AND status = 'waiting'",
                    (run_id,),
                )
                break
        await record_end(tx, run_id, actor, status, head_hash, result_hash, error, events=events)
        if status in FINAL:
            # Wake a parent waiting on this run.
            parent = await tx.fetchone(
                WAKE_RUN.format(run="(SELECT parent_id FROM runs WHERE id = ?)")
                + " RETURNING status",
                (now, run_id),
            )
            woke = parent is not None and parent[0] == "queued"
    if status == "queued" and wake_at is None:
        woke = True  # parked to let others run: runnable again at once
    return status, True, woke
