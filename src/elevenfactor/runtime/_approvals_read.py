"""Reading approvals: what one is (``ApprovalInfo``, with the reviewer's ``Decision``), who may
see it (``approvals_visible_to``), and the queries that find them (``get_approval``,
``list_approvals``). The gate that creates them and the decisions that settle them are in
``runtime._approvals``, which re-exports these names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import orjson
from pydantic import BaseModel

from elevenfactor.errors import ApprovalNotFound
from elevenfactor.governance import SYSTEM, Principal
from elevenfactor.store import Store, get_blob, get_blobs

__all__ = [
    "ApprovalInfo",
    "Decision",
    "approvals_visible_to",
    "get_approval",
    "list_approvals",
]

Action = Literal["approve", "reject", "edit", "answer"]


class Decision(BaseModel):
    """A reviewer's decision, as journaled."""

    action: Action
    reason: str | None = None
    arguments: dict[str, Any] | None = None
    answer: Any = None
    decided_by: str
    decided_at: float
    timed_out: bool = False
    decider: dict[str, Any] | None = None
    """The authenticated decider: organisation, user id and name, key, and how it signed in."""

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
    org_id: str | None = None
    user_id: str | None = None


_COLS = (
    "id, run_id, step_id, name, status, request_hash, reviewer_group, created_at,"
    " timeout_at, on_timeout, decision, org_id, user_id"
)


async def _info(store: Store, row: tuple[Any, ...]) -> ApprovalInfo:
    return _built(row, await get_blob(store, row[5]))


def _built(row: tuple[Any, ...], data: bytes | None) -> ApprovalInfo:
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
        org_id=row[11],
        user_id=row[12],
    )


def approvals_visible_to(principal: Principal) -> tuple[str, list[Any]]:
    """The SQL condition (and its parameters) selecting the approvals ``principal`` may see:
    those of its own runs (``Principal.scope``: its own and, where its team shares, its team's;
    an admin's organisation's; all for the system), and for a reviewer also those of its
    organisation addressed to one of its groups or to no group. Columns are unqualified: apply
    it where ``approvals`` is the only table (or in a sub-query of it). Every reader of
    approvals applies it — ``get_approval``, ``list_approvals`` (and the HTTP API, the MCP
    server and the CLI through them), the dashboard's queue — so all show the same approvals."""
    scope, params = principal.scope()
    if principal.unscoped or principal.is_admin or "reviewer" not in principal.roles:
        return f"({scope})", params
    groups = sorted(principal.groups)
    marks = ", ".join("?" for _ in groups)
    in_groups = f" OR reviewer_group IN ({marks})" if groups else ""
    return (
        f"(({scope}) OR (org_id = ? AND (reviewer_group IS NULL{in_groups})))",
        [*params, principal.org_id, *groups],
    )


async def get_approval(
    store: Store, approval_id: str, principal: Principal = SYSTEM
) -> ApprovalInfo:
    """One approval ``principal`` may see, or ``ApprovalNotFound``."""
    cond, params = approvals_visible_to(principal)
    row = await store.fetchone(
        f"SELECT {_COLS} FROM approvals WHERE id = ? AND {cond}", (approval_id, *params)
    )
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
    principal: Principal = SYSTEM,
) -> list[ApprovalInfo]:
    """Approvals ``principal`` may see, oldest first (the queue a reviewer works through)."""
    cond, cond_params = approvals_visible_to(principal)
    where, params = [cond], list(cond_params)
    for col, value in (("status", status), ("run_id", run_id), ("reviewer_group", group)):
        if value is not None:
            where.append(f"{col} = ?")
            params.append(value)
    clause = f" WHERE {' AND '.join(where)}"
    rows = await store.fetchall(
        f"SELECT {_COLS} FROM approvals{clause} ORDER BY created_at LIMIT ?", (*params, limit)
    )
    requests = await get_blobs(store, (r[5] for r in rows))  # one query, not one per row
    return [_built(r, requests.get(r[5])) for r in rows]
