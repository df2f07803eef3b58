"""The cost report: what model calls cost, grouped by who made them, what for, and when.

One aggregate query (``_cost_query``) does the work on both dialects: the caller's scope
(``Principal.scope``) is part of its ``WHERE`` clause, so a member sees its own spend and an
admin its organisation's; time buckets are computed in SQL (UTC, from whole seconds); names of
users, teams, keys and organisations are joined to the groups. Only the ``tag`` dimension is
finished in Python: calls are grouped by their tag list, and each list is split into a row per
tag (a call with two tags counts in both rows; the totals count it once).

The rollup (``governance._cost_rollup``): when every dimension grouped or filtered by is kept
there (all but ``run`` and ``session``), the whole days and hours of the range that are rolled
up are read from ``cost_daily`` and ``cost_hourly`` (only hours with an ``hour`` bucket) and the
rest from ``model_calls``, in one query that sums the parts' groups (``_cost_query``). The
figures are the same as from the calls alone (money is rounded to 1e-9, so summing it in
another order does not change it).

Session attribution: a gateway call carries its ``x-elevenfactor-session``; a call made inside a
run belongs to the run's session.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from elevenfactor.errors import RequestError
from elevenfactor.governance._cost_query import BUCKET_SQL, DIMS, query
from elevenfactor.governance._cost_rollup import DAILY, HOURLY, ROLLED_UP, Span, plan, read_mark
from elevenfactor.governance._principal import Principal
from elevenfactor.store import Executor

__all__ = [
    "BUCKETS",
    "DIMENSIONS",
    "CostFigures",
    "CostReport",
    "CostRow",
    "cost_report",
]

DIMENSIONS = (
    "org",
    "team",
    "user",
    "key",
    "agent",
    "run",
    "session",
    "route",
    "model",
    "provider",
    "tag",
    "status",
    "kind",
)
"""What spend can be grouped and filtered by (``model`` is the deployment; ``kind`` is
``chat`` or ``embedding``)."""
BUCKETS = ("hour", "day", "week", "month")
"""Time buckets (UTC; a week starts on Monday)."""
_LONGEST = 1e15  # seconds (31 million years): what a time may be, either side of 1970
_MONEY_DIGITS = 9  # far below a price's resolution, far above a float sum's rounding noise


@dataclass(frozen=True, slots=True)
class CostFigures:
    """What a group of calls did and cost. ``saved`` is what caching saved (prompt-cache
    discounts and response-cache hits); ``unpriced`` counts successful calls on a deployment
    with no price (their cost is not in ``cost``). A report rounds money to 1e-9: sums of the
    same calls in another order (from the rollup) give the same figures."""

    calls: int = 0
    errors: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    tokens_cached: int = 0
    cost: float = 0.0
    saved: float = 0.0
    unpriced: int = 0

    def __add__(self, other: CostFigures) -> CostFigures:
        return CostFigures(
            self.calls + other.calls,
            self.errors + other.errors,
            self.tokens_in + other.tokens_in,
            self.tokens_out + other.tokens_out,
            self.tokens_cached + other.tokens_cached,
            self.cost + other.cost,
            self.saved + other.saved,
            self.unpriced + other.unpriced,
        )

    def to_dict(self) -> dict[str, Any]:
        """The figures as JSON (money rounded to 1e-6)."""
        return {
            "calls": self.calls,
            "errors": self.errors,
            "tokens_in": self.tokens_in,
            "tokens_out": self.tokens_out,
            "tokens_cached": self.tokens_cached,
            "cost": round(self.cost, 6),
            "saved": round(self.saved, 6),
            "unpriced": self.unpriced,
        }


@dataclass(frozen=True, slots=True)
class CostRow:
    """One group: its time bucket (None without ``bucket``), the value of each dimension (an
    id for org, team, user and key, whose names are in ``names``), and its figures."""

    bucket: str | None
    group: dict[str, str | None]
    names: dict[str, str | None]
    figures: CostFigures

    def label(self, dimension: str) -> str | None:
        """The dimension's name where it has one, else its value."""
        return self.names.get(dimension) or self.group.get(dimension)

    def to_dict(self) -> dict[str, Any]:
        """The row as JSON."""
        return {
            "bucket": self.bucket,
            "group": self.group,
            "names": self.names,
            **self.figures.to_dict(),
        }


@dataclass(frozen=True, slots=True)
class CostReport:
    """Spend grouped by ``group_by`` (and ``bucket``), with ``totals`` over every call."""

    group_by: tuple[str, ...]
    bucket: str | None
    since: float | None
    until: float | None
    filters: dict[str, str]
    rows: list[CostRow] = field(default_factory=list)
    totals: CostFigures = field(default_factory=CostFigures)

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON (what ``GET /v1/cost`` answers)."""
        return {
            "object": "cost_report",
            "group_by": list(self.group_by),
            "bucket": self.bucket,
            "since": self.since,
            "until": self.until,
            "filters": self.filters,
            "data": [r.to_dict() for r in self.rows],
            "totals": self.totals.to_dict(),
        }

    def columns(self) -> list[str]:
        """The columns of ``table_rows`` and the CSV."""
        head = (["bucket"] if self.bucket else []) + list(self.group_by)
        return head + list(CostFigures().to_dict())

    def table_rows(self) -> list[list[Any]]:
        """One list per row: the bucket, each dimension's label, then the figures."""
        out: list[list[Any]] = []
        for r in self.rows:
            head = ([r.bucket] if self.bucket else []) + [r.label(d) for d in self.group_by]
            out.append(head + list(r.figures.to_dict().values()))
        return out

    def to_csv(self) -> str:
        """The report as CSV: a header line, one line per row, and a ``total`` line."""
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(self.columns())
        writer.writerows(["" if v is None else v for v in row] for row in self.table_rows())
        width = len(self.columns()) - len(CostFigures().to_dict())
        writer.writerow((["total"] + [""] * (width - 1) if width else []) + list(
            self.totals.to_dict().values()
        ))  # fmt: skip
        return buf.getvalue()


def _check(group_by: Sequence[str], bucket: str | None, filters: Mapping[str, str]) -> None:
    for param, names in (("by", group_by), ("where", filters)):
        for name in names:
            if name not in DIMS:
                raise RequestError(
                    f"unknown dimension {name!r} in {param!r}; use one of: "
                    + ", ".join(DIMENSIONS),
                    param=param,
                )
    if len(set(group_by)) != len(group_by):
        raise RequestError("a dimension is named twice in 'by'", param="by")
    if bucket is not None and bucket not in BUCKETS:
        raise RequestError(
            f"unknown bucket {bucket!r}; use one of: {', '.join(BUCKETS)}", param="per"
        )


async def cost_report(
    db: Executor,
    principal: Principal,
    *,
    group_by: Sequence[str],
    bucket: str | None = None,
    since: float | None = None,
    until: float | None = None,
    filters: Mapping[str, str] | None = None,
    dialect: str | None = None,
) -> CostReport:
    """Spend of the calls ``principal`` may see (its own; an admin's organisation's) between
    ``since`` (inclusive) and ``until`` (exclusive, epoch seconds), matching every filter
    (dimension -> value; org, team, user and key match an id or a name), grouped by
    ``group_by`` (``DIMENSIONS``) and by ``bucket`` (``BUCKETS``, UTC). Rows come by bucket,
    then most expensive first. Raises ``RequestError`` naming ``by``, ``per`` or ``where`` for
    an unknown dimension or bucket (``since`` or ``until`` for a time that is not a number
    of epoch seconds). ``dialect`` defaults to ``db.dialect``."""
    group_by = tuple(group_by)
    filters = dict(filters or {})
    _check(group_by, bucket, filters)
    for param, when in (("since", since), ("until", until)):
        if when is not None and not (math.isfinite(when) and abs(when) < _LONGEST):
            raise RequestError(f"{param!r} must be a time in epoch seconds", param=param)
    dialect = dialect or getattr(db, "dialect", None)
    if dialect not in BUCKET_SQL:
        raise TypeError(f"cost_report needs a store, or dialect= for {db!r}")
    spans = [Span(None, since, until)]
    if ROLLED_UP.issuperset(group_by) and ROLLED_UP.issuperset(filters):
        tiers = (HOURLY,) if bucket == "hour" else (DAILY, HOURLY)
        spans = plan(since, until, await read_mark(db), tiers)
    found: list[Any] = []
    named = [d for d in group_by if DIMS[d].names]
    if spans:
        sql, params = query(principal, group_by, bucket, filters, dialect, spans)
        found = await db.fetchall(sql, params)
    rows, totals = _collect(found, group_by, named, bucket)
    return CostReport(group_by, bucket, since, until, filters, rows, totals)


def _collect(
    rows: Sequence[Sequence[Any]],
    group_by: tuple[str, ...],
    named: list[str],
    bucket: str | None,
) -> tuple[list[CostRow], CostFigures]:
    """Rows of the query as ``CostRow``s (a row per tag for ``tag``), ordered, and totals."""
    groups: dict[tuple[Any, ...], tuple[dict[str, Any], dict[str, Any], list[Any]]] = {}
    totals: list[Any] = [0] * 8
    nb, nd, by_tag = (1 if bucket else 0), len(group_by), "tag" in group_by
    for row in rows:
        sums = [v or 0 for v in row[-8:]]
        if not sums[0]:
            continue
        totals = [a + b for a, b in zip(totals, sums, strict=True)]
        values: dict[str, Any] = dict(zip(group_by, row[nb : nb + nd], strict=True))
        names: dict[str, Any] = dict(zip(named, row[nb + nd : nb + nd + len(named)], strict=True))
        for tag in _tags(values["tag"]) if by_tag else [None]:
            group = {**values, "tag": tag} if by_tag else values
            key = (row[0] if bucket else None, *group.values())
            found = groups.get(key)
            if found is None:
                groups[key] = (group, names, list(sums))  # its own: merged in place
            else:
                found[2][:] = [a + b for a, b in zip(found[2], sums, strict=True)]
    out = [CostRow(k[0], g, n, _figures(v)) for k, (g, n, v) in groups.items()]
    out.sort(key=lambda r: (r.bucket or "", -r.figures.cost, [str(v) for v in r.group.values()]))
    return out, _figures(totals)


def _figures(cols: Sequence[Any]) -> CostFigures:
    calls, errors, tokens_in, tokens_out, cached, cost, saved, unpriced = cols
    return CostFigures(
        calls=int(calls or 0),
        errors=int(errors or 0),
        tokens_in=int(tokens_in or 0),
        tokens_out=int(tokens_out or 0),
        tokens_cached=int(cached or 0),
        cost=round(float(cost or 0), _MONEY_DIGITS),
        saved=round(float(saved or 0), _MONEY_DIGITS),
        unpriced=int(unpriced or 0),
    )


def _tags(raw: str | None) -> list[str | None]:
    if not raw:
        return [None]
    try:
        tags = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return [None]
    return [str(t) for t in tags] if isinstance(tags, list) and tags else [None]
