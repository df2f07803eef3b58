"""Span events for governance decisions: budget admission, guard verdicts, approval gates.

Each names what was decided and by which budget, policy or rule — never the content a rule
matched, nor a tool call's arguments. Callers check ``_tracing.TRACER`` first (off: no call).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from elevenfactor.observe import _tracing as tracing

__all__ = ["approval_event", "budget_event", "guard_event"]

_ALLOWED: dict[str, dict[str, Any]] = {}  # stage -> its "allow" attribute (read, never changed)
_ADMITTED: dict[str, Any] = {"elevenfactor.budget.decision": "admitted"}


def budget_event(
    decision: str,
    *,
    budgets: Sequence[str] = (),
    amount: float | None = None,
    soft: Sequence[str] = (),
    refused_by: str | None = None,
    downgraded_to: str | None = None,
) -> None:
    """``elevenfactor.budget`` on the current span: ``admitted`` (the budgets held against,
    the amount held, soft budgets passed) or ``refused`` (the budget that refused). A call no
    budget covers is only the attribute ``elevenfactor.budget.decision`` (an event costs
    more, and there is nothing to tell)."""
    if decision == "admitted" and not (budgets or soft or downgraded_to):
        tracing.set_attrs(_ADMITTED)
        return
    attrs: dict[str, Any] = {"elevenfactor.budget.decision": decision}
    if budgets:
        attrs["elevenfactor.budget.ids"] = list(budgets)
    if amount is not None:
        attrs["elevenfactor.budget.hold_amount"] = amount
    if soft:
        attrs["elevenfactor.budget.soft_exceeded"] = list(soft)
    if refused_by:
        attrs["elevenfactor.budget.refused_by"] = refused_by
    if downgraded_to:
        attrs["elevenfactor.budget.downgraded_to"] = downgraded_to
    tracing.event("elevenfactor.budget", attrs)


def guard_event(stage: str, action: str, policy: str, rule: str, fired: Sequence[Any]) -> None:
    """``elevenfactor.guard`` on the current span: the stage, the verdict's action, policy and
    rule, and the rules that fired (``policy/rule:action``) — never the matched text. A
    stage that allowed with no rule firing is only the attribute
    ``elevenfactor.guard.<stage>: allow`` (the common case; an event costs more)."""
    if action == "allow" and not fired:
        allowed = _ALLOWED.get(stage)
        if allowed is None:
            allowed = _ALLOWED[stage] = {f"elevenfactor.guard.{stage}": "allow"}
        tracing.set_attrs(allowed)
        return
    attrs: dict[str, Any] = {
        "elevenfactor.guard.stage": stage,
        "elevenfactor.guard.action": action,
    }
    if policy:
        attrs["elevenfactor.guard.policy"] = policy
    if rule:
        attrs["elevenfactor.guard.rule"] = rule
    rules = [
        f"{f.get('policy', '')}/{f.get('rule', '')}:{f.get('action', '')}"
        for f in fired
        if isinstance(f, dict)
    ]
    if rules:
        attrs["elevenfactor.guard.fired"] = rules
    tracing.event("elevenfactor.guard", attrs)


def approval_event(what: str, approval_id: str, group: str | None, **extra: Any) -> None:
    """``elevenfactor.approval.{what}`` (``created``, ``decided``) on the current span, with
    the approval's id and reviewer group (and e.g. ``decision``) — never the arguments.
    Nothing (one check) when tracing is off."""
    if tracing.TRACER is None:
        return
    attrs: dict[str, Any] = {"elevenfactor.approval.id": approval_id}
    if group:
        attrs["elevenfactor.approval.group"] = group
    for key, value in extra.items():
        if value is not None:
            attrs[f"elevenfactor.approval.{key}"] = value
    tracing.event(f"elevenfactor.approval.{what}", attrs)
