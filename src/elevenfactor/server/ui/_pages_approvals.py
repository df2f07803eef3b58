"""The approvals queue (``/ui/approvals``) and one approval (``/ui/approvals/{id}``).

Who sees and decides what is the runtime's rule, as in ``/v1/approvals``: a member sees its own
runs' approvals (read-only), a reviewer its groups' (and those for no group), an admin its
organisation's; reviewers in the group and admins decide (``decide_approval`` checks again).
Approving with edited arguments records an ``edit`` whose arguments the run then executes;
they are checked against the tool's schema first (``_approval_args``; arguments approved as
proposed are not re-checked: the tool reports what it cannot take), and an invalid edit
shows the page again (400) with the error next to its field, deciding nothing.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from typing import Annotated, Any
from urllib.parse import urlencode

from pydantic import BaseModel, ConfigDict, Field
from pydantic import StringConstraints as SC
from starlette.responses import Response

from elevenfactor.errors import ApprovalConflict, ElevenFactorError, PermissionDenied, RequestError
from elevenfactor.governance import check_id, check_text
from elevenfactor.runtime import ApprovalInfo, decide_approval, get_approval, get_run
from elevenfactor.server._schemas import Name, parse_query
from elevenfactor.server.ui import _approval_form as argform
from elevenfactor.server.ui._approval_args import check as check_arguments
from elevenfactor.server.ui._approval_args import parse as parse_arguments
from elevenfactor.server.ui._approvals_query import (
    ApprovalRow,
    Cursor,
    decided_approvals,
    known_groups,
    pending_approvals,
    requester,
    tool_schema,
)
from elevenfactor.server.ui._page import Page, ui_page

__all__ = ["ROUTES", "ApprovalsQuery"]

_CURSOR = r"^[0-9]{1,12}(\.[0-9]{1,12})?(e[-+]?[0-9]{1,3})?:[A-Za-z0-9][A-Za-z0-9._:-]{0,199}$"
_ANSWER_MAX = 20_000
_SHOWN = ("tool", "arguments", "parameters", "schema")


class ApprovalsQuery(BaseModel):
    """``GET /ui/approvals`` query string (empty parameters count as absent)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    group: Name | None = Field(default=None, description="Only approvals for this group.")
    decided: bool = Field(default=False, description="Also show recent decisions.")
    after: Annotated[str, SC(pattern=_CURSOR)] | None = Field(
        default=None, description="Pending approvals after this `<created_at>:<id>`."
    )
    before: Annotated[str, SC(pattern=_CURSOR)] | None = Field(
        default=None, description="Decisions before this `<decided_at>:<id>`."
    )


def _cursor(text: str | None) -> Cursor | None:
    if text is None:
        return None
    at, _, ident = text.partition(":")
    return float(at), ident


def _link(q: ApprovalsQuery, **changes: Any) -> str:
    params = {"group": q.group, "decided": "1" if q.decided else None, **changes}
    shown = {k: v for k, v in params.items() if v is not None}
    return "/ui/approvals" + (f"?{urlencode(shown)}" if shown else "")


def _grouped(rows: list[ApprovalRow]) -> list[tuple[str | None, list[ApprovalRow]]]:
    groups: dict[str | None, list[ApprovalRow]] = defaultdict(list)
    for row in rows:
        groups[row.group].append(row)
    return sorted(groups.items(), key=lambda kv: (kv[0] is None, kv[0] or ""))


@ui_page("approvals")
async def approvals_page(page: Page) -> Response:
    """``GET /ui/approvals``: pending approvals by reviewer group, oldest first; with
    ``decided=1`` the latest decisions too."""
    items = [(k, v) for k, v in page.request.query_params.multi_items() if v != ""]
    q = parse_query(ApprovalsQuery, items)
    me = page.user.principal
    pending, more = await pending_approvals(page.store, me, group=q.group, after=_cursor(q.after))
    decided: list[ApprovalRow] = []
    older = None
    if q.decided:
        decided, older = await decided_approvals(
            page.store, me, group=q.group, before=_cursor(q.before)
        )
    groups = await known_groups(page.store, me)
    seen = {r.group for r in pending if r.group is not None}
    shown_groups = sorted({*groups, *seen, *([q.group] if q.group else [])})
    return page.render(
        "approvals.html",
        q=q,
        now=time.time(),
        tables=_grouped(pending),
        decided=decided,
        groups=shown_groups,
        later_link=_link(q, after=f"{more[0]!r}:{more[1]}") if more else None,
        first_link=_link(q) if q.after else None,
        older_link=_link(q, before=f"{older[0]!r}:{older[1]}") if older else None,
        reviewer=me.is_admin or "reviewer" in me.roles,
    )


def _approval_id(page: Page) -> str:
    return check_id(page.request.path_params["approval_id"], "approval_id")


def _proposed(info: ApprovalInfo) -> dict[str, Any] | None:
    request = info.request
    if isinstance(request, dict) and isinstance(request.get("arguments"), dict):
        return dict(request["arguments"])
    return None


def _is_tool_call(info: ApprovalInfo) -> bool:
    """A gate in front of a tool call: it can be answered instead of the tool."""
    request = info.request
    return (
        isinstance(request, dict)
        and isinstance(request.get("tool"), str)
        and (_proposed(info) is not None)
    )


async def _view(
    page: Page,
    info: ApprovalInfo,
    *,
    values: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    status: int = 200,
) -> Response:
    me = page.user.principal
    proposed = _proposed(info)
    found = await tool_schema(page.gw, page.store, info) if proposed is not None else None
    form = argform.layout(found.schema, proposed) if found and proposed is not None else None
    filled = argform.initial_values(form, proposed) if form and proposed is not None else {}
    request = info.request if isinstance(info.request, dict) else {}
    why = {k: v for k, v in request.items() if k not in _SHOWN}
    return page.render(
        "approval.html",
        status=status,
        a=info,
        now=time.time(),
        requested_by=await requester(page.store, info),
        may_decide=info.status == "pending" and me.may_decide(info.org_id, info.reviewer_group),
        tool=request.get("tool") if isinstance(request.get("tool"), str) else None,
        proposed=proposed,
        proposed_json=json.dumps(proposed, indent=2, ensure_ascii=False) if proposed else "",
        request_json=json.dumps(info.request, indent=2, ensure_ascii=False, default=str),
        why=[
            (k, v if isinstance(v, str) else json.dumps(v, ensure_ascii=False))
            for k, v in why.items()
        ],
        form=form,
        schema_source=found.source if found else "none",
        values={**filled, **(values or {})},
        errors=errors or {},
        answerable=_is_tool_call(info),
        json_field=argform.JSON_FIELD,
        decision=info.decision,
        decision_json=(
            json.dumps(info.decision.arguments, indent=2, ensure_ascii=False)
            if info.decision is not None and info.decision.arguments is not None
            else None
        ),
        answer_json=(
            info.decision.answer
            if info.decision is not None and isinstance(info.decision.answer, str)
            else json.dumps(info.decision.answer, ensure_ascii=False)
            if info.decision is not None and info.decision.answer is not None
            else None
        ),
    )


@ui_page("approvals")
async def approval_page(page: Page) -> Response:
    """``GET /ui/approvals/{id}``: the proposed call and, for those who may decide, the forms
    to approve (with the arguments as edited), reject or answer instead of the tool."""
    info = await get_approval(page.store, _approval_id(page), page.user.principal)
    return await _view(page, info)


def _same_json(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


@ui_page("approvals")
async def decide(page: Page) -> Response:
    """``POST /ui/approvals/{id}``: ``action`` = approve (with the edited ``arg.*`` fields and
    ``arguments_json``), reject (with ``reason``) or answer (with ``answer``); then on to the
    run's page, where the run resumes."""
    me = page.user.principal
    info = await get_approval(page.store, _approval_id(page), me)
    fields = await page.form()
    if not me.may_decide(info.org_id, info.reviewer_group):
        group = info.reviewer_group
        raise PermissionDenied(
            f"{me.label} may not decide this approval: it needs "
            + (f"a reviewer in group {group!r}" if group else "a reviewer")
            + " or an admin of its organisation"
        )
    if info.status != "pending":
        raise ApprovalConflict(
            f"approval {info.id} is already {info.status}", hint="open the run to see the decision"
        )
    action = fields.get("action", "")
    errors: dict[str, str] = {}
    kwargs: dict[str, Any] = {}
    decided_as = action
    if action == "approve":
        proposed = _proposed(info)
        if proposed is not None:
            found = await tool_schema(page.gw, page.store, info)
            form = argform.layout(found.schema, proposed)
            args, errors = parse_arguments(form, proposed, fields)
            if not errors and not _same_json(args, proposed):  # as proposed: not re-checked
                errors = check_arguments(form, args)
                decided_as, kwargs = "edit", {"arguments": args}
    elif action == "reject":
        reason = fields.get("reason", "").strip()
        try:
            kwargs["reason"] = check_text(reason, "reason") if reason else None
        except RequestError as exc:
            errors["reason"] = exc.message
    elif action == "answer":
        answer = fields.get("answer", "").replace("\r\n", "\n")
        if not answer.strip():
            errors["answer"] = "write the answer the run gets instead of the tool's result"
        elif len(answer) > _ANSWER_MAX:
            errors["answer"] = f"at most {_ANSWER_MAX} characters"
        elif not _is_tool_call(info):
            errors["answer"] = "only a tool call can be answered instead of the tool"
        kwargs["answer"] = answer
    else:
        raise RequestError(
            f"unknown action {action!r}",
            code="ui_bad_action",
            hint="use the Approve, Reject or Answer buttons of the approval page",
        )
    if errors:
        return await _view(page, info, values=fields, errors=errors, status=400)
    await decide_approval(page.store, info.id, decided_as, by=me, **kwargs)
    if page.gw.worker is not None:  # as POST /v1/approvals/{id}: the worker resumes it now
        page.gw.worker.notify()
    try:  # on to the run, where it resumes — if the decider may see the run
        await get_run(page.store, info.run_id, me)
    except ElevenFactorError:  # a reviewer of another member's run: the decided approval
        return page.redirect(f"/ui/approvals/{info.id}")
    return page.redirect(f"/ui/runs/{info.run_id}")


ROUTES: list[tuple[str, Any, list[str]]] = [
    ("/ui/approvals", approvals_page, ["GET"]),
    ("/ui/approvals/{approval_id}", approval_page, ["GET"]),
    ("/ui/approvals/{approval_id}", decide, ["POST"]),
]
