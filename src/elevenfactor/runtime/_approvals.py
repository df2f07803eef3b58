"""Human approval gates: a step whose result is a reviewer's decision.

``await approval(ctx, name, request)`` creates a pending approval and parks the run (it holds no
worker and survives restarts). A reviewer approves, rejects (with a reason the model sees),
edits the arguments, or answers in place of the tool; the decision, who made it, when and why
are journaled as the step's result. A gate may time out with a policy: ``reject``, ``approve``,
or ``escalate:<group>`` (hand it to another reviewer group, with the same timeout once more).

What an approval is, who may see it and the queries that read it are in
``runtime._approvals_read``; its public names are re-exported here.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from elevenfactor.errors import ApprovalConflict, PermissionDenied, RequestError
from elevenfactor.governance import SYSTEM, Principal, append_entry, check_text
from elevenfactor.observe._trace_events import approval_event
from elevenfactor.runtime._approvals_read import (
    ApprovalInfo,
    Decision,
    get_approval,
    list_approvals,
)
from elevenfactor.runtime._codec import encode
from elevenfactor.runtime._context import Park, RunContext
from elevenfactor.runtime._settle import WAKE_RUN
from elevenfactor.store import BLOB_INSERT, Executor, Store, blob_hash, wake_local

__all__ = [
    "ApprovalInfo",
    "Decision",
    "approval",
    "check_storable",
    "decide_approval",
    "get_approval",
    "list_approvals",
]

_STATUS = {"approve": "approved", "reject": "rejected", "edit": "edited", "answer": "answered"}


def check_storable(value: Any, param: str) -> None:
    """Raise ``RequestError`` (naming ``param``) unless ``value`` can be journaled: the run
    reads a decision's arguments and answer back with the journal's codec, which takes no
    integer beyond 64 bits and no lone surrogate (``"\\ud800"``)."""
    try:
        encode(value)
    except TypeError as exc:
        raise RequestError(
            f"the {param} cannot be stored: {exc}",
            param=param,
            hint="use integers within 64 bits (or strings) and whole unicode characters",
        ) from None


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
    row = None
    if ctx.lease.has_journal:  # a fresh run (first execution) has created no approval yet
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
        owner = ctx.lease.owner or SYSTEM
        async with store.transaction() as tx:
            await tx.execute(BLOB_INSERT, (blob_hash(data), len(data), data, now))
            await tx.execute(
                "INSERT INTO approvals (id, run_id, step_id, name, status, request_hash,"
                " reviewer_group, created_at, timeout_at, on_timeout,"
                " org_id, team_id, user_id, key_id)"
                " VALUES (?, ?, ?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
                    *owner.owner(),
                ),
            )
            await append_entry(
                tx,
                "approval.created",
                approval_id,
                owner.actor(),
                {
                    "run_id": ctx.run_id,
                    "step_id": step_id,
                    "name": name,
                    "request_hash": blob_hash(data),
                    "group": group,
                },
            )
        approval_event("created", approval_id, group, name=name)  # never the arguments
        await _notify(ctx, approval_id, name, request, group)
        raise _park(approval_id, timeout_at, name)
    approval_id, status, decision_json, timeout_at, policy = row
    if status == "pending":
        if timeout_at is None or now < timeout_at:
            raise _park(approval_id, timeout_at, name)
        if policy.startswith("escalate:"):
            new_group = policy.split(":", 1)[1]
            new_timeout = now + expires_after if expires_after is not None else None
            async with store.transaction() as tx:
                changed = await tx.execute(
                    "UPDATE approvals SET reviewer_group = ?, timeout_at = ?,"
                    " on_timeout = 'reject' WHERE id = ? AND status = 'pending'",
                    (new_group, new_timeout, approval_id),
                )
                if changed == 1:
                    await append_entry(
                        tx,
                        "approval.escalated",
                        approval_id,
                        SYSTEM.actor(),
                        {"run_id": ctx.run_id, "group": new_group},
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
        async with store.transaction() as tx:
            changed = await _write_decision(
                tx, approval_id, ctx.run_id, "expired", decision, SYSTEM
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
    approval_event("resolved", approval_id, None, name=name, decision=decision.action)
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


async def _write_decision(
    tx: Executor,
    approval_id: str,
    run_id: str,
    status: str,
    decision: Decision,
    by: Principal,
) -> int:
    """Store a decision if the approval is still pending; journal it in the ledger. Returns the
    number of approvals changed (0: someone decided first)."""
    text = decision.model_dump_json()
    digest = blob_hash(text.encode())
    changed = await tx.execute(
        "UPDATE approvals SET status = ?, decision = ?, decided_by = ?, decided_by_id = ?,"
        " decided_at = ?, decision_hash = ? WHERE id = ? AND status = 'pending'",
        (status, text, decision.decided_by, by.user_id, decision.decided_at, digest, approval_id),
    )
    if changed == 1:
        await append_entry(
            tx,
            "approval.decided",
            approval_id,
            by.actor(),
            {"run_id": run_id, "status": status, "decision_hash": digest},
        )
    return changed


async def decide_approval(
    store: Store,
    approval_id: str,
    action: str,
    *,
    by: Principal,
    reason: str | None = None,
    arguments: dict[str, Any] | None = None,
    answer: Any = None,
) -> ApprovalInfo:
    """Record the decision of ``by`` (the authenticated principal — an admin of the approval's
    organisation, or a reviewer in its group) and wake the run."""
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
    if reason is not None:
        check_text(reason, "reason")
    check_storable(arguments, "arguments")
    check_storable(answer, "answer")
    current = await get_approval(store, approval_id, by)
    if not by.may_decide(current.org_id, current.reviewer_group):
        group = current.reviewer_group
        raise PermissionDenied(
            f"{by.label} may not decide approval {approval_id}: it needs "
            + (f"a reviewer in group {group!r}" if group else "a reviewer")
            + " or an admin of its organisation",
            hint="an admin can add you: `elevenfactor users update NAME --role reviewer"
            + (f" --group {group}`" if group else "`"),
        )
    now = time.time()
    decision = Decision(
        action=action,
        reason=reason,
        arguments=arguments,
        answer=answer,
        decided_by=by.label,
        decided_at=now,
        decider=by.actor(),
    )
    async with store.transaction() as tx:
        changed = await _write_decision(
            tx, approval_id, current.run_id, _STATUS[action], decision, by
        )
        if changed == 1:
            # Not filtered on status = 'waiting': see WAKE_RUN (a run parking right now).
            await tx.execute(WAKE_RUN.format(run="?"), (now, current.run_id))
    if changed != 1:
        latest = await get_approval(store, approval_id, by)
        raise ApprovalConflict(f"approval {approval_id} is already {latest.status}")
    wake_local(store.url)  # a worker of this process resumes the run now (others: NOTIFY)
    approval_event("decided", approval_id, current.reviewer_group, decision=action)
    return await get_approval(store, approval_id, by)
