"""Is a ``WHERE`` condition always true? The tautology check behind
``sql.delete_without_where`` and ``sql.update_without_where``.

sqlglot's optimizer ``simplify`` folds constants and boolean logic (``1=1``, ``NOT FALSE``,
``x=1 OR TRUE``, ``x IS NULL OR x IS NOT NULL``, ``1 BETWEEN 0 AND 2`` all become ``TRUE``);
on top of that, a condition counts as always true when it is a non-zero number or a string
that starts with one (MySQL and SQLite treat ``WHERE 1`` and ``WHERE '1'`` as true; SQLite
also ``WHERE "1"``, a double-quoted identifier it falls back to reading as a string), ``NOT``
of ``FALSE`` or zero, constants compared (``TRUE = 1``, what ``(1=1) = 1`` folds to; ``x IS
TRUE`` of a true ``x``), a deterministic operand compared with itself (``id = id``, ``id >= id``:
true for every row whose value is not NULL), ``x LIKE '%'``, a literal ``IN`` a list holding
it, and ``OR``/``AND`` of those. Conditions that need functions evaluated or the data read are
not recognised (``LENGTH('a') = 1``, ``id > 0``).
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from decimal import Decimal, InvalidOperation

from sqlglot import exp
from sqlglot.optimizer.simplify import simplify

__all__ = ["always_true"]

_LEADING_NUMBER = re.compile(r"\s*[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_SELF_TRUE = (exp.EQ, exp.GTE, exp.LTE, exp.NullSafeEQ)
_COMPARE: dict[type[exp.Expr], Callable[[Decimal, Decimal], bool]] = {
    exp.EQ: operator.eq,
    exp.NullSafeEQ: operator.eq,
    exp.NEQ: operator.ne,
    exp.GT: operator.gt,
    exp.GTE: operator.ge,
    exp.LT: operator.lt,
    exp.LTE: operator.le,
}


def always_true(condition: exp.Expr) -> bool:
    """Whether ``condition`` holds for every row (as far as static analysis can tell)."""
    try:
        simplified = simplify(condition.copy())
    except Exception:  # simplify is best effort; fall back to the raw condition
        simplified = condition
    return _true(simplified, 0) or _true(condition, 0)


def _true(node: exp.Expr, depth: int) -> bool:
    if depth > 50:
        return False
    node = node.unnest()
    if isinstance(node, exp.Boolean):
        return bool(node.this)
    if isinstance(node, (exp.Literal, exp.Neg)):
        return _nonzero(node)
    if isinstance(node, exp.Column) and not node.table and node.this.args.get("quoted"):
        # SQLite reads "1" as the string '1' when no column has that name.
        return _nonzero(exp.Literal.string(node.name))
    if isinstance(node, exp.Not):
        inner = node.this.unnest()
        if isinstance(inner, exp.Boolean):
            return not inner.this
        return isinstance(inner, exp.Literal) and not inner.is_string and not _nonzero(inner)
    if isinstance(node, exp.Or):
        return _true(node.left, depth + 1) or _true(node.right, depth + 1)
    if isinstance(node, exp.And):
        return _true(node.left, depth + 1) and _true(node.right, depth + 1)
    if isinstance(node, exp.Binary) and type(node) in _COMPARE:
        left, right = _constant(node.left), _constant(node.right)
        if left is not None and right is not None:
            return _COMPARE[type(node)](left, right)
    if isinstance(node, exp.Is) and isinstance(node.expression, exp.Boolean):
        return node.expression.this is True and _true(node.this, depth + 1)
    if isinstance(node, _SELF_TRUE):
        return node.left == node.right and node.left.find(exp.Func) is None
    if isinstance(node, exp.Like):
        pattern = node.expression
        return isinstance(pattern, exp.Literal) and pattern.is_string and _all_percent(pattern)
    if isinstance(node, exp.In):
        value = node.this
        return isinstance(value, exp.Literal) and any(v == value for v in node.expressions)
    return False


def _constant(node: exp.Expr) -> Decimal | None:
    """The numeric value of a constant (``TRUE`` is 1, as in SQLite and MySQL), else None."""
    node = node.unnest()
    if isinstance(node, exp.Boolean):
        return Decimal(1 if node.this else 0)
    negative = isinstance(node, exp.Neg)
    literal = node.this if negative else node
    if not isinstance(literal, exp.Literal) or literal.is_string:
        return None
    try:
        value = Decimal(str(literal.this))
    except (InvalidOperation, ValueError):
        return None
    return -value if negative else value


def _all_percent(literal: exp.Literal) -> bool:
    text = str(literal.this)
    return bool(text) and set(text) == {"%"}


def _nonzero(node: exp.Expr) -> bool:
    negative = isinstance(node, exp.Neg)
    literal = node.this if negative else node
    if not isinstance(literal, exp.Literal):
        return False
    text = str(literal.this)
    if literal.is_string:
        match = _LEADING_NUMBER.match(text)
        if match is None:
            return False
        text = match.group(0)
    try:
        return Decimal(text.strip()) != 0
    except (InvalidOperation, ValueError):
        return False
