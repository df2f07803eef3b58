"""Guard trip rates for the quality page: how often each guard policy's rule tripped (any
action but ``allow``), over what was checked, in gateway calls and in runs — counted by the
database, one statement per source; Python only adds up a few hundred grouped rows.

- Gateway calls: ``model_calls.guard`` (m020) holds the verdicts of a call checked by a guard
  policy (``{"policies": [...], "verdicts": [{"stage", "action", "policy", "rule", ...}]}``,
  compact JSON, one verdict per stage). Checked = the calls with a guard record; trips = their
  verdicts whose action is not ``allow``, looked for only in the calls whose record names such
  an action (``TRIP_SQL``, a few percent). Both come from m030's partial indexes
  (``model_calls_guarded*``, ``model_calls_guard_trips*``). Decoding a record costs ~10 µs, so
  the newest ``MAX_TRIP_CALLS`` calls that tripped are read at most: beyond that both counts
  are of the calls after the oldest one read (``GuardRates.since``), and the page says so.
- Runs: every guard check of an agent is a journaled step of kind ``guard`` whose output is
  one verdict record (``action``, ``policy``, ``rule``, ``stage``; ``items`` and ``findings``
  under it) as canonical JSON: inline bytes, or in ``blobs`` by hash when large, or NULL once
  erased (checked, not tripped). ``journal`` has no owner columns, so the steps are those of
  the runs the principal may read that started in the range (within it): the newest
  ``MAX_RUNS`` of them at most, each probed by ``journal_guard_runs`` (checked) and
  ``journal_guard_trips`` (the steps whose output does not start ``{"action":"allow"``:
  ``MAY_TRIP``, only these are decoded). Beyond the cap the counts are of the runs started
  after the oldest one read. Counting every step of a 30-day range instead joins each of
  ~200k steps to its run: ~300 ms.

The owner scopes are in the queries (the call's owner; the run's owner). JSON is read with
SQLite's ``json_each``/``json_extract``/``->>`` (on text) and PostgreSQL's
``jsonb_array_elements``/``->``/``->>``; each dialect's spelling is in ``_Dialect``.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass
from typing import Any

import orjson

from elevenfactor.governance import Principal
from elevenfactor.server.ui._ranges import TimeRange
from elevenfactor.store import Store

__all__ = [
    "MAX_RUNS",
    "MAX_TRIP_CALLS",
    "MAY_TRIP",
    "SOURCES",
    "TRIP_SQL",
    "GuardRate",
    "GuardRates",
    "bucket_key",
    "bucket_seconds",
    "guard_rates",
]

MAX_TRIP_CALLS = 500
"""Gateway calls with a tripped verdict read at most (the newest)."""
MAX_RUNS = 500
"""Runs whose guard steps are read at most (the newest)."""
SOURCES = ("gateway", "runs")
_TRIPPING = ("block", "escalate", "redact", "monitor")
TRIP_SQL = (
    "(" + " OR ".join(f"replace(guard, '\"action\":\"{a}\"', '') <> guard" for a in _TRIPPING) + ")"
)
"""The test that finds the guard records of calls with a verdict other than ``allow`` (they
name its action): the same text as the predicate of the partial indexes
``model_calls_guard_trips`` and ``model_calls_guard_trips_user`` (m030), so that both dialects'
planners use them."""
_FIELDS = ("action", "policy", "rule", "stage")
_PATHS = ", ".join(f"'$.{f}'" for f in _FIELDS)


def bucket_seconds(span: TimeRange) -> int:
    """The width of the trip chart's buckets for ``span``: hours up to two days, else days."""
    return 3600 if span.span <= 2 * 86400 else 86400


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
    """The rules that tripped (most trips first), what was checked per source, and the trips
    per chart bucket by rule."""

    rates: list[GuardRate]
    checked: dict[str, int]
    tripped: dict[str, int]
    """Checks (calls, guard steps) with at least one trip, per source."""
    since: dict[str, float | None]
    """Per source, None when its counts cover the whole range, else the time after which they
    do (the oldest call or step read: the cap was reached)."""
    timeline: list[tuple[float, str, int]]
    """``(bucket start, "policy rule", trips)``; buckets are ``bucket_seconds`` wide (UTC)."""

    @property
    def sampled(self) -> dict[str, bool]:
        """Whether a source's counts are of its newest rows only."""
        return {source: cut is not None for source, cut in self.since.items()}


@dataclass(frozen=True, slots=True)
class _Dialect:
    """What differs between the dialects: decoding JSON, iterating an array, bucketing time,
    spelling a byte string."""

    name: str

    @property
    def sqlite(self) -> bool:
        """Whether this is SQLite (else PostgreSQL)."""
        return self.name == "sqlite"

    def doc(self, column: str, binary: bool) -> str:
        """``column`` (TEXT, or bytes when ``binary``) as a JSON document."""
        if self.sqlite:
            return f"CAST({column} AS TEXT)" if binary else column
        return f"convert_from({column}, 'UTF8')::jsonb" if binary else f"{column}::jsonb"

    def valid(self, doc: str) -> str:
        """A test that skips malformed JSON (SQLite; on PostgreSQL the cast checks it)."""
        return f"json_valid({doc})" if self.sqlite else "TRUE"

    def key(self, doc: str) -> str:
        """``[action, policy, rule, stage]`` of the verdict ``doc``, as one JSON array (one
        parse of ``doc`` on SQLite)."""
        if self.sqlite:
            return f"json_extract({doc}, {_PATHS})"
        return "jsonb_build_array(" + ", ".join(f"{doc} -> '{f}'" for f in _FIELDS) + ")"

    def verdicts(self, doc: str) -> str:
        """A table of the elements of ``doc``'s ``verdicts`` array (column ``value``)."""
        if self.sqlite:
            return f"json_each({doc}, '$.verdicts') v"
        items = f"{doc} -> 'verdicts'"
        return (
            f"jsonb_array_elements(CASE jsonb_typeof({items}) WHEN 'array' THEN {items}"
            " ELSE '[]'::jsonb END) v"
        )

    @property
    def no_key(self) -> str:
        """A NULL of the verdict key's type."""
        return "NULL" if self.sqlite else "NULL::jsonb"

    def bucket(self, column: str, width: int) -> str:
        """The start of ``column``'s bucket of ``width`` seconds."""
        if self.sqlite:
            return f"CAST({column} / {width} AS INTEGER) * {width}"
        return f"FLOOR({column} / {width}) * {width}"

    def indexed_by(self, indexes: tuple[str, str] | None, which: int) -> str:
        """SQLite's ``INDEXED BY`` clause naming ``indexes[which]`` (nothing elsewhere)."""
        return f" INDEXED BY {indexes[which]}" if self.sqlite and indexes else ""

    def may_trip(self, alias: str) -> str:
        """The guard steps whose output may hold a trip: word for word the predicate of the
        partial index ``journal_guard_trips`` (m030), so that both planners use it."""
        return MAY_TRIP.format(j=alias, blob="BLOB" if self.sqlite else "BYTEA")


MAY_TRIP = (
    "{j}.kind = 'guard' AND ({j}.output IS NULL"
    ' OR substr({j}.output, 1, 17) <> CAST(\'{{"action":"allow"\' AS {blob}))'
)
"""A guard step's output is its verdict record as canonical JSON (sorted keys), so one that
allowed starts with ``{"action":"allow"``; every other step may hold a trip (or its output is
in ``blobs``, or erased). The index keeps only those (a few percent of the guard steps)."""
_WINDOW = (
    "SELECT COUNT(*) AS n, MIN(at) AS cut, CASE WHEN COUNT(*) >= ? THEN MIN(at) ELSE ? END AS lo,"
    " CASE WHEN COUNT(*) >= ? THEN MIN(at) ELSE ? - 1 END AS gt"
)
"""The time the counts cover, from the rows read (``at``): all of the range (from ``lo`` =
its start) when fewer than the cap (the first parameter) were read, else only after the oldest
read (``gt``), so that a tie with the oldest is all in or all out. Parameters: the cap, the
range's start, the cap, the range's start."""
_TRIP = "(t.k ->> 0) IS NOT NULL AND (t.k ->> 0) <> 'allow'"


def _gateway_sql(d: _Dialect, scope: str, width: int, indexes: tuple[str, str] | None) -> str:
    """The verdicts of the newest calls that tripped: a row ``(0, read, oldest read)``, a row
    ``(1, calls that tripped)``, a row per bucket and verdict key ``(2, verdicts, bucket,
    key)`` (allowed verdicts of those calls too: the caller skips them) and a row ``(3, calls
    checked)`` in the same time (from the partial indexes ``model_calls_guarded*``)."""
    return (
        "WITH m AS MATERIALIZED (SELECT c.id AS id, c.created_at AS at,"
        f" {d.doc('c.guard', binary=False)} AS doc FROM model_calls c"
        f"{d.indexed_by(indexes, 0)}"
        f" WHERE {scope} AND c.created_at >= ? AND c.created_at < ? AND c.guard IS NOT NULL"
        f" AND {TRIP_SQL.replace('guard', 'c.guard')}"
        " ORDER BY c.created_at DESC LIMIT ?),"
        f" w AS ({_WINDOW} FROM m),"
        f" t AS (SELECT m.id AS id, {d.bucket('m.at', width)} AS b, {d.key('v.value')} AS k"
        f" FROM m CROSS JOIN {d.verdicts('m.doc')}"
        f" WHERE m.at > (SELECT gt FROM w) AND {d.valid('m.doc')})"
        f" SELECT 0, w.n, w.cut, {d.no_key} FROM w"
        f" UNION ALL SELECT 1, COUNT(DISTINCT t.id), NULL, NULL FROM t WHERE {_TRIP}"
        " UNION ALL SELECT 2, COUNT(*), t.b, t.k FROM t GROUP BY t.b, t.k"
        f" UNION ALL SELECT 3, COUNT(*), NULL, NULL FROM model_calls c{d.indexed_by(indexes, 1)}"
        f" WHERE {scope}"
        " AND c.guard IS NOT NULL AND c.created_at >= (SELECT lo FROM w)"
        " AND c.created_at > (SELECT gt FROM w) AND c.created_at < ?"
    )


def _runs_sql(d: _Dialect, scope: str, width: int) -> str:
    """The guard steps of the newest runs: a row ``(0, runs read, oldest read)``, a row ``(1,
    steps checked)`` and, from their steps that may have tripped, a row per bucket and verdict
    key ``(2, steps, bucket, key)`` (the caller skips the ones that allowed)."""
    doc = d.doc("COALESCE(x.o, b.content)", binary=True)
    return (
        f"WITH s AS (SELECT r.id AS id, r.created_at AS at FROM runs r WHERE {scope}"
        " AND r.created_at >= ? AND r.created_at < ? ORDER BY r.created_at DESC LIMIT ?),"
        f" w AS ({_WINDOW} FROM s),"
        " e AS (SELECT s.id AS id FROM s WHERE s.at > (SELECT gt FROM w)),"
        " x AS (SELECT j.created_at AS at, j.output AS o, j.output_hash AS h"
        f" FROM e CROSS JOIN journal j WHERE j.run_id = e.id AND {d.may_trip('j')}"
        " AND j.created_at >= ? AND j.created_at < ?),"
        f" y AS MATERIALIZED (SELECT x.at AS at, {doc} AS doc FROM x"
        " LEFT JOIN blobs b ON x.o IS NULL AND b.hash = x.h),"
        f" t AS (SELECT {d.bucket('y.at', width)} AS b, {d.key('y.doc')} AS k FROM y"
        f" WHERE y.doc IS NOT NULL AND {d.valid('y.doc')})"
        f" SELECT 0, w.n, w.cut, {d.no_key} FROM w"
        " UNION ALL SELECT 1, COUNT(*), NULL, NULL FROM e CROSS JOIN journal j"
        " WHERE j.run_id = e.id AND j.kind = 'guard' AND j.created_at >= ? AND j.created_at < ?"
        " UNION ALL SELECT 2, COUNT(*), t.b, t.k FROM t GROUP BY t.b, t.k"
    )


def _window(cap: int, span: TimeRange) -> tuple[Any, ...]:
    return (cap, span.since, cap, span.since)


def _indexes(who: Principal) -> tuple[str, str] | None:
    """The partial indexes of tripped and of checked calls to read ``who``'s from. SQLite,
    with no statistics, is told (``INDEXED BY``): left to itself it would rather walk all of
    a member's calls by ``model_calls_owner``."""
    if who.unscoped:
        return None
    if who.is_admin or (who.team_shares and who.team_id is not None):
        return "model_calls_guard_trips", "model_calls_guarded"
    return "model_calls_guard_trips_user", "model_calls_guarded_user"


def _gateway_query(dialect: str, who: Principal, span: TimeRange) -> tuple[str, list[Any]]:
    scope, params = who.scope("c")
    sql = _gateway_sql(_Dialect(dialect), scope, bucket_seconds(span), _indexes(who))
    window = _window(MAX_TRIP_CALLS, span)
    return sql, [*params, span.since, span.until, MAX_TRIP_CALLS, *window, *params, span.until]


def _runs_query(dialect: str, who: Principal, span: TimeRange) -> tuple[str, list[Any]]:
    scope, params = who.scope("r")
    sql = _runs_sql(_Dialect(dialect), scope, bucket_seconds(span))
    steps = [span.since, span.until]
    return sql, [*params, *steps, MAX_RUNS, *_window(MAX_RUNS, span), *steps, *steps]


def _label(value: Any) -> str:
    return str(value or "?")


async def guard_rates(store: Store, principal: Principal, span: TimeRange) -> GuardRates:
    """Guard trips per source, policy, rule, stage and action in ``span``, over what was
    checked, and per chart bucket (see the module docstring)."""
    gateway = await store.fetchall(*_gateway_query(store.dialect, principal, span))
    runs = await store.fetchall(*_runs_query(store.dialect, principal, span))
    rows = {"gateway": gateway, "runs": runs}
    checked: dict[str, int] = {}
    tripped: dict[str, int] = {"gateway": 0, "runs": 0}
    since: dict[str, float | None] = {}
    counts: Counter[tuple[str, str, str, str, str]] = Counter()
    timeline: Counter[tuple[float, str]] = Counter()
    for name, cap in (("gateway", MAX_TRIP_CALLS), ("runs", MAX_RUNS)):
        for kind, n, bucket, key in rows[name]:
            if kind == 0:
                since[name] = float(bucket) if int(n) >= cap else None
            elif kind == 1:  # gateway: the calls that tripped; runs: the steps checked
                (tripped if name == "gateway" else checked)[name] = int(n)
            elif kind == 3:  # gateway: the calls checked
                checked[name] = int(n)
            else:
                action, policy, rule, stage = orjson.loads(key) if isinstance(key, str) else key
                if action in (None, "allow"):
                    continue
                trip = (name, _label(policy), _label(rule), _label(stage), str(action))
                counts[trip] += int(n)
                timeline[(float(bucket), f"{trip[1]} {trip[2]}")] += int(n)
                if name == "runs":  # one verdict per step
                    tripped[name] += int(n)
    rates = [
        GuardRate(source, policy, rule, stage, action, n, checked[source])
        for (source, policy, rule, stage, action), n in counts.items()
    ]
    rates.sort(key=lambda r: (-r.trips, r.source, r.policy, r.rule, r.stage, r.action))
    line = [(at, rule, n) for (at, rule), n in sorted(timeline.items())]
    checked = {name: checked[name] for name in SOURCES}
    return GuardRates(rates, checked, tripped, since, line)


def bucket_key(at: float, width: int) -> str:
    """The chart's key of the bucket starting at ``at`` (``_ranges.bucket_keys`` spelling)."""
    fmt = "%Y-%m-%dT%H:00" if width == 3600 else "%Y-%m-%d"
    return dt.datetime.fromtimestamp(at, dt.UTC).strftime(fmt)
