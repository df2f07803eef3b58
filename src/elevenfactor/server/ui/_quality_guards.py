"""Guard trip rates for the quality page: how often each guard policy's rule tripped (any
action but ``allow``), over what was checked, in gateway calls and in runs.

- Gateway calls: ``model_calls.guard`` (m020) holds the verdicts of a call checked by a guard
  policy (``{"policies": [...], "verdicts": [{"stage", "action", "policy", "rule", ...}]}``,
  compact JSON). Checked = the calls with a guard record; trips = their verdicts whose action is
  not ``allow``. Calls that tripped are found with ``TRIP_SQL`` (a text test on the record, which
  the partial index ``model_calls_guard_trips`` of m030 serves), then read in Python.
- Runs: every guard check of an agent is a journaled step of kind ``guard`` whose output is
  its verdict record (``stage``, ``action``, ``policy``, ``rule``). Checked = the guard steps
  in the range; trips = those whose action is not ``allow``. The partial indexes
  ``journal_guard_steps`` (by time) and ``journal_guard_runs`` (by run) of m030 serve the two
  join orders of ``_owned.through_runs``.

Both read the newest ``MAX_ROWS`` rows at most: beyond that the counts are of that sample, and
the page says so. Owner scopes are in the queries (the call's owner; the run's owner).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import orjson

from elevenfactor.governance import Principal
from elevenfactor.server.ui._owned import through_runs
from elevenfactor.server.ui._ranges import TimeRange
from elevenfactor.store import Store

__all__ = ["MAX_ROWS", "TRIP_SQL", "GuardRate", "GuardRates", "guard_rates"]

MAX_ROWS = 5000
"""Rows read at most per source (the newest)."""
_TRIPPING = ("block", "escalate", "redact", "monitor")
TRIP_SQL = "(" + " OR ".join(f'guard LIKE \'%"action":"{a}"%\'' for a in _TRIPPING) + ")"
"""The test that finds the guard records of calls with a verdict other than ``allow``: the
same text as the predicate of the partial index ``model_calls_guard_trips`` (m030), so that
both dialects' planners use the index."""


@dataclass(frozen=True, slots=True)
class GuardRate:
    """Trips of one rule of one policy at one stage and action, over what was checked."""

    source: str
    policy: str
    rule: str
    stage: str
    action: str
    trips: int
    checked: int

    @property
    def rate(self) -> float:
        """Trips over checks."""
        return self.trips / self.checked if self.checked else 0.0


@dataclass(frozen=True, slots=True)
class GuardRates:
    """The rules that tripped (most trips first), what was checked per source, and the times
    of the trips (for the chart) by rule."""

    rates: list[GuardRate]
    checked: dict[str, int]
    tripped: dict[str, int]
    """Checks (calls, guard steps) with at least one trip, per source."""
    sampled: dict[str, bool]
    """Whether a source hit ``MAX_ROWS`` (its counts are of the newest rows only)."""
    times: list[tuple[float, str]]


def _trips(record: Any) -> list[tuple[str, str, str, str]]:
    """``(policy, rule, stage, action)`` of each verdict of a record that tripped."""
    verdicts = record.get("verdicts") if isinstance(record, dict) else None
    items = verdicts if isinstance(verdicts, list) else [record]
    out = []
    for v in items:
        if isinstance(v, dict) and v.get("action") not in (None, "allow"):
            out.append((str(v.get("policy") or "?"), str(v.get("rule") or "?"),
                        str(v.get("stage") or "?"), str(v.get("action"))))  # fmt: skip
    return out


def _load(raw: Any) -> Any:
    try:
        return orjson.loads(bytes(raw) if not isinstance(raw, str) else raw)
    except (orjson.JSONDecodeError, TypeError):
        return None


async def _gateway(
    store: Store, principal: Principal, span: TimeRange
) -> tuple[int, list[tuple[float, Any]], bool]:
    scope, params = principal.scope("c")
    where = f"{scope} AND c.created_at >= ? AND c.created_at < ? AND c.guard IS NOT NULL"
    args = [*params, span.since, span.until]
    row = await store.fetchone(f"SELECT COUNT(*) FROM model_calls c WHERE {where}", args)
    checked = int(row[0]) if row else 0
    rows = await store.fetchall(
        f"SELECT c.created_at, c.guard FROM model_calls c WHERE {where}"
        f" AND {TRIP_SQL.replace('guard LIKE', 'c.guard LIKE')}"
        " ORDER BY c.created_at DESC LIMIT ?",
        (*args, MAX_ROWS),
    )
    return checked, [(float(t), _load(g)) for t, g in rows], len(rows) >= MAX_ROWS


async def _runs(
    store: Store, principal: Principal, span: TimeRange
) -> tuple[int, list[tuple[float, Any]], bool]:
    source, scope, params = through_runs(principal, "journal", "j", org_column=False)
    rows = await store.fetchall(
        f"SELECT j.created_at, COALESCE(j.output, b.content) FROM {source}"
        " LEFT JOIN blobs b ON j.output IS NULL AND b.hash = j.output_hash"
        f" WHERE {scope} AND j.kind = 'guard' AND j.created_at >= ? AND j.created_at < ?"
        " ORDER BY j.created_at DESC LIMIT ?",
        (*params, span.since, span.until, MAX_ROWS),
    )
    found = [(float(t), _load(out)) for t, out in rows if out is not None]
    return len(rows), found, len(rows) >= MAX_ROWS


async def guard_rates(store: Store, principal: Principal, span: TimeRange) -> GuardRates:
    """Guard trips per source, policy, rule, stage and action in ``span``, over what was
    checked (see the module docstring)."""
    checked: dict[str, int] = {}
    tripped: dict[str, int] = {}
    sampled: dict[str, bool] = {}
    counts: Counter[tuple[str, str, str, str, str]] = Counter()
    times: list[tuple[float, str]] = []
    for source, read in (("gateway", _gateway), ("runs", _runs)):
        n, records, full = await read(store, principal, span)
        checked[source], sampled[source], tripped[source] = n, full, 0
        for at, record in records:
            trips = _trips(record)
            if trips:
                tripped[source] += 1
            for policy, rule, stage, action in trips:
                counts[(source, policy, rule, stage, action)] += 1
                times.append((at, f"{policy} {rule}"))
    rates = [
        GuardRate(source, policy, rule, stage, action, n, checked[source])
        for (source, policy, rule, stage, action), n in counts.items()
    ]
    rates.sort(key=lambda r: (-r.trips, r.source, r.policy, r.rule, r.stage, r.action))
    return GuardRates(rates, checked, tripped, sampled, times)
