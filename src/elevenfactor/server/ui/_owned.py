"""Rows that belong to runs (feedback, journal steps), restricted to the runs a principal may
read, in the join order that keeps the query bounded.

The owner columns live on ``runs``; a child table is read through them. Which side to start
from depends on who asks: an organisation's admin reads by time (the child's time index; with
an ``org_id`` column on the child, no join at all), and so does a member of a sharing team;
a member who sees only its own runs starts from them (``runs_owner``) and probes the child's
per-run index — otherwise a member with few runs would walk its whole organisation's rows of
the range to find its own. SQLite keeps the order of a ``CROSS JOIN``; PostgreSQL's planner
chooses the order itself from the same indexes.
"""

from __future__ import annotations

from typing import Any

from elevenfactor.governance import Principal

__all__ = ["runs_first", "through_runs"]


def runs_first(principal: Principal) -> bool:
    """Whether ``principal`` sees only its own runs (start from them)."""
    if principal.unscoped or principal.is_admin:
        return False
    return not (principal.team_shares and principal.team_id is not None)


def through_runs(
    principal: Principal, table: str, alias: str, *, org_column: bool
) -> tuple[str, str, list[Any]]:
    """``(FROM clause, WHERE condition, parameters)`` selecting the rows of ``table`` (as
    ``alias``, with a ``run_id`` column; ``org_column``: it has its run's ``org_id`` too) whose
    run ``principal`` may read. The FROM clause names ``runs`` as ``r`` unless an admin reads a
    table with ``org_id``."""
    if principal.unscoped:
        return f"{table} {alias}", "1 = 1", []
    if principal.is_admin and org_column:
        return f"{table} {alias}", f"{alias}.org_id = ?", [principal.org_id]
    scope, params = principal.scope("r")
    if runs_first(principal):
        return f"runs r CROSS JOIN {table} {alias}", f"{alias}.run_id = r.id AND {scope}", params
    if org_column:  # the child's (org_id, created_at) index first
        scope, params = f"{alias}.org_id = ? AND {scope}", [principal.org_id, *params]
    # A CROSS JOIN here too: without planner statistics SQLite would start from the
    # organisation's runs (all of them) and probe the child per run (2 s instead of 40 ms for
    # the guard steps of 30 days with 100k runs, bench/ui).
    return f"{table} {alias} CROSS JOIN runs r", f"r.id = {alias}.run_id AND {scope}", params
