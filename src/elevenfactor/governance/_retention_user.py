"""The run evidence of one user, for ``forget_user``: what to erase (hashes kept).

- the runs the user owns that have ended: their input, step outputs and result, and their
  approvals' requests and decisions; their encrypted placeholder maps (``guard_vault``) are
  deleted outright (they hold the user's original values);
- the call records of the user's calls (``model_calls.user_id``) and of those runs: their
  request and response payloads.

A run still queued, running or waiting keeps its content (it needs its journal to resume);
it is counted so the admin can cancel it and forget again.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from elevenfactor.governance._retention_erase import Erasure, erased_markers
from elevenfactor.store import Executor

__all__ = ["UserEvidence", "user_evidence"]

_FINAL = "('succeeded', 'failed', 'cancelled')"


@dataclass
class UserEvidence:
    """What ``user_evidence`` found (references already erased are left out)."""

    items: list[Erasure] = field(default_factory=list)
    runs: int = 0
    run_payloads: int = 0
    approval_payloads: int = 0
    call_records: int = 0
    call_payloads: int = 0
    active_runs: int = 0


async def user_evidence(tx: Executor, org_id: str, user_id: str) -> UserEvidence:
    """The run evidence of ``user_id`` in ``org_id`` still to erase (see the module
    docstring); also deletes the user's runs' placeholder maps."""
    out = UserEvidence()
    runs = await tx.fetchall(
        "SELECT id, status, input_hash, result_hash FROM runs WHERE org_id = ? AND user_id = ?",
        (org_id, user_id),
    )
    ended = [r for r in runs if r[1] in ("succeeded", "failed", "cancelled")]
    out.active_runs = len(runs) - len(ended)
    ids = [str(r[0]) for r in ended]
    run_items: list[Erasure] = []
    for rid, _status, input_hash, result_hash in ended:
        run_items.append(Erasure(rid, "input", input_hash))
        if result_hash:
            run_items.append(Erasure(rid, "result", result_hash))
    approval_items: list[Erasure] = []
    for i in range(0, len(ids), 400):
        chunk = ids[i : i + 400]
        marks = ", ".join("?" for _ in chunk)
        for rid, n, digest in await tx.fetchall(
            f"SELECT run_id, n, output_hash FROM journal WHERE run_id IN ({marks})"
            " AND output_hash IS NOT NULL",
            chunk,
        ):
            run_items.append(Erasure(rid, f"event:{n}", digest))
        for aid, request_hash, decision_hash in await tx.fetchall(
            f"SELECT id, request_hash, decision_hash FROM approvals WHERE run_id IN ({marks})",
            chunk,
        ):
            approval_items.append(Erasure(aid, "request", request_hash))
            if decision_hash:
                approval_items.append(Erasure(aid, "decision", decision_hash))
        await tx.execute(
            f"DELETE FROM guard_vault WHERE org_id = ? AND run_id IN ({marks})", (org_id, *chunk)
        )
    active = {str(r[0]) for r in runs} - set(ids)
    calls = {
        r[0]: r
        for r in await tx.fetchall(
            "SELECT id, request_hash, response_hash, run_id FROM model_calls"
            " WHERE org_id = ? AND user_id = ?",
            (org_id, user_id),
        )
    }
    all_ids = [str(r[0]) for r in runs]
    for i in range(0, len(all_ids), 400):
        chunk = all_ids[i : i + 400]
        marks = ", ".join("?" for _ in chunk)
        for r in await tx.fetchall(
            "SELECT id, request_hash, response_hash, run_id FROM model_calls"
            f" WHERE run_id IN ({marks})",
            chunk,
        ):
            calls[r[0]] = r
    call_items: list[Erasure] = []
    for cid, request_hash, response_hash, run_id in calls.values():
        if run_id is not None and run_id in active:
            continue  # a call of a run still active: kept with the run
        for loc, digest in (("request", request_hash), ("response", response_hash)):
            if digest:
                call_items.append(Erasure(cid, loc, digest))
    done = await erased_markers(
        tx, sorted({e.subject for e in (*run_items, *approval_items, *call_items)})
    )

    def left(items: list[Erasure]) -> list[Erasure]:
        return [e for e in items if (e.subject, e.location) not in done]

    run_items, approval_items, call_items = left(run_items), left(approval_items), left(call_items)
    out.items = [*run_items, *approval_items, *call_items]
    out.runs = len({e.subject for e in run_items})
    out.run_payloads = len(run_items)
    out.approval_payloads = len(approval_items)
    out.call_records = len({e.subject for e in call_items})
    out.call_payloads = len(call_items)
    return out
