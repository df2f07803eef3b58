"""The SQL behind the runs list (``/ui/runs``): one page of the runs a principal may see.

Every read carries ``principal.scope()``. Pages are keyset-paginated on ``(created_at, id)``
(newest first; ``before`` goes older, ``after`` newer) and every query is bounded:

- Filters an index serves together with the principal's scope go into an *inner* query that
  walks that index in list order, so it reads only rows it returns: a member's runs
  (``runs_owner``), a sharing team's two halves (``runs_owner`` and ``runs_team``, merged), an
  admin's organisation by ``program`` or ``status`` (``runs_org_program``/``runs_org_status``)
  or all of it (``runs_org_created``; all m030), the time range and the cursor being a range
  of ``created_at`` in each.
- Filters no index serves (tag, cost; status and program but for the one an admin's index
  serves) are applied to at most ``WINDOW`` runs of that walk (``COST_WINDOW`` with a cost
  filter; shared between a team's halves). When the window fills before the page does, the
  page ends there: its ``older`` cursor continues the search where the window stopped and
  ``scanned`` says so, rather than reading the whole table for a rare match.

A run's cost is the ``cost`` of its model calls plus its child runs' (every level, through
``parent_id``; only runs the principal may see count), in one query for the rows shown; with a
cost filter, in one query for the runs of the window, before the page's.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from elevenfactor.errors import RequestError
from elevenfactor.governance import ID_PATTERN, Principal
from elevenfactor.store import Store

__all__ = [
    "COST_WINDOW",
    "WINDOW",
    "Cursor",
    "RunFilter",
    "RunPage",
    "RunRow",
    "list_run_page",
    "owner_id",
]

WINDOW = 5000
"""At most this many runs are read to fill one page when a filter has no index."""
COST_WINDOW = 2000
"""The window when the cost is filtered (each run of it costs a walk of its tree of calls)."""

_ID = re.compile(ID_PATTERN)
_COLS = "id, program, status, org_id, team_id, user_id, created_at, updated_at, parent_id, tags"
_CURSOR_MAX = 240


@dataclass(frozen=True, slots=True)
class Cursor:
    """A position in the list: the ``created_at`` and ``id`` of a run, as ``<time>:<id>``."""

    created_at: float
    id: str

    @classmethod
    def parse(cls, text: str, param: str) -> Cursor:
        """``<epoch seconds>:<run id>``, else a ``RequestError`` naming ``param``."""
        at, sep, rid = text.partition(":")
        try:
            when = float(at)
        except ValueError:
            when = math.nan
        if len(text) > _CURSOR_MAX or not sep or not math.isfinite(when) or not _ID.match(rid):
            raise RequestError(
                f"{param!r} must be <time>:<run id> as the Older/Newer links give it",
                code="invalid_value",
                param=param,
            )
        return cls(when, rid)

    def __str__(self) -> str:
        return f"{self.created_at!r}:{self.id}"


@dataclass(frozen=True, slots=True)
class RunFilter:
    """What to list (all optional). ``user_id`` is the owner filter, already resolved; times
    are epoch seconds (``until`` exclusive); costs are US dollars, inclusive."""

    status: str | None = None
    program: str | None = None
    user_id: str | None = None
    since: float | None = None
    until: float | None = None
    min_cost: float | None = None
    max_cost: float | None = None
    tag: str | None = None


@dataclass(frozen=True, slots=True)
class RunRow:
    """One line of the list."""

    id: str
    program: str
    status: str
    owner: str | None
    created_at: float
    updated_at: float
    parent_id: str | None
    tags: tuple[str, ...]
    cost: float
    """US dollars: the run's model calls and its child runs' (all levels)."""


@dataclass(frozen=True, slots=True)
class RunPage:
    """Rows newest first and the cursors of the neighbouring pages (None: there is none)."""

    rows: list[RunRow]
    older: Cursor | None
    newer: Cursor | None
    scanned: int | None = None
    """Set when the page stopped at the scan window (``WINDOW`` rows) before it was full."""


async def owner_id(store: Store, principal: Principal, name: str) -> str | None:
    """The id of the user called ``name`` in ``principal``'s organisation, or None."""
    row = await store.fetchone(
        "SELECT id FROM users WHERE org_id = ? AND name = ?", (principal.org_id, name)
    )
    return str(row[0]) if row is not None else None


@dataclass(slots=True)
class _Sql:
    """A condition list with its parameters, in order."""

    where: list[str]
    params: list[Any]

    def add(self, cond: str, *params: Any) -> None:
        self.where.append(cond)
        self.params.extend(params)

    @property
    def clause(self) -> str:
        return " AND ".join(self.where)


def _split(principal: Principal, f: RunFilter) -> tuple[list[_Sql], _Sql]:
    """The inner (indexed) walks and the window's filters but the cost."""
    scope, scope_params = principal.scope()
    halves: list[tuple[str, list[Any]]] = [("1 = 1", [])]
    if f.user_id is not None:
        halves = [("user_id = ?", [f.user_id])]
    elif not principal.is_admin and principal.team_shares and principal.team_id is not None:
        me, team = principal.user_id, principal.team_id
        halves = [
            ("user_id = ?", [me]),
            ("team_id = ? AND (user_id IS NULL OR user_id <> ?)", [team, me]),
        ]
    rest = _Sql([], [])
    by_org = f.user_id is None and (principal.is_admin or principal.unscoped)
    indexed: tuple[str, Any] | None = None
    if by_org and f.program is not None:
        indexed = ("program", f.program)
    elif by_org and f.status is not None:
        indexed = ("status", f.status)
    for col in ("program", "status"):
        value = getattr(f, col)
        if value is not None and (indexed is None or indexed[0] != col):
            rest.add(f"w.{col} = ?", value)
    if f.tag is not None:
        rest.add("w.tags LIKE ? ESCAPE '!'", "%" + _like(orjson.dumps(f.tag).decode()) + "%")
    walks = []
    for cond, params in halves:
        sql = _Sql([scope], list(scope_params))
        sql.add(cond, *params)
        if indexed is not None:
            sql.add(f"{indexed[0]} = ?", indexed[1])
        if f.since is not None:
            sql.add("created_at >= ?", f.since)
        if f.until is not None:
            sql.add("created_at < ?", f.until)
        walks.append(sql)
    return walks, rest


def _like(text: str) -> str:
    return re.sub(r"([!%_])", r"!\1", text)


def _order(desc: bool, alias: str = "") -> str:
    d = "DESC" if desc else "ASC"
    return f"{alias}created_at {d}, {alias}id {d}"


def _inner(walks: list[_Sql], cursor: Cursor | None, desc: bool, n: int) -> tuple[str, list[Any]]:
    """The runs of the walks past ``cursor`` in list order, at most ``n``."""
    parts: list[str] = []
    params: list[Any] = []
    for walk in walks:
        sql = _Sql(list(walk.where), list(walk.params))
        if cursor is not None:
            lt, le = ("<", "<=") if desc else (">", ">=")
            sql.add(
                f"created_at {le} ? AND (created_at {lt} ? OR id {lt} ?)",
                cursor.created_at,
                cursor.created_at,
                cursor.id,
            )
        parts.append(f"SELECT {_COLS} FROM runs WHERE {sql.clause} ORDER BY {_order(desc)} LIMIT ?")
        params.extend([*sql.params, n])
    if len(parts) == 1:
        return parts[0], params
    union = " UNION ALL ".join(f"SELECT {_COLS} FROM ({p}) h{i}" for i, p in enumerate(parts))
    return f"SELECT {_COLS} FROM ({union}) u ORDER BY {_order(desc)} LIMIT ?", [*params, n]


async def _tree_costs(
    store: Store, principal: Principal, seed: str, params: Sequence[Any]
) -> dict[str, float]:
    """The cost of each run ``seed`` selects (``id, org_id, team_id, user_id``), in one query:
    the model calls of the runs of its tree (itself, then its descendants through
    ``parent_id``) that ``principal`` may see.

    The plan must not depend on estimates: PostgreSQL estimates a recursive step at ten times
    its input and would then hash-join or merge-join all runs, or all model calls. So the step
    is a ``LATERAL ... OFFSET 0`` there (one ``runs_parent`` probe per run of the tree) and
    each run's calls are a correlated subquery (one ``model_calls_run_id`` probe); and the
    query runs without JIT, which that estimate would start (hundreds of milliseconds of
    compiling for a query of a few). The scope is checked on the tree's rows, not in its
    recursive step, where SQLite would build a Bloom filter over every run at each step."""
    scope, scope_params = principal.scope("t")
    if store.dialect == "postgresql":
        step = (
            "FROM tree t CROSS JOIN LATERAL (SELECT c.id, c.org_id, c.team_id, c.user_id"
            " FROM runs c WHERE c.parent_id = t.id OFFSET 0) c"
        )
    else:
        step = "FROM tree t JOIN runs c ON c.parent_id = t.id"
    sql = (
        "WITH RECURSIVE seed (id, org_id, team_id, user_id) AS ("
        f"{seed}), tree (root, id, org_id, team_id, user_id) AS ("
        "SELECT id, id, org_id, team_id, user_id FROM seed UNION ALL"
        f" SELECT t.root, c.id, c.org_id, c.team_id, c.user_id {step}),"
        f" node_costs (root, cost) AS (SELECT t.root, CASE WHEN {scope} THEN"
        " (SELECT SUM(m.cost) FROM model_calls m WHERE m.run_id = t.id) END FROM tree t)"
        " SELECT root, SUM(cost) FROM node_costs GROUP BY root"
    )
    args = (*params, *scope_params)
    if store.dialect == "postgresql":
        async with store.transaction() as tx:
            await tx.execute("SET LOCAL jit = off")
            rows = await tx.fetchall(sql, args)
    else:
        rows = await store.fetchall(sql, args)
    return {str(r[0]): float(r[1] or 0) for r in rows}


def _in_range(cost: float, f: RunFilter) -> bool:
    return (f.min_cost is None or cost >= f.min_cost) and (f.max_cost is None or cost <= f.max_cost)


def _page_query(
    principal: Principal,
    walks: list[_Sql],
    rest: _Sql,
    cursor: Cursor | None,
    desc: bool,
    limit: int,
    n: int,
) -> tuple[str, list[Any], bool]:
    """The page's query: up to ``limit + 1`` rows (``tail`` 0) and, if ``rest`` filters a
    window of ``n`` runs, the window's last run when it is full (``tail`` 1); its parameters;
    whether it has a window."""
    windowed = bool(rest.where)
    inner, params = _inner(walks, cursor, desc, n if windowed else limit + 1)
    scope, scope_params = principal.scope("w")
    where = _Sql([scope, *rest.where], [*scope_params, *rest.params])
    cols = "w.id, w.program, w.status, w.user_id, w.created_at, w.updated_at, w.parent_id, w.tags"
    order = _order(desc, "w.")
    sql = f"SELECT 0 AS tail, {cols} FROM w WHERE {where.clause} ORDER BY {order} LIMIT ?"
    params = [*params, *where.params, limit + 1]
    if windowed:
        tail = f"SELECT 1, {cols} FROM w ORDER BY {order} LIMIT 1 OFFSET ?"
        sql = f"SELECT * FROM ({sql}) a UNION ALL SELECT * FROM ({tail}) b"
        params.append(n - 1)
    sql = (
        f"WITH w AS ({inner}) SELECT p.*, u.name FROM ({sql}) p"
        f" LEFT JOIN users u ON u.id = p.user_id ORDER BY p.tail, {_order(desc, 'p.')}"
    )
    return sql, params, windowed


async def list_run_page(
    store: Store,
    principal: Principal,
    f: RunFilter,
    *,
    before: Cursor | None = None,
    after: Cursor | None = None,
    limit: int = 50,
    window: int = WINDOW,
) -> RunPage:
    """One page of the runs ``principal`` may see that match ``f``, newest first: the first
    page, the one older than ``before`` or the one newer than ``after``.

    One query reads the page (and where its window ends); one more the costs of its rows
    (with a cost filter: first, the costs of the window's runs, whose matches the page then
    keeps)."""
    desc = after is None
    cursor = before if desc else after
    walks, rest = _split(principal, f)
    costed = f.min_cost is not None or f.max_cost is not None
    n = max(limit + 1, min(window, COST_WINDOW if costed else window) // len(walks))
    costs: dict[str, float] | None = None
    if costed:
        inner, params = _inner(walks, cursor, desc, n)
        seed = f"SELECT id, org_id, team_id, user_id FROM ({inner}) s"
        window_costs = await _tree_costs(store, principal, seed, params)
        costs = {rid: c for rid, c in window_costs.items() if _in_range(c, f)}
        marks = ", ".join("?" for _ in costs)
        rest.add(f"w.id IN ({marks})" if costs else "1 = 0", *costs)
    sql, params, windowed = _page_query(principal, walks, rest, cursor, desc, limit, n)
    got = await store.fetchall(sql, params)
    found = [r for r in got if not r[0]]
    more = len(found) > limit
    found = found[:limit]
    end = next((Cursor(float(r[5]), str(r[1])) for r in got if r[0]), None)
    end = None if more else end
    if not desc and not more and end is None:
        # Nothing newer beyond these: show the first page (full) rather than a short one.
        return await list_run_page(store, principal, f, limit=limit, window=window)
    if costs is None:
        ids = [str(r[1]) for r in found]
        marks = ", ".join("?" for _ in ids)
        seed = f"SELECT id, org_id, team_id, user_id FROM runs WHERE id IN ({marks})"
        costs = await _tree_costs(store, principal, seed, ids) if ids else {}
    rows = [_row(r, costs) for r in found]
    far = Cursor(rows[-1].created_at, rows[-1].id) if more else end
    near = Cursor(rows[0].created_at, rows[0].id) if rows else cursor
    scanned = n if windowed and end is not None else None
    if not desc:
        rows.reverse()
        return RunPage(rows, older=near, newer=far, scanned=scanned)
    return RunPage(rows, older=far, newer=near if cursor is not None else None, scanned=scanned)


def _row(r: Sequence[Any], costs: dict[str, float]) -> RunRow:
    """``r``: tail, id, program, status, user_id, created_at, updated_at, parent_id, tags,
    owner name."""
    tags: tuple[str, ...] = ()
    if r[8]:
        loaded = orjson.loads(r[8])
        tags = tuple(str(t) for t in loaded) if isinstance(loaded, list) else ()
    return RunRow(
        id=str(r[1]),
        program=str(r[2]),
        status=str(r[3]),
        owner=str(r[9]) if r[9] is not None else None,
        created_at=float(r[5]),
        updated_at=float(r[6]),
        parent_id=str(r[7]) if r[7] is not None else None,
        tags=tags,
        cost=costs.get(str(r[1]), 0.0),
    )
