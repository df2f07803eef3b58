"""Tool-call guards (factor 10): which tools an agent may call and what their arguments may
hold. Every function returns ``Finding`` s (about a whole value: ``start``/``end`` -1) and never
raises on what a model sent; a guard turns findings into a verdict by policy.

- ``tool_allowed(tool, allow, deny)``: glob patterns (``fs.*``, ``mcp:github/*``) matched
  case-sensitively with ``fnmatch``, where ``*`` crosses ``.`` and ``/`` (``fs.*`` allows
  ``fs.admin.drop``: list tools exactly when that matters). Deny wins, and is also matched
  after NFKC normalisation, case folding and stripping, so ``FS.Delete `` cannot slip past a
  ``fs.delete`` deny. An empty ``allow`` allows nothing (use ``["*"]``). A name holding
  whitespace or control characters is never allowed. Rules ``tool.denied``,
  ``tool.not_allowed``.
- ``check_predicates(args, rules)``: an ``ArgRule`` per argument, addressed by a dotted path
  (``payment.amount``; ``items.0.sku`` indexes a list; ``items.*.price`` checks every element;
  a top-level key that itself holds dots is found first). Rules ``arg.missing``, ``arg.type``,
  ``arg.min``, ``arg.max``, ``arg.pattern``, ``arg.enum``, ``arg.max_length``.
- ``find_path_escapes``, ``find_url_violations`` and ``find_money_over`` live in their own
  modules and are re-exported here.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from fnmatch import fnmatchcase
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from elevenfactor.governance._guard_money import find_money_over
from elevenfactor.governance._guard_paths import find_path_escapes
from elevenfactor.governance._guard_types import Finding
from elevenfactor.governance._guard_urls import find_url_violations

__all__ = [
    "PATTERN_MAX_INPUT",
    "ArgRule",
    "arg_values",
    "check_predicates",
    "find_money_over",
    "find_path_escapes",
    "find_url_violations",
    "tool_allowed",
    "tool_matches",
]

PATTERN_MAX_INPUT = 1024
"""Longest value matched against an ``ArgRule.pattern``. Python's ``re`` has no timeout, so a
pattern with nested quantifiers (``(a+)+$``) can take exponential time on a crafted value; the
cap bounds the damage of polynomial patterns and keeps model-sent megabytes away from the
engine. A longer value is an ``arg.pattern`` finding, never a match. Patterns come from the
policy (trusted): prefer possessive quantifiers and atomic groups (``a++``, ``(?>…)``)."""

_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)
_UNSAFE_NAME = re.compile(r"[\s\x00-\x1f\x7f]")

JsonScalar = str | int | float | bool | None


class ArgRule(BaseModel):
    """What one argument may hold. Every bound set must hold; ``None`` means unchecked.

    ``min``/``max`` (inclusive) apply to numbers and to strings that are one plain decimal
    number (``"1500"``; models send those); booleans, NaN, infinities and anything else are
    ``arg.type``. ``pattern`` is a regular expression the whole value must match
    (``re.fullmatch``), on strings and on numbers' text, for values up to
    ``PATTERN_MAX_INPUT`` characters. ``enum`` lists the allowed values (``1``, ``1.0`` and
    ``True`` are told apart from each other and from ``"1"``). ``max_length`` caps the length of
    a string, list or object. A missing or ``null`` argument is an ``arg.missing`` finding when
    ``required``, else skipped."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    required: bool = False
    min: Decimal | None = None
    max: Decimal | None = None
    pattern: str | None = None
    enum: tuple[JsonScalar, ...] | None = None
    max_length: int | None = Field(default=None, ge=0)

    @field_validator("min", "max")
    @classmethod
    def _finite(cls, value: Decimal | None) -> Decimal | None:
        if value is not None and not value.is_finite():
            raise ValueError("must be a finite number")
        return value

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"is not a valid regular expression: {exc}") from exc
        return value

    @model_validator(mode="after")
    def _ordered(self) -> ArgRule:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError("min must not be greater than max")
        return self


def tool_allowed(tool: str, allow: Sequence[str], deny: Sequence[str] = ()) -> list[Finding]:
    """A finding when ``tool`` is denied or not allowed (see the module docstring)."""
    for pattern in deny:
        if tool_matches(tool, (pattern,)):
            return [_finding("tool", "denied", f"tool matches deny pattern {pattern!r}")]
    if _UNSAFE_NAME.search(tool):
        detail = "tool name holds whitespace or control characters"
        return [_finding("tool", "not_allowed", detail)]
    if not any(tool == pattern or fnmatchcase(tool, pattern) for pattern in allow):
        return [_finding("tool", "not_allowed", "tool is not on the allow-list")]
    return []


def tool_matches(tool: str, patterns: Sequence[str]) -> bool:
    """Whether ``tool`` is one of ``patterns`` (an exact name, or a shell-style pattern),
    compared as written and folded (NFKC, casefold, stripped: fullwidth `` FS.Delete `` is
    ``fs.delete``)."""
    folded = _fold(tool)
    for pattern in patterns:
        other = _fold(pattern)
        if tool == pattern or folded == other:
            return True
        if fnmatchcase(tool, pattern) or fnmatchcase(folded, other):
            return True
    return False


def check_predicates(args: dict[str, Any], rules: Mapping[str, ArgRule]) -> list[Finding]:
    """Findings for every argument in ``args`` that breaks its rule in ``rules`` (keyed by
    dotted path), in the order of ``rules``."""
    findings: list[Finding] = []
    for path, rule in rules.items():
        present = [(where, value) for where, value in arg_values(args, path) if value is not None]
        if not present and rule.required:
            findings.append(_finding("arg", "missing", f"{path}: required argument is missing"))
        for where, value in present:
            findings.extend(_check(where, value, rule))
    return findings


def _check(where: str, value: Any, rule: ArgRule) -> list[Finding]:
    found: list[Finding] = []
    if rule.min is not None or rule.max is not None:
        number = _as_number(value)
        if number is None:
            found.append(_finding("arg", "type", f"{where}: expected a finite number"))
        elif rule.min is not None and number < rule.min:
            found.append(_finding("arg", "min", f"{where}: below the minimum {rule.min}"))
        elif rule.max is not None and number > rule.max:
            found.append(_finding("arg", "max", f"{where}: above the maximum {rule.max}"))
    if rule.pattern is not None:
        found.extend(_check_pattern(where, value, rule.pattern))
    if rule.enum is not None and not any(_same(value, option) for option in rule.enum):
        found.append(_finding("arg", "enum", f"{where}: not one of the allowed values"))
    if rule.max_length is not None:
        if not isinstance(value, (str, list, tuple, dict)):
            found.append(_finding("arg", "type", f"{where}: has no length to check"))
        elif len(value) > rule.max_length:
            detail = f"{where}: longer than {rule.max_length}"
            found.append(_finding("arg", "max_length", detail))
    return found


def _check_pattern(where: str, value: Any, pattern: str) -> list[Finding]:
    if isinstance(value, bool) or not isinstance(value, (str, int, float, Decimal)):
        return [_finding("arg", "type", f"{where}: expected a string")]
    text = value if isinstance(value, str) else str(value)
    if len(text) > PATTERN_MAX_INPUT:
        detail = f"{where}: longer than {PATTERN_MAX_INPUT} characters, not matched"
        return [_finding("arg", "pattern", detail)]
    if re.fullmatch(pattern, text) is None:
        return [_finding("arg", "pattern", f"{where}: does not match the pattern")]
    return []


def arg_values(args: Mapping[str, Any], path: str) -> list[tuple[str, Any]]:
    """``(concrete path, value)`` for every value a dotted ``path`` names (``*``: any key or
    element, numbers index lists); empty when none exists."""
    if path in args:
        return [(path, args[path])]
    found: list[tuple[str, Any]] = [("", args)]
    for segment in path.split("."):
        step: list[tuple[str, Any]] = []
        for where, node in found:
            prefix = f"{where}." if where else ""
            if segment == "*" and isinstance(node, Mapping):
                step += [(f"{prefix}{key}", item) for key, item in node.items()]
            elif segment == "*" and isinstance(node, (list, tuple)):
                step += [(f"{prefix}{i}", item) for i, item in enumerate(node)]
            elif isinstance(node, Mapping) and segment in node:
                step.append((f"{prefix}{segment}", node[segment]))
            elif isinstance(node, (list, tuple)) and _index(segment) < len(node):
                step.append((f"{prefix}{segment}", node[_index(segment)]))
        found = step
    return found


def _index(segment: str) -> int:
    """A list index from a path segment; a huge one (never in range) when it is none."""
    ok = segment.isascii() and segment.isdigit() and len(segment) < 10
    return int(segment) if ok else 2**63


def _as_number(value: Any) -> Decimal | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, Decimal)):
        number = Decimal(value)
    elif isinstance(value, float):
        number = Decimal(repr(value))
    elif isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        try:
            number = Decimal(value.strip())
        except InvalidOperation:
            return None
    else:
        return None
    return number if number.is_finite() else None


def _same(value: Any, option: JsonScalar) -> bool:
    """Equality that keeps JSON's types apart (``True`` is not ``1``, ``1`` is not ``1.0``)."""
    return type(value) is type(option) and bool(value == option)


def _fold(name: str) -> str:
    return unicodedata.normalize("NFKC", name).casefold().strip()


def _finding(area: str, kind: str, detail: str) -> Finding:
    return Finding(rule=f"{area}.{kind}", kind=f"{area}_{kind}", detail=detail)
