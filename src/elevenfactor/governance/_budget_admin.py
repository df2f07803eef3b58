"""Setting, reading and deleting budgets, and what they have used in their current window.

Every function takes the acting ``Principal``: changes need an admin, act inside its own
organisation only (the queries say so) and are recorded in the ledger in the same transaction.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from elevenfactor.errors import NotFound, RequestError
from elevenfactor.governance._budgets import (
    BUDGET_COLUMNS,
    Budget,
    budget_from_row,
    changed,
    check_alerts,
    check_limit,
    check_on_exceed,
    check_webhook,
    check_window,
    new_budget_id,
    now,
    parse_scope,
    resolve_scope,
)
from elevenfactor.governance._ledger import append_entry
from elevenfactor.governance._principal import Principal
from elevenfactor.governance._windows import iso, resets_at, window_key
from elevenfactor.store import Executor, Store

__all__ = [
    "BudgetStatus",
    "budget_status",
    "budgets_covering",
    "delete_budget",
    "get_budget",
    "list_budgets",
    "set_budget",
    "update_budget",
]

_SELECT = f"SELECT {BUDGET_COLUMNS} FROM budgets"
Usage = Callable[[str, str], Awaitable[tuple[float, float]]]
"""``(budget id, window key) -> (spent, reserved)``."""


@dataclass(frozen=True, slots=True)
class BudgetStatus:
    """A budget and its use in the current window (``run`` windows: summed over every run)."""

    budget: Budget
    window_key: str
    spent: float
    reserved: float
    resets_at: float | None

    @property
    def used(self) -> float:
        """Spent and reserved, as a fraction of the limit."""
        return (self.spent + self.reserved) / self.budget.limit

    def to_dict(self) -> dict[str, Any]:
        """The budget with its current window's ``spent``, ``reserved``, ``remaining`` and
        ``resets_at``."""
        return {
            **self.budget.to_dict(),
            "window_key": self.window_key,
            "spent": self.spent,
            "reserved": self.reserved,
            "remaining": max(0.0, self.budget.limit - self.spent - self.reserved),
            "resets_at": self.resets_at,
            "resets_at_iso": iso(self.resets_at),
        }


async def set_budget(
    db: Store,
    principal: Principal,
    scope: str,
    limit: float,
    *,
    window: str = "month",
    soft: bool = False,
    alerts: Sequence[float] = (),
    on_exceed: str = "refuse",
    webhook: str | None = None,
) -> Budget:
    """Create the budget of ``scope`` and ``window``, or update it if there is one."""
    principal.require_admin("setting a budget")
    kind, name = parse_scope(scope)
    values = (
        check_limit(limit),
        check_window(window),
        bool(soft),
        check_alerts(alerts),
        check_on_exceed(on_exceed),
        check_webhook(webhook),
    )
    ts = now()
    async with db.transaction() as tx:
        canonical, target = await resolve_scope(tx, principal.org_id, kind, name)
        limit_v, window_v, soft_v, alerts_v, policy, hook = values
        row = await tx.fetchone(
            "INSERT INTO budgets (id, org_id, scope, kind, target, time_window, limit_usd, soft,"
            " alerts, on_exceed, webhook, created_by, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (org_id, scope, time_window) DO UPDATE SET target = excluded.target,"
            " limit_usd = excluded.limit_usd, soft = excluded.soft, alerts = excluded.alerts,"
            " on_exceed = excluded.on_exceed, webhook = excluded.webhook,"
            " updated_at = excluded.updated_at"
            f" RETURNING {BUDGET_COLUMNS}",
            (
                new_budget_id(),
                principal.org_id,
                canonical,
                kind,
                target,
                window_v,
                limit_v,
                int(soft_v),
                orjson.dumps(list(alerts_v)).decode(),
                policy,
                hook,
                principal.user_name,
                ts,
                ts,
            ),
        )
        assert row is not None
        budget = budget_from_row(row)
        await append_entry(tx, "admin.budget.set", budget.id, principal.actor(), budget.to_dict())
    changed()
    return budget


async def list_budgets(db: Executor, principal: Principal) -> list[Budget]:
    """The organisation's budgets, by scope and window."""
    principal.require_admin("listing budgets")
    rows = await db.fetchall(
        f"{_SELECT} WHERE org_id = ? ORDER BY scope, time_window", (principal.org_id,)
    )
    return [budget_from_row(r) for r in rows]


async def get_budget(
    db: Executor, principal: Principal, ident: str, *, window: str | None = None
) -> Budget:
    """The organisation's budget whose id or scope is ``ident`` (``window`` picks one when a
    scope has several)."""
    principal.require_admin("reading a budget")
    rows = await db.fetchall(
        f"{_SELECT} WHERE org_id = ? AND (id = ? OR scope = ?) ORDER BY time_window",
        (principal.org_id, ident, ident),
    )
    found = [budget_from_row(r) for r in rows]
    if window is not None:
        found = [b for b in found if b.window == window or b.id == ident]
    if not found:
        raise NotFound(
            f"no budget {ident!r}" + (f" with window {window!r}" if window else ""),
            hint="`elevenfactor budgets list` shows them",
        )
    if len(found) > 1:
        raise RequestError(
            f"scope {ident!r} has budgets for windows {', '.join(b.window for b in found)}",
            code="ambiguous_budget",
            param="id",
            hint="name the budget by its id, or give the window",
        )
    return found[0]


async def update_budget(
    db: Store,
    principal: Principal,
    ident: str,
    *,
    window: str | None = None,
    limit: float | None = None,
    soft: bool | None = None,
    alerts: Sequence[float] | None = None,
    on_exceed: str | None = None,
    webhook: str | None = None,
    clear_webhook: bool = False,
) -> Budget:
    """Change a budget's limit, softness, alerts, policy or webhook (None: unchanged)."""
    principal.require_admin("updating a budget")
    changes: dict[str, Any] = {}
    if limit is not None:
        changes["limit_usd"] = check_limit(limit)
    if soft is not None:
        changes["soft"] = int(bool(soft))
    if alerts is not None:
        changes["alerts"] = orjson.dumps(list(check_alerts(alerts))).decode()
    if on_exceed is not None:
        changes["on_exceed"] = check_on_exceed(on_exceed)
    if webhook is not None or clear_webhook:
        changes["webhook"] = None if clear_webhook else check_webhook(webhook)
    async with db.transaction() as tx:
        budget = await get_budget(tx, principal, ident, window=window)
        if changes:
            sets = ", ".join(f"{col} = ?" for col in changes)
            await tx.execute(
                f"UPDATE budgets SET {sets}, updated_at = ? WHERE id = ? AND org_id = ?",
                (*changes.values(), now(), budget.id, principal.org_id),
            )
            await append_entry(tx, "admin.budget.update", budget.id, principal.actor(), changes)
        budget = await get_budget(tx, principal, budget.id)
    changed()
    return budget


async def delete_budget(
    db: Store, principal: Principal, ident: str, *, window: str | None = None
) -> Budget:
    """Delete a budget with its usage and alerts (holds already made still settle)."""
    principal.require_admin("deleting a budget")
    async with db.transaction() as tx:
        budget = await get_budget(tx, principal, ident, window=window)
        await tx.execute(
            "DELETE FROM budgets WHERE id = ? AND org_id = ?", (budget.id, principal.org_id)
        )
        await tx.execute("DELETE FROM budget_usage WHERE budget_id = ?", (budget.id,))
        await tx.execute("DELETE FROM budget_alerts WHERE budget_id = ?", (budget.id,))
        await append_entry(
            tx, "admin.budget.delete", budget.id, principal.actor(), budget.to_dict()
        )
    changed()
    return budget


async def budget_status(
    db: Executor, budget: Budget, at: float | None = None, *, usage: Usage | None = None
) -> BudgetStatus:
    """What ``budget`` has spent and holds in the window ``at`` (default: now) falls in: from
    ``usage`` (a gate's ``usage`` method: exact with Redis) if given, else as the store knows it
    (with Redis the store holds committed spend once the background writer flushed it, and no
    reservations). ``run`` windows sum every run's, from the store."""
    ts = now() if at is None else at
    if budget.window == "run":
        row = await db.fetchone(
            "SELECT COALESCE(SUM(spent), 0), COALESCE(SUM(reserved), 0) FROM budget_usage"
            " WHERE budget_id = ?",
            (budget.id,),
        )
        key = "run:*"
    else:
        key = window_key(budget.window, ts) or ""
        if usage is not None:
            spent, reserved = await usage(budget.id, key)
            return BudgetStatus(budget, key, spent, reserved, resets_at(key))
        row = await db.fetchone(
            "SELECT spent, reserved FROM budget_usage WHERE budget_id = ? AND window_key = ?",
            (budget.id, key),
        )
    spent, reserved = (float(row[0]), float(row[1])) if row else (0.0, 0.0)
    return BudgetStatus(budget, key, spent, max(0.0, reserved), resets_at(key))


async def budgets_covering(db: Executor, principal: Principal) -> list[Budget]:
    """The budgets that apply to every call of ``principal`` (its organisation's, its team's,
    its own and its key's): what a member may read about its own limits."""
    rows = await db.fetchall(
        f"{_SELECT} WHERE org_id = ? AND (kind = 'org' OR (kind = 'team' AND target = ?)"
        " OR (kind = 'user' AND target = ?) OR (kind = 'key' AND target = ?))"
        " ORDER BY scope, time_window",
        (principal.org_id, principal.team_id or "", principal.user_id, principal.key_id or ""),
    )
    return [budget_from_row(r) for r in rows]
