"""Approval policy: which tool calls (and model requests) need a human first."""

from __future__ import annotations

import re
from collections.abc import Sequence
from fnmatch import fnmatchcase
from typing import Any

from elevenfactor.runtime._agent_spec import ApprovalRule, ArgPredicate

__all__ = ["model_rule", "tool_rule"]

_MISSING = object()


def _lookup(args: Any, path: str) -> Any:
    value = args
    for part in path.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return _MISSING
    return value


def _holds(pred: ArgPredicate, args: dict[str, Any]) -> bool:
    value = _lookup(args, pred.arg)
    if pred.op == "exists":
        return value is not _MISSING
    if value is _MISSING:
        return False
    try:
        match pred.op:
            case "==":
                return bool(value == pred.value)
            case "!=":
                return bool(value != pred.value)
            case ">":
                return bool(value > pred.value)
            case ">=":
                return bool(value >= pred.value)
            case "<":
                return bool(value < pred.value)
            case "<=":
                return bool(value <= pred.value)
            case "in":
                return value in pred.value
            case "not_in":
                return value not in pred.value
            case "contains":
                return pred.value in value
            case "matches":
                return re.search(str(pred.value), str(value)) is not None
    except TypeError:
        return False  # e.g. comparing a string with a number: the predicate does not hold
    return False


def tool_rule(
    rules: Sequence[ApprovalRule], name: str, risk: str, args: dict[str, Any]
) -> ApprovalRule | None:
    """The first rule that gates a call of tool ``name`` (of ``risk``) with ``args``."""
    for rule in rules:
        if rule.before_model:
            continue
        if rule.tools is not None and not any(fnmatchcase(name, p) for p in rule.tools):
            continue
        if rule.risk is not None and risk not in rule.risk:
            continue
        if all(_holds(p, args) for p in rule.when):
            return rule
    return None


def model_rule(rules: Sequence[ApprovalRule]) -> ApprovalRule | None:
    """The rule that gates model requests, if any."""
    return next((r for r in rules if r.before_model), None)
