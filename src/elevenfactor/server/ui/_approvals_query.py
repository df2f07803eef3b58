"""What the approvals pages read: the queue and its history in one query each (with who asked,
the run's program and the proposed call), and the JSON schema of a proposed tool call.

Visibility is the runtime's own (``runtime._approvals_read.approvals_visible_to``: a member's
runs' approvals, a reviewer's groups', an admin's organisation's), applied in the inner query's
``WHERE``, so these pages show exactly what ``GET /v1/approvals`` answers.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import orjson

from elevenfactor.governance import Principal
from elevenfactor.runtime import ApprovalInfo
from elevenfactor.runtime._approvals_read import approvals_visible_to
from elevenfactor.server._state import Gateway
from elevenfactor.store import Store
from elevenfactor.tools import ToolContext

__all__ = [
    "ApprovalRow",
    "Cursor",
    "ToolSchema",
    "decided_approvals",
    "known_groups",
    "pending_approvals",
    "requester",
    "tool_schema",
]

logger = logging.getLogger("elevenfactor.ui")

Cursor = tuple[float, str]
"""A keyset position: ``(time, id)``."""

_SUMMARY = 160
_LIST_TIMEOUT = 3.0
_INNER = (
    "id, run_id, name, status, reviewer_group, created_at, timeout_at, on_timeout, decided_by,"
    " decided_at, decision, user_id, request_hash"
)
_OUTER = (
    "a.id, a.run_id, a.name, a.status, a.reviewer_group, a.created_at, a.timeout_at,"
    " a.on_timeout, a.decided_by, a.decided_at, a.decision, u.name, r.program, b.content"
)


@dataclass(frozen=True, slots=True)
class ApprovalRow:
    """One approval as the queue shows it."""

    id: str
    run_id: str
    name: str
    status: str
    group: str | None
    created_at: float
    timeout_at: float | None
    on_timeout: str
    decided_by: str | None
    decided_at: float | None
    reason: str | None
    requested_by: str | None
    program: str | None
    tool: str | None
    summary: str
    """The proposed call in one line (``tool {"arg": ...}``), cut to a readable length."""


def _summary(name: str, request: Any) -> tuple[str | None, str]:
    if not isinstance(request, dict):
        return None, name
    tool = request.get("tool") if isinstance(request.get("tool"), str) else None
    args = request.get("arguments")
    text = orjson.dumps(args).decode() if args is not None else ""
    if len(text) > _SUMMARY:
        text = text[: _SUMMARY - 1] + "…"
    return tool, text


def _row(r: tuple[Any, ...]) -> ApprovalRow:
    try:
        request = orjson.loads(bytes(r[13])) if r[13] is not None else None
    except orjson.JSONDecodeError:
        request = None
    try:
        decision = orjson.loads(r[10]) if r[10] else None
    except orjson.JSONDecodeError:
        decision = None
    reason = decision.get("reason") if isinstance(decision, dict) else None
    tool, summary = _summary(r[2], request)
    return ApprovalRow(
        id=r[0],
        run_id=r[1],
        name=r[2],
        status=r[3],
        group=r[4],
        created_at=float(r[5]),
        timeout_at=float(r[6]) if r[6] is not None else None,
        on_timeout=r[7],
        decided_by=r[8],
        decided_at=float(r[9]) if r[9] is not None else None,
        reason=reason if isinstance(reason, str) else None,
        requested_by=r[11],
        program=r[12],
        tool=tool,
        summary=summary,
    )


_OLDEST = ("created_at, id", "a.created_at, a.id")
_NEWEST_DECISION = ("decided_at DESC, id DESC", "a.decided_at DESC, a.id DESC")


async def _page(
    store: Store, where: str, params: list[Any], order: tuple[str, str], limit: int
) -> list[ApprovalRow]:
    """One page of approvals: the inner query picks them (visibility, filters, keyset), the
    outer one adds who asked, the run's program and the request, one row each."""
    rows = await store.fetchall(
        f"SELECT {_OUTER} FROM (SELECT {_INNER} FROM approvals WHERE {where}"
        f" ORDER BY {order[0]} LIMIT ?) a"
        " LEFT JOIN users u ON u.id = a.user_id"
        " LEFT JOIN runs r ON r.id = a.run_id"
        " LEFT JOIN blobs b ON b.hash = a.request_hash"
        f" ORDER BY {order[1]}",
        (*params, limit),
    )
    return [_row(r) for r in rows]


def _where(principal: Principal, group: str | None) -> tuple[list[str], list[Any]]:
    cond, params = approvals_visible_to(principal)
    where, args = [cond], list(params)
    if not principal.unscoped:
        # Implied by every branch of ``approvals_visible_to`` (all within the organisation), but
        # spelt out so the planners can walk the organisation's index instead of OR-ing branches.
        where.append("org_id = ?")
        args.append(principal.org_id)
    if group is not None:
        where.append("reviewer_group = ?")
        args.append(group)
    return where, args


async def pending_approvals(
    store: Store,
    principal: Principal,
    *,
    group: str | None = None,
    after: Cursor | None = None,
    limit: int = 100,
) -> tuple[list[ApprovalRow], Cursor | None]:
    """Pending approvals ``principal`` may see, oldest first, from after ``after``; and the
    cursor of the next page (None on the last)."""
    where, args = _where(principal, group)
    where.append("status = 'pending'")
    if after is not None:
        where.append("(created_at > ? OR (created_at = ? AND id > ?))")
        args += [after[0], after[0], after[1]]
    rows = await _page(store, " AND ".join(where), args, _OLDEST, limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, ((rows[-1].created_at, rows[-1].id) if more else None)


async def decided_approvals(
    store: Store,
    principal: Principal,
    *,
    group: str | None = None,
    before: Cursor | None = None,
    limit: int = 50,
) -> tuple[list[ApprovalRow], Cursor | None]:
    """Decided (or expired) approvals ``principal`` may see, newest decision first, from
    before ``before``; and the cursor of the next page."""
    where, args = _where(principal, group)
    where.append("decided_at IS NOT NULL AND status <> 'pending'")
    if before is not None:
        where.append("(decided_at < ? OR (decided_at = ? AND id < ?))")
        args += [before[0], before[0], before[1]]
    rows = await _page(store, " AND ".join(where), args, _NEWEST_DECISION, limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    last = rows[-1] if rows else None
    cursor = (last.decided_at or 0.0, last.id) if more and last is not None else None
    return rows, cursor


async def known_groups(store: Store, principal: Principal) -> list[str]:
    """The reviewer groups to offer in the filter: the principal's, and for an admin every
    group of its organisation."""
    groups = set(principal.groups)
    if principal.is_admin:
        rows = await store.fetchall(
            "SELECT DISTINCT group_name FROM group_members WHERE org_id = ?", (principal.org_id,)
        )
        groups |= {str(r[0]) for r in rows}
    return sorted(groups)


async def requester(store: Store, info: ApprovalInfo) -> str | None:
    """The name of the user whose run asked for the approval."""
    if info.user_id is None:
        return None
    row = await store.fetchone("SELECT name FROM users WHERE id = ?", (info.user_id,))
    return str(row[0]) if row else None


@dataclass(frozen=True, slots=True)
class ToolSchema:
    """The JSON schema of a proposed call's arguments, and where it was found."""

    schema: dict[str, Any] | None
    source: str


async def _step_output(store: Store, run_id: str, name: str) -> Any:
    """The output of the run's latest ``tools`` step called ``name``, or None."""
    row = await store.fetchone(
        "SELECT j.output, b.content FROM journal j LEFT JOIN blobs b ON b.hash = j.output_hash"
        " WHERE j.run_id = ? AND j.kind = 'tools' AND j.name = ? ORDER BY j.n DESC LIMIT 1",
        (run_id, name),
    )
    data = row[0] if row is not None and row[0] is not None else row[1] if row else None
    if data is None:
        return None
    try:
        return orjson.loads(bytes(data))
    except orjson.JSONDecodeError:
        return None


async def _live_listing(gw: Gateway, toolset: str, tool: str, run_id: str) -> Any:
    """The parameters of ``toolset``'s tool ``tool`` as the toolset lists it now."""
    found = gw.runtime.toolsets.get(toolset) if gw.runtime is not None else None
    if found is None:
        return None
    try:
        tools = await asyncio.wait_for(
            found.list_tools(ToolContext(run_id=run_id, caller="dashboard")), _LIST_TIMEOUT
        )
    except Exception:  # a tool server that cannot list now: the JSON field still works
        logger.warning("listing the tools of %s for an approval failed", toolset, exc_info=True)
        return None
    return next((t.parameters for t in tools if t.name == tool), None)


async def tool_schema(gw: Gateway, store: Store, info: ApprovalInfo) -> ToolSchema:
    """Where a proposed call's argument schema is known, in order: the approval's request
    (``parameters`` or ``schema``), the tools the run's agent was offered (its journaled
    ``list`` step: exactly what the model saw), and for a gated MCP call the toolset's listing.
    Read only after ``get_approval`` has found the approval visible to the viewer."""
    request = info.request if isinstance(info.request, dict) else {}
    for key in ("parameters", "schema"):
        if isinstance(request.get(key), dict):
            return ToolSchema(request[key], "the approval request")
    tool = request.get("tool")
    if not isinstance(tool, str):
        return ToolSchema(None, "none")
    if request.get("via") == "mcp":
        plan = await _step_output(store, info.run_id, "policy")
        if isinstance(plan, dict) and isinstance(plan.get("toolset"), str):
            params = await _live_listing(gw, plan["toolset"], str(plan.get("name")), info.run_id)
            if isinstance(params, dict):
                return ToolSchema(params, f"toolset {plan['toolset']}")
        return ToolSchema(None, "none")
    listing = await _step_output(store, info.run_id, "list")
    if isinstance(listing, list):
        for entry in listing:
            if isinstance(entry, dict) and entry.get("name") == tool:
                params = entry.get("parameters")
                if isinstance(params, dict):
                    return ToolSchema(params, "the tools the agent was offered")
    return ToolSchema(None, "none")
