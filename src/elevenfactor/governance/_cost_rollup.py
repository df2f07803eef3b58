"""The cost rollup: hourly and daily sums of ``model_calls`` (m031), for fast cost reports.

``roll_up`` (a housekeeper job) sums every closed hour into ``cost_hourly`` with one
``INSERT ... SELECT ... GROUP BY`` per UTC day of history, one transaction each, and each
completed day into ``cost_daily``; ``cost_rollup_mark`` says through which hour it has done so.
``cost_report`` then reads the whole days and hours of its range that are rolled up from these
tables and only the rest (the partial hours at its edges, and everything after the mark) from
``model_calls``; ``plan`` splits a range so.

**The lag.** A call's row is stamped when the call ends (``CallRecord.created_at``) and written by
the recorder's batch writer within ``CallRecorder.interval`` (50 ms) — unless the store fails, in
which case the writer keeps the rows and retries them, so they arrive late with their old stamp
(and a process whose clock runs behind stamps its calls in the past). An hour is rolled up only
once it ended ``LAG`` (an hour) ago, which covers an outage (or a clock skew) of up to an hour.
For rows later than that, each run also compares the number of calls of the last ``RECHECK``
rolled-up hours with ``model_calls`` and rebuilds an hour (and its day) whose count changed: a
call up to a day late is still counted. Later than that it is missed by the reports' rolled-up
part until the hour is rebuilt (``rebuild``).

**Concurrency.** Every transaction of the job first reads the mark locked (``FOR UPDATE`` on
PostgreSQL, where a second process waits and then sees the moved mark; a SQLite transaction is
``BEGIN IMMEDIATE``, exclusive) and moves it in the same transaction as the rows it wrote, so
no hour is rolled up twice however many processes run it.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass

from elevenfactor.errors import StoreError
from elevenfactor.store import Executor, Store

__all__ = [
    "CALL_FIGURES",
    "DAILY",
    "DAY",
    "HOUR",
    "HOURLY",
    "LAG",
    "RECHECK",
    "ROLLED_UP",
    "ROLLUP_FIGURES",
    "Span",
    "Tier",
    "period_sql",
    "plan",
    "read_mark",
    "rebuild",
    "roll_up",
]

HOUR = 3600
DAY = 86400
LAG = 3600.0
"""Seconds after its end before an hour is rolled up (see the module docstring)."""
RECHECK = 24
"""Rolled-up hours (the latest) whose call counts each run compares with ``model_calls``."""
_ANALYZE_AFTER = 10_000  # rows written by one run after which PostgreSQL re-plans with new stats

ROLLED_UP = frozenset(
    ("org", "team", "user", "key", "agent", "route", "model", "provider", "tag", "status", "kind")
)
"""The report's dimensions the rollup keeps (not ``run`` nor ``session``)."""

_KEYS = (
    "org_id, team_id, user_id, api_key_id, agent, route, deployment, provider, tags, status, kind"
)
_C_KEYS = ", ".join(f"c.{k.strip()}" for k in _KEYS.split(","))
_FIGURE_COLUMNS = (
    "calls",
    "errors",
    "tokens_in",
    "tokens_out",
    "tokens_cached",
    "cost",
    "saved",
    "unpriced",
)
CALL_FIGURES = (
    "COUNT(*)",
    "SUM(CASE WHEN c.status = 'ok' THEN 0 ELSE 1 END)",
    "COALESCE(SUM(c.tokens_in), 0)",
    "COALESCE(SUM(c.tokens_out), 0)",
    "COALESCE(SUM(c.tokens_cached), 0)",
    "COALESCE(SUM(c.cost), 0)",
    "COALESCE(SUM(c.saved), 0)",
    "SUM(CASE WHEN c.cost IS NULL AND c.status = 'ok' THEN 1 ELSE 0 END)",
)
"""The report's figures over ``model_calls c``, in ``_FIGURE_COLUMNS`` order."""
ROLLUP_FIGURES = tuple(f"SUM(c.{f})" for f in _FIGURE_COLUMNS)
"""The same figures over a rollup table ``c``."""
_GROUP = "GROUP BY " + ", ".join(str(i) for i in range(1, 13))


@dataclass(frozen=True, slots=True)
class Tier:
    """A rollup table: its time column counts ``unit``-second periods since the epoch."""

    table: str
    column: str
    unit: int


HOURLY = Tier("cost_hourly", "hour", HOUR)
DAILY = Tier("cost_daily", "day", DAY)


@dataclass(frozen=True, slots=True)
class Span:
    """Part of a report's range, ``[lo, hi)`` in epoch seconds (None: unbounded), read from
    ``tier`` (a multiple of its unit at both ends) or, when ``tier`` is None, from
    ``model_calls``."""

    tier: Tier | None
    lo: float | None
    hi: float | None


def period_sql(tier: Tier | None, unit: int, dialect: str) -> str:
    """The ``unit``-second period (since the epoch, UTC) of a row of ``tier`` (``model_calls``
    for None) aliased ``c``: a call's hour (or day) is the same whichever it is read from.
    ``unit`` is a multiple of the tier's."""
    if tier is not None:
        ratio = unit // tier.unit
        return f"c.{tier.column}" if ratio == 1 else f"c.{tier.column} / {ratio}"
    if dialect == "sqlite":
        return f"CAST(c.created_at AS INTEGER) / {unit}"
    return f"CAST(floor(c.created_at) AS BIGINT) / {unit}"


def _ceil(x: float, unit: int) -> int:
    """The least multiple of ``unit`` at or after ``x`` (exactly, whatever float rounding)."""
    n = math.ceil(x / unit)
    while (n - 1) * unit >= x:
        n -= 1
    while n * unit < x:
        n += 1
    return n * unit


def _floor(x: float, unit: int) -> int:
    """The greatest multiple of ``unit`` at or before ``x``."""
    n = math.floor(x / unit)
    while n * unit > x:
        n -= 1
    while (n + 1) * unit <= x:
        n += 1
    return n * unit


def plan(
    since: float | None, until: float | None, mark: int | None, tiers: tuple[Tier, ...]
) -> list[Span]:
    """``[since, until)`` as spans: the whole periods of each of ``tiers`` (coarsest first)
    through the hour ``mark`` from that tier, the rest from ``model_calls``."""
    if mark is None:
        return [Span(None, since, until)]
    return _split(since, until, (mark + 1) * HOUR, tiers)


def _split(lo: float | None, hi: float | None, done: int, tiers: tuple[Tier, ...]) -> list[Span]:
    if lo is not None and hi is not None and lo >= hi:
        return []
    if not tiers:
        return [Span(None, lo, hi)]
    tier, finer = tiers[0], tiers[1:]
    start = None if lo is None else _ceil(lo, tier.unit)
    end = _floor(done if hi is None else min(hi, done), tier.unit)
    if start is not None and start >= end:
        return _split(lo, hi, done, finer)
    head = [] if lo is None or start is None else _split(lo, start, done, finer)
    return [*head, Span(tier, start, end), *_split(end, hi, done, finer)]


async def read_mark(db: Executor) -> int | None:
    """The hour through which every call is rolled up (None: nothing is)."""
    row = await db.fetchone("SELECT hour FROM cost_rollup_mark WHERE id = 1")
    return None if row is None or row[0] is None else int(row[0])


async def _lock_mark(tx: Executor, dialect: str) -> int | None:
    lock = " FOR UPDATE" if dialect == "postgresql" else ""
    row = await tx.fetchone(f"SELECT hour FROM cost_rollup_mark WHERE id = 1{lock}")
    if row is None:
        raise StoreError(
            "cost_rollup_mark has no row", hint="run `elevenfactor migrate` (m031_cost_rollup)"
        )
    return None if row[0] is None else int(row[0])


async def _set_mark(tx: Executor, hour: int) -> None:
    await tx.execute(
        "UPDATE cost_rollup_mark SET hour = ?, updated_at = ? WHERE id = 1", (hour, time.time())
    )


async def _hours(tx: Executor, dialect: str, lo: int, hi: int) -> int:
    """Sum the calls of hours ``[lo, hi)`` into ``cost_hourly``; the rows written."""
    return await tx.execute(
        f"INSERT INTO cost_hourly (hour, {_KEYS}, {', '.join(_FIGURE_COLUMNS)})"
        f" SELECT {period_sql(None, HOUR, dialect)}, {_C_KEYS}, {', '.join(CALL_FIGURES)}"
        f" FROM model_calls c WHERE c.created_at >= ? AND c.created_at < ? {_GROUP}",
        (lo * HOUR, hi * HOUR),
    )


async def _days(tx: Executor, lo: int, hi: int) -> int:
    """Sum the hours of days ``[lo, hi)`` (each rolled up to its end) into ``cost_daily``."""
    return await tx.execute(
        f"INSERT INTO cost_daily (day, {_KEYS}, {', '.join(_FIGURE_COLUMNS)})"
        f" SELECT c.hour / 24, {_C_KEYS}, {', '.join(ROLLUP_FIGURES)} FROM cost_hourly c"
        f" WHERE c.hour >= ? AND c.hour < ? {_GROUP}",
        (lo * 24, hi * 24),
    )


async def roll_up(store: Store, now: float) -> int:
    """Roll up every hour that ended ``LAG`` seconds before ``now`` and is not yet, a UTC day
    per transaction (hours without calls are skipped); rebuild the recent hours that gained
    calls since (``RECHECK``). Returns the rows written to ``cost_hourly`` and ``cost_daily``."""
    limit = _floor(now - LAG, HOUR) // HOUR  # hours before this one are closed and past the lag
    written = await _recheck(store)
    while True:
        async with store.transaction() as tx:
            step = await _step(tx, store.dialect, await _lock_mark(tx, store.dialect), limit)
        if step is None:
            if written >= _ANALYZE_AFTER and store.dialect == "postgresql":
                # Fresh statistics now rather than at autovacuum's next visit: without them the
                # planner sorts a month of rows (to disk) where a hash aggregate would do.
                await store.execute("ANALYZE cost_hourly, cost_daily")
            return written
        written += step
        await asyncio.sleep(0)  # a long history: let the loop serve between two days


async def _step(tx: Executor, dialect: str, mark: int | None, limit: int) -> int | None:
    """Roll up the hours after ``mark`` through the end of the first day with calls (or to
    ``limit``, if sooner); the rows written, or None when there is nothing left to do."""
    start = 0 if mark is None else mark + 1
    if start >= limit:
        return None
    row = await tx.fetchone(
        "SELECT MIN(created_at) FROM model_calls WHERE created_at >= ? AND created_at < ?",
        (start * HOUR, limit * HOUR),
    )
    written = 0
    if row is None or row[0] is None:
        end = limit  # no calls up to the limit: nothing to sum, the mark moves on
    else:
        first = int(row[0]) // HOUR
        end = min((first // 24 + 1) * 24, limit)
        written += await _hours(tx, dialect, first, end)
    if end // 24 > start // 24:  # days whose last hour is now rolled up
        written += await _days(tx, start // 24, end // 24)
    await _set_mark(tx, end - 1)
    return written


async def _recheck(store: Store) -> int:
    """Rebuild the latest ``RECHECK`` rolled-up hours whose number of calls changed."""
    async with store.transaction() as tx:
        mark = await _lock_mark(tx, store.dialect)
        if mark is None:
            return 0
        lo = mark + 1 - RECHECK
        calls = await tx.fetchall(
            f"SELECT {period_sql(None, HOUR, store.dialect)}, COUNT(*) FROM model_calls c"
            " WHERE c.created_at >= ? AND c.created_at < ? GROUP BY 1",
            (lo * HOUR, (mark + 1) * HOUR),
        )
        rolled = await tx.fetchall(
            "SELECT hour, SUM(calls) FROM cost_hourly WHERE hour >= ? AND hour <= ? GROUP BY 1",
            (lo, mark),
        )
        now = {int(h): int(n) for h, n in calls}
        then = {int(h): int(n) for h, n in rolled}
        stale = sorted(h for h in now.keys() | then.keys() if now.get(h) != then.get(h))
        return await _rebuild(tx, store.dialect, stale, mark)


async def rebuild(store: Store, since: float, until: float) -> int:
    """Sum the rolled-up hours that overlap ``[since, until)`` again from ``model_calls`` (after
    rows arrived later than ``LAG`` + ``RECHECK`` hours, or were changed); the rows written."""
    async with store.transaction() as tx:
        mark = await _lock_mark(tx, store.dialect)
        if mark is None:
            return 0
        hours = range(_floor(since, HOUR) // HOUR, min(_ceil(until, HOUR) // HOUR, mark + 1))
        return await _rebuild(tx, store.dialect, list(hours), mark)


async def _rebuild(tx: Executor, dialect: str, hours: list[int], mark: int) -> int:
    written = 0
    for lo, hi in _runs(hours):
        await tx.execute("DELETE FROM cost_hourly WHERE hour >= ? AND hour < ?", (lo, hi))
        written += await _hours(tx, dialect, lo, hi)
    for lo, hi in _runs(sorted({h // 24 for h in hours if (h // 24 + 1) * 24 - 1 <= mark})):
        await tx.execute("DELETE FROM cost_daily WHERE day >= ? AND day < ?", (lo, hi))
        written += await _days(tx, lo, hi)
    return written


def _runs(values: list[int]) -> list[tuple[int, int]]:
    """Sorted integers as ``[lo, hi)`` ranges of consecutive ones."""
    out: list[tuple[int, int]] = []
    for v in values:
        if out and out[-1][1] == v:
            out[-1] = (out[-1][0], v + 1)
        else:
            out.append((v, v + 1))
    return out
