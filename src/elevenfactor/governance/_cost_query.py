"""The SQL of the cost report (``governance._cost``): its dimensions, time buckets and filters.

One query: a ``UNION ALL`` of the groups of each span ``_cost_rollup.plan`` splits the range
into (from ``model_calls`` or a rollup table, each aliased ``c``), grouped by hour (``hour``
buckets) or day (the others) as a number, then regrouped by bucket label, with the names of
the groups' owners joined. Labels and names are computed once per group, not once per row
(``strftime`` on every call of a month cost more than summing them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from elevenfactor.governance._cost_rollup import (
    CALL_FIGURES,
    DAY,
    HOUR,
    ROLLUP_FIGURES,
    Span,
    period_sql,
)
from elevenfactor.governance._principal import Principal

__all__ = ["BUCKET_SQL", "DIMS", "query"]


@dataclass(frozen=True, slots=True)
class _Dim:
    expr: str
    names: str | None = None  # the table whose ``name`` names a value (its ``id``)
    join: str | None = None


_RUNS = "LEFT JOIN runs r ON r.id = c.run_id"
DIMS: dict[str, _Dim] = {
    "org": _Dim("c.org_id", "orgs"),
    "team": _Dim("c.team_id", "teams"),
    "user": _Dim("c.user_id", "users"),
    "key": _Dim("c.api_key_id", "api_keys"),
    "agent": _Dim("c.agent"),
    "run": _Dim("c.run_id"),
    "session": _Dim("COALESCE(c.session_id, r.session_id)", None, _RUNS),
    "route": _Dim("c.route"),
    "model": _Dim("c.deployment"),
    "provider": _Dim("c.provider"),
    "tag": _Dim("c.tags"),
    "status": _Dim("c.status"),
    "kind": _Dim("COALESCE(c.kind, 'chat')"),
}  # fmt: skip

# Labels of a time bucket from ``{t}``, the start of a group's hour or day in epoch seconds.
_UTC = "(to_timestamp({t}) AT TIME ZONE 'UTC')"
BUCKET_SQL = {
    "sqlite": {
        "hour": "strftime('%Y-%m-%dT%H:00', {t}, 'unixepoch')",
        "day": "strftime('%Y-%m-%d', {t}, 'unixepoch')",
        "week": "date({t}, 'unixepoch', 'weekday 0', '-6 days')",
        "month": "strftime('%Y-%m', {t}, 'unixepoch')",
    },
    "postgresql": {
        "hour": f"to_char({_UTC}, 'YYYY-MM-DD\"T\"HH24:00')",
        "day": f"to_char({_UTC}, 'YYYY-MM-DD')",
        "week": f"to_char(date_trunc('week', {_UTC}), 'YYYY-MM-DD')",
        "month": f"to_char({_UTC}, 'YYYY-MM')",
    },
}


def _filter(dim: str, value: str, dialect: str) -> tuple[str, list[Any]]:
    spec = DIMS[dim]
    if dim == "tag":  # the tag as a JSON string inside the list (case-sensitive)
        find = "instr(c.tags, ?)" if dialect == "sqlite" else "strpos(c.tags, ?)"
        return f"{find} > 0", [orjson.dumps(value).decode()]
    if dim == "key":
        names = "SELECT id FROM api_keys WHERE name = ? OR prefix = ?"
        return f"(c.api_key_id = ? OR c.api_key_id IN ({names}))", [value, value, value]
    if spec.names is not None:
        names = f"SELECT id FROM {spec.names} WHERE name = ?"
        return f"({spec.expr} = ? OR {spec.expr} IN ({names}))", [value, value]
    return f"{spec.expr} = ?", [value]


def query(
    principal: Principal,
    group_by: tuple[str, ...],
    bucket: str | None,
    filters: dict[str, str],
    dialect: str,
    spans: list[Span],
) -> tuple[str, list[Any]]:
    """The aggregate query and its parameters: rows of the bucket label (with ``bucket``),
    each grouped dimension's value, the names of the named ones, then the figures."""
    unit = HOUR if bucket == "hour" else DAY
    branches: list[str] = []
    params: list[Any] = []
    for span in spans:
        sql, values = _branch(principal, group_by, bucket, filters, dialect, span, unit)
        branches.append(sql)
        params.extend(values)
    cols = [BUCKET_SQL[dialect][bucket].replace("{t}", f"g.t * {unit}")] if bucket else []
    cols += [f"g.k{i}" for i in range(len(group_by))]
    joins: list[str] = []
    for i, d in enumerate(d for d in group_by if DIMS[d].names):
        joins.append(f"LEFT JOIN {DIMS[d].names} n{i} ON n{i}.id = g.k{group_by.index(d)}")
        cols.append(f"n{i}.name")
    grouping = f" GROUP BY {', '.join(str(i + 1) for i in range(len(cols)))}" if cols else ""
    cols += [f"SUM(g.f{i})" for i in range(len(CALL_FIGURES))]
    union = " UNION ALL ".join(branches)
    return f"SELECT {', '.join(cols)} FROM ({union}) g {' '.join(joins)}{grouping}", params


def _branch(
    principal: Principal,
    group_by: tuple[str, ...],
    bucket: str | None,
    filters: dict[str, str],
    dialect: str,
    span: Span,
    unit: int,
) -> tuple[str, list[Any]]:
    """The groups of one span, by ``unit``-second period (with ``bucket``) and dimensions."""
    tier = span.tier
    scope, params = principal.scope("c")
    where = [scope]
    time, scale = ("c.created_at", 1) if tier is None else (f"c.{tier.column}", tier.unit)
    for op, bound in ((">=", span.lo), ("<", span.hi)):
        if bound is not None:
            where.append(f"{time} {op} ?")
            params.append(bound if tier is None else int(bound) // scale)
    for dim, value in filters.items():
        sql, values = _filter(dim, value, dialect)
        where.append(sql)
        params.extend(values)
    keys = [f"{period_sql(tier, unit, dialect)} AS t"] if bucket else []
    keys += [f"{DIMS[d].expr} AS k{i}" for i, d in enumerate(group_by)]
    figures = CALL_FIGURES if tier is None else ROLLUP_FIGURES
    cols = keys + [f"{f} AS f{i}" for i, f in enumerate(figures)]
    used = set(group_by) | set(filters)
    joins = [s.join for d, s in DIMS.items() if d in used and s.join]
    grouping = f" GROUP BY {', '.join(str(i + 1) for i in range(len(keys)))}" if keys else ""
    source = "model_calls" if tier is None else tier.table
    return (
        f"SELECT {', '.join(cols)} FROM {source} c {' '.join(joins)}"
        f" WHERE {' AND '.join(where)}{grouping}",
        params,
    )
