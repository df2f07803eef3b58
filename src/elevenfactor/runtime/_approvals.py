"""Human approval gates: a step whose result is a reviewer's decision.

``await approval(ctx, name, request)`` creates a pending approval and parks the run (it holds no
worker and survives restarts). A reviewer approves, rejects (with a reason the model sees),
edits the arguments, or answers in place of the tool; the decision, who made it, when and why
are journaled as the step's result. A gate may time out with a policy: ``reject``, ``approve``,
or ``escalate:<group>`` (hand it to another reviewer group, with the same timeout once more).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from pydantic import BaseModel

from elevenfactor.errors import ApprovalConflict, ApprovalNotFound, RequestError
from elevenfactor.runtime._codec import encode
from elevenfactor.runtime._context import Park, RunContext
from elevenfactor.store import BLOB_INSERT, Store, blob_hash, get_blob

__all__ = [
    "ApprovalInfo",
    "Decision",
    "approval",
    "decide_approval",
    "get_approval",
    "list_approvals",
]

Action = Literal["approve", "reject", "edit", "answer"]
_STATUS = {"approve": "approved", "reject": "rejected", "edit": "edited", "answer": "answered"}


class Decision(BaseModel):
    """A reviewer's decision, as journaled."""

    action: Action
    reason: str | None = None
    arguments: dict[str, Any] | None = None
    answer: Any = None
    decided_by: str
    decided_at: float
    timed_out: bool = False

    @property
    def approved(self) -> bool:
        """Approve or edit: the gated action goes ahead."""
        return self.action in ("approve", "edit")


@dataclass(frozen=True, slots=True)
class ApprovalInfo:
    """An approval as stored."""

    id: str
    run_id: str
    step_id: str
    name: str
    status: str
    request: Any
    reviewer_group: str | None
    created_at: float
    timeout_at: float | None
    on_timeout: str
    decision: Decision | None


def _check_policy(on_timeout: str) -> None:
    if on_timeout in ("reject", "approve") or (
        on_timeout.startswith("escalate:") and len(on_timeout) > len("escalate:")
    ):
        return
    raise RequestError(
        f"unknown timeout policy {on_timeout!r}",
        param="on_timeout",
        hint="use 'reject', 'approve' or 'escalate:<group>'",
    )


async def approval(
    ctx: RunContext,
    name: str,
    request: dict[str, Any],
    *,
    group: str | None = None,
    expires_after: float | None = None,
    on_timeout: str = "reject",
) -> Decision:
    """Wait (durably) for a reviewer's decision on ``request``.

    ``expires_after`` seconds without a decision apply ``on_timeout``.
    """
    _check_policy(on_timeout)
    step_id, ev = ctx.reserve("approval", name)
    if ev is not None:
        return ctx.replayed(ev, Decision)  # type: ignore[no-any-return]
    ctx.check_live()
    store = ctx.store
    row = await store.fetchone(
        "SELECT id, status, decision, timeout_at, on_timeout FROM approvals"
        " WHERE run_id = ? AND step_id = ?",
        (ctx.run_id, step_id),
    )
    now = time.time()
    if row is None:
        approval_id = uuid.uuid4().hex
        data = encode(request)
        timeout_at = now + expires_after if expires_after is not None else None
        async with store.transaction() as tx:
            await tx.execute(BLOB_INSERT, (blob_hash(data), len(data), data, now))
            await tx.execute(
                "INSERT INTO approvals (id, run_id, step_id, name, status, request_hash,"
                " reviewer_group, created_at, timeout_at, on_timeout)"
                " VALUES (?, ?, ?, ?, 'pending', ?, ?, ?, ?, ?)",
                (
                    approval_id,
                    ctx.run_id,
                    step_id,
                    name,
                    blob_hash(data),
                    group,
                    now,
                    timeout_at,
                    on_timeout,
                ),
            )
        await _notify(ctx, approval_id, name, request, group)
        raise _park(approval_id, timeout_at, name)
    approval_id, status, decision_json, timeout_at, policy = row
    if status == "pending":
        if timeout_at is None or now < timeout_at:
            raise _park(approval_id, timeout_at, name)
        if policy.startswith("escalate:"):
            new_group = policy.split(":", 1)[1]
            new_timeout = now + expires_after if expires_after is not None else None
            await store.execute(
                "UPDATE approvals SET reviewer_group = ?, timeout_at = ?, on_timeout = 'reject'"
                " WHERE id = ? AND status = 'pending'",
                (new_group, new_timeout, approval_id),
            )
            await _notify(ctx, approval_id, name, request, new_group)
            raise _park(approval_id, new_timeout, name)
        decision = Decision(
            action="approve" if policy == "approve" else "reject",
            reason=f"no decision within {expires_after:g}s" if expires_after else "timed out",
            decided_by="system:timeout",
            decided_at=now,
            timed_out=True,
        )
        changed = await store.execute(
            "UPDATE approvals SET status = 'expired', decision = ?, decided_by = ?,"
            " decided_at = ? WHERE id = ? AND status = 'pending'",
            (decision.model_dump_json(), decision.decided_by, now, approval_id),
        )
        if changed != 1:  # a reviewer decided at the last moment: take theirs
            row2 = await store.fetchone(
                "SELECT decision FROM approvals WHERE id = ?", (approval_id,)
            )
            assert row2 is not None
            decision = Decision.model_validate_json(row2[0])
    elif status == "cancelled":
        raise Park(wake_at=None, waiting=True, reason="approval cancelled")
    else:
        decision = Decision.model_validate_json(decision_json)
    await ctx.record(step_id, "approval", name, "done", encode(decision))
    return decision


def _park(approval_id: str, timeout_at: float | None, name: str) -> Park:
    return Park(
        wake_at=timeout_at,
        waiting=True,
        reason=f"awaiting approval {name!r}",
        wake_when=[
            (
                "EXISTS (SELECT 1 FROM approvals WHERE id = ? AND status != 'pending')",
                (approval_id,),
            )
        ],
    )


async def _notify(
    ctx: RunContext, approval_id: str, name: str, request: Any, group: str | None
) -> None:
    hook = ctx.hooks.get("approval_pending")
    if hook is not None:
        await hook(
            {
                "event": "approval.pending",
                "approval_id": approval_id,
                "run_id": ctx.run_id,
                "name": name,
                "group": group,
                "request": request,
            }
        )


async def decide_approval(
    store: Store,
    approval_id: str,
    action: str,
    *,
    by: str,
    reason: str | None = None,
    arguments: dict[str, Any] | None = None,
    answer: Any = None,
) -> ApprovalInfo:
    """Record a reviewer's decision and wake the run."""
    if action not in _STATUS:
        raise RequestError(
            f"unknown action {action!r}",
            param="action",
            hint="one of approve, reject, edit, answer",
        )
    if action == "edit" and not isinstance(arguments, dict):
        raise RequestError("an edit needs 'arguments' (an object)", param="arguments")
    if action == "answer" and answer is None:
        raise RequestError("an answer needs 'answer'", param="answer")
    if not by.strip():
        raise RequestError("a decision needs a reviewer name", param="by")
    now = time.time()
    decision = Decision(
        action=action,
        reason=reason,
        arguments=arguments,
        answer=answer,
        decided_by=by,
        decided_at=now,
    )
    async with store.transaction() as tx:
        changed = await tx.execute(
            "UPDATE approvals SET status = ?, decision = ?, decided_by = ?, decided_at = ?"
            " WHERE id = ? AND status = 'pending'",
            (_STATUS[action], decision.model_dump_json(), by, now, approval_id),
        )
        if changed == 1:
            await tx.execute(
                "UPDATE runs SET status = 'queued', wake_at = NULL, updated_at = ?"
                " WHERE status = 'waiting' AND id = (SELECT run_id FROM approvals WHERE id = ?)",
                (now, approval_id),
            )
    if changed != 1:
        current = await get_approval(store, approval_id)
        raise ApprovalConflict(f"approval {approval_id} is already {current.status}")
    return await get_approval(store, approval_id)


_COLS = (
    "id, run_id, step_id, name, status, request_hash, reviewer_group, created_at,"
    " timeout_at, on_timeout, decision"
)


async def _info(store: Store, row: tuple[Any, ...]) -> ApprovalInfo:
    data = await get_blob(store, row[5])
    return ApprovalInfo(
        id=row[0],
        run_id=row[1],
        step_id=row[2],
        name=row[3],
        status=row[4],
        request=orjson.loads(data) if data else None,
        reviewer_group=row[6],
        created_at=row[7],
        timeout_at=row[8],
        on_timeout=row[9],
        decision=Decision.model_validate_json(row[10]) if row[10] else None,
    )


async def get_approval(store: Store, approval_id: str) -> ApprovalInfo:
    """One approval, or ``ApprovalNotFound``."""
    row = await store.fetchone(f"SELECT {_COLS} FROM approvals WHERE id = ?", (approval_id,))
    if row is None:
        raise ApprovalNotFound(
            f"no approval with id {approval_id!r}", hint="`elevenfactor approvals list`"
        )
    return await _info(store, row)


async def list_approvals(
    store: Store,
    *,
    status: str | None = "pending",
    run_id: str | None = None,
    group: str | None = None,
    limit: int = 100,
) -> list[ApprovalInfo]:
    """Approvals, oldest first (the queue a reviewer works through)."""
    where, params = [], []
    for col, value in (("status", status), ("run_id", run_id), ("reviewer_group", group)):
        if value is not None:
            where.append(f"{col} = ?")
            params.append(value)
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    rows = await store.fetchall(
        f"SELECT {_COLS} FROM approvals{clause} ORDER BY created_at LIMIT ?", (*params, limit)
    )
    return [await _info(store, r) for r in rows]
