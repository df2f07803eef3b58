"""Which ``run_feedback`` rows a principal may read, as SQL that reads them from one index
range each, with no join to ``runs``.

A row's run decides who may read it (``Principal.scope`` on the run: an admin its
organisation's, a member its own runs and, where its team shares, its team's). The row carries
what that needs: ``org_id`` (m022) and the run's owner, ``run_user_id`` and ``run_team_id``
(m032, NULL unless the run is in the row's organisation). So:

- an admin reads ``org_id = ?`` (m030's ``run_feedback_quality``, by time);
- a member ``org_id = ? AND run_user_id = ?`` (m032's ``run_feedback_owner``);
- a member of a sharing team the union of two disjoint parts — the team's runs
  (``run_team_id = ?``, ``run_feedback_team``) and its own runs outside the team (a run it
  made in another team, or in none), each one index range: a single condition with an ``OR``
  would leave SQLite, which has no planner statistics here, walking the whole organisation.

Before m032 a sharing team's member joined each of its organisation's rows of the range to
its run: the quality page's feedback averages and online totals took ~30-45 ms each, the page
~75 ms at the median on SQLite and ~95-130 on PostgreSQL (``bench/ui``: 100k runs, 20k
feedback rows); read this way ~3-5 ms each, the page ~23 and ~30 ms.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from elevenfactor.governance import Principal

__all__ = ["feedback_parts", "scoped_feedback"]


def feedback_parts(principal: Principal, alias: str = "f") -> list[tuple[str, list[Any]]]:
    """Disjoint conditions (with their parameters) on ``run_feedback`` as ``alias`` whose
    union is the rows of the runs ``principal`` may read: one, or two for a member of a
    sharing team. ``1 = 1`` for the system (every row)."""
    a = f"{alias}."
    if principal.unscoped:
        return [("1 = 1", [])]
    if principal.is_admin:
        return [(f"{a}org_id = ?", [principal.org_id])]
    own = f"{a}org_id = ? AND {a}run_user_id = ?"
    mine: list[Any] = [principal.org_id, principal.user_id]
    if not (principal.team_shares and principal.team_id is not None):
        return [(own, mine)]
    team = principal.team_id
    return [
        (f"{a}org_id = ? AND {a}run_team_id = ?", [principal.org_id, team]),
        (f"{own} AND ({a}run_team_id IS NULL OR {a}run_team_id <> ?)", [*mine, team]),
    ]


def scoped_feedback(
    principal: Principal,
    columns: Sequence[str],
    where: str = "1 = 1",
    params: Sequence[Any] = (),
    *,
    each: str = "",
    each_params: Sequence[Any] = (),
) -> tuple[str, str, list[Any]]:
    """``(FROM item, WHERE condition, parameters)`` reading the ``run_feedback`` rows (as
    ``f``) of the runs ``principal`` may read that meet ``where`` (on ``f``, with
    ``params``).

    With one part (an admin, a member on its own) the item is the table and the condition
    holds the scope. With two, the item is a ``UNION ALL`` of a subquery per part selecting
    ``columns`` (names, read as ``f.<name>`` outside), each ending with ``each`` (with
    ``each_params``; an ``ORDER BY ... LIMIT ?`` lets each part stop early), and the
    condition is ``1 = 1``. The parameters are the item's then the condition's: pass the
    caller's own after them."""
    parts = feedback_parts(principal)
    if len(parts) == 1:
        scope, args = parts[0]
        return "run_feedback f", f"{scope} AND {where}", [*args, *params]
    names = ", ".join(f"f.{c} AS {c}" for c in columns)
    branches, values = [], []
    for i, (scope, args) in enumerate(parts):
        branch = f"SELECT {names} FROM run_feedback f WHERE {scope} AND {where}{each}"
        branches.append(f"SELECT * FROM ({branch}) p{i}")
        values += [*args, *params, *each_params]
    return f"({' UNION ALL '.join(branches)}) f", "1 = 1", values
