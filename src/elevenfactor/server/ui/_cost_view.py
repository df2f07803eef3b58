"""What the cost page shows, as plain data: spend over time by a dimension (the cost report
behind ``GET /v1/cost``, so the principal's scope is in its query), the budgets with their
burn, and the kill switches.

Spend: one aggregate query grouped by bucket and dimension; the top N groups of the range
get a series each, the rest is summed as ``other``; every group is in the totals table.
Budgets: an admin sees its organisation's, a member the ones covering it (its organisation's,
team's, own and key's), each with what its current window spent and holds for calls in flight.
Kill switches: an admin sees every active one; a member the active ones that stop its own
calls (its key, user, team, an agent, one of its runs) — what a refused call would tell it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic import StringConstraints as SC

from elevenfactor.errors import BudgetUnavailable
from elevenfactor.governance import (
    Budget,
    BudgetStatus,
    CostFigures,
    KillSwitch,
    Principal,
    budget_status,
    budgets_covering,
    cost_report,
    list_budgets,
    list_kills,
)
from elevenfactor.governance._kills import KILL_COLUMNS, kill_from_row
from elevenfactor.server._state import Gateway
from elevenfactor.server.ui._charts import Burn, Chart, Series, burn, stacked_bars
from elevenfactor.server.ui._ranges import RangeQuery, TimeRange, bucket_keys, bucket_label
from elevenfactor.server.ui._render import environment
from elevenfactor.store import Store

__all__ = [
    "DIMENSIONS",
    "METRICS",
    "BudgetRow",
    "CostPageQuery",
    "GroupTotal",
    "KillForm",
    "ReleaseForm",
    "SpendView",
    "budget_rows",
    "spend_view",
    "visible_kills",
]

DIMENSIONS = {
    "model": "Model (deployment)",
    "route": "Route",
    "provider": "Provider",
    "user": "User",
    "team": "Team",
    "key": "API key",
    "agent": "Program / agent",
    "tag": "Tag",
}
"""What spend can be split by on the page (the cost report's dimensions), with labels."""
METRICS = {"cost": "Spend", "calls": "Calls", "tokens": "Tokens"}
"""What the chart adds up: USD, calls, or tokens in and out."""
MAX_GROUPS = 100
"""Groups listed in the totals table (the rest are counted)."""

Dimension = Literal["model", "route", "provider", "user", "team", "key", "agent", "tag"]
_Printable = Annotated[str, SC(pattern=r"^[^\s\x00-\x1f][^\x00-\x1f]{0,199}$")]
_TEXT = r"[^\x00-\x08\x0b\x0c\x0e-\x1f]*"
_Reason = Annotated[str, SC(pattern=rf"^{_TEXT}\S{_TEXT}$", max_length=1000)]


class CostPageQuery(RangeQuery):
    """``GET /ui/cost``: the range, the dimension (``by``), the bucket (``per``: ``hour`` or
    ``day``; default hours up to two days, else days), what to add up (``metric``), how many
    groups get their own series (``top``), and the notice after a form (``notice``)."""

    by: Dimension = "model"
    per: Literal["hour", "day"] | None = None
    metric: Literal["cost", "calls", "tokens"] = "cost"
    top: int = Field(default=6, ge=1, le=12)
    notice: Literal["engaged", "released", "unchanged"] | None = None


class KillForm(BaseModel):
    """``POST /ui/cost/kills``: what to stop (``kind`` and ``target``: a name, or a run id)
    and why."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["key", "user", "team", "agent", "run"]
    target: _Printable
    reason: _Reason


class ReleaseForm(BaseModel):
    """``POST /ui/cost/kills/{id}/release``: why the switch is lifted."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    reason: _Reason


@dataclass(frozen=True, slots=True)
class GroupTotal:
    """One group of the range: its label, its figures and its share of the metric."""

    label: str
    figures: CostFigures
    share: float


@dataclass(frozen=True, slots=True)
class SpendView:
    """The spend chart, the totals table and the range they cover."""

    chart: Chart
    groups: list[GroupTotal]
    more: int
    """Groups not listed (beyond ``MAX_GROUPS``)."""
    totals: CostFigures
    per: str
    dimension: str


def _metric(figures: CostFigures, metric: str) -> float:
    if metric == "cost":
        return figures.cost
    if metric == "calls":
        return float(figures.calls)
    return float(figures.tokens_in + figures.tokens_out)


def _label(value: str | None, dimension: str) -> str:
    if value:
        return value
    return "(untagged)" if dimension == "tag" else "(none)"


def _count(value: float) -> str:
    return f"{value:,.0f}"


async def spend_view(
    store: Store, principal: Principal, q: CostPageQuery, span: TimeRange
) -> SpendView:
    """The spend of what ``principal`` may see in ``span``, by ``q.by`` and bucket."""
    per = q.per or ("hour" if span.span <= 2 * 86400 else "day")
    buckets = bucket_keys(per, span)
    report = await cost_report(
        store, principal, group_by=(q.by,), bucket=per, since=span.since, until=span.until
    )
    index = {b: i for i, b in enumerate(buckets)}
    per_group: dict[str | None, list[float]] = {}
    figures: dict[str | None, CostFigures] = {}
    labels: dict[str | None, str] = {}
    for row in report.rows:
        key = row.group.get(q.by)
        labels.setdefault(key, _label(row.label(q.by), q.by))
        figures[key] = figures.get(key, CostFigures()) + row.figures
        values = per_group.setdefault(key, [0.0] * len(buckets))
        at = index.get(row.bucket or "")
        if at is not None:
            values[at] += _metric(row.figures, q.metric)
    order = sorted(figures, key=lambda k: (-_metric(figures[k], q.metric), labels[k]))
    top, rest = order[: q.top], order[q.top :]
    series = [Series(labels[k], tuple(per_group[k])) for k in top]
    if rest:
        other = [sum(per_group[k][i] for k in rest) for i in range(len(buckets))]
        series.append(Series(f"other ({len(rest)})", tuple(other), other=True))
    money = environment().filters["money"]
    chart = stacked_bars(
        f"{METRICS[q.metric]} over time",
        buckets,
        series,
        fmt=money if q.metric == "cost" else _count,
        bucket_label=bucket_label,
        bucket_column=f"{per.capitalize()} (UTC)",
        integer=q.metric != "cost",
    )
    whole = sum(_metric(f, q.metric) for f in figures.values())
    groups = [
        GroupTotal(labels[k], figures[k], _metric(figures[k], q.metric) / whole if whole else 0.0)
        for k in order[:MAX_GROUPS]
    ]
    return SpendView(chart, groups, max(0, len(order) - MAX_GROUPS), report.totals, per, q.by)


@dataclass(frozen=True, slots=True)
class BudgetRow:
    """A budget, its current window, and its burn bar."""

    status: BudgetStatus
    burn: Burn

    @property
    def budget(self) -> Budget:
        """The budget."""
        return self.status.budget

    @property
    def remaining(self) -> float:
        """What is left of the limit in this window."""
        return max(0.0, self.budget.limit - self.status.spent - self.status.reserved)


async def budget_rows(gw: Gateway, store: Store, principal: Principal) -> list[BudgetRow]:
    """The budgets ``principal`` may read (see the module docstring) with their current
    window: from the gateway's budget engine (exact with Redis), or from the store if Redis
    cannot be reached, as ``GET /v1/budgets`` answers."""
    if principal.is_admin or principal.unscoped:
        found = await list_budgets(store, principal)
    else:
        found = await budgets_covering(store, principal)
    meter = gw.meter
    usage = meter.gate.usage if meter is not None else None
    if meter is not None:
        await meter.drain()
    try:
        statuses = [await budget_status(store, b, usage=usage) for b in found]
    except BudgetUnavailable:
        statuses = [await budget_status(store, b) for b in found]
    scopes = [b.scope for b in found]
    money = environment().filters["money"]
    rows = []
    for s in statuses:
        b = s.budget
        name = b.scope if scopes.count(b.scope) == 1 else f"{b.scope} ({b.window})"
        rows.append(BudgetRow(s, burn(f"Budget {name} burn", s.spent, s.reserved, b.limit,
                                      fmt=money)))  # fmt: skip
    return rows


async def visible_kills(store: Store, principal: Principal) -> list[KillSwitch]:
    """The active kill switches ``principal`` may see, newest first (see the module
    docstring)."""
    if principal.is_admin or principal.unscoped:
        return await list_kills(store, principal)
    scope, params = principal.scope("r")
    rows = await store.fetchall(
        f"SELECT {KILL_COLUMNS} FROM kill_switches k WHERE k.org_id = ? AND k.lifted_at IS NULL"
        " AND ((k.kind = 'key' AND k.target = ?) OR (k.kind = 'user' AND k.target = ?)"
        " OR (k.kind = 'team' AND k.target = ?) OR k.kind = 'agent'"
        f" OR (k.kind = 'run' AND EXISTS (SELECT 1 FROM runs r WHERE r.id = k.target AND {scope})))"
        " ORDER BY k.created_at DESC LIMIT 200",
        (principal.org_id, principal.key_id or "", principal.user_id, principal.team_id or "",
         *params),
    )  # fmt: skip
    return [kill_from_row(r) for r in rows]
