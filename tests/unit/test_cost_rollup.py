"""The cost rollup (hourly and daily sums) on SQLite and PostgreSQL: a cost report read partly
from the rollup is the report read from ``model_calls`` alone (random reports over random calls,
for principals of every role), as displayed; the watermark moves by closed hours past the lag
only; concurrent or repeated runs never count a call twice; late calls are counted."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import math
import random
from typing import Any

import pytest

from elevenfactor.errors import RequestError
from elevenfactor.governance import DEFAULT_ORG, DIMENSIONS, Principal, cost_report, local_admin
from elevenfactor.governance._cost import BUCKETS, CostReport
from elevenfactor.governance._cost_rollup import (
    DAILY,
    HOURLY,
    LAG,
    RECHECK,
    plan,
    read_mark,
    rebuild,
    roll_up,
)
from elevenfactor.governance._principal import SYSTEM
from elevenfactor.store import Store, open_store

H = 3600
BASE = dt.datetime(2026, 10, 12, tzinfo=dt.UTC).timestamp()  # a Monday; 40 days cross a month
END = BASE + 40 * 86400
ACME = "org_acme"
_COLS = (
    "id, trace_id, created_at, route, stream, status, tokens_in, tokens_out, latency_ms, cost,"
    " cache_hit, failover_path, org_id, team_id, user_id, api_key_id, run_id, agent, session_id,"
    " deployment, provider, tags, tokens_cached, saved, kind"
)
_USERS: dict[str, tuple[str, str | None, list[str | None]]] = {  # user -> (org, team, keys)
    "ann": (DEFAULT_ORG, "team_red", ["key_ann1", "key_ann2"]),
    "bob": (DEFAULT_ORG, "team_red", ["key_bob"]),
    "cat": (DEFAULT_ORG, "team_blue", ["key_cat"]),
    "dan": (DEFAULT_ORG, None, [None]),
    "eve": (ACME, "team_green", ["key_eve"]),
}
_TAGS = [None, "[]", '["prod"]', '["prod","search"]', '["search"]', '["a\\"b","prod"]']
_MODELS = [("big", "openai"), ("small", "local"), (None, None)]

PRINCIPALS = [
    local_admin("cli"),
    Principal(org_id=ACME, user_id="user_eve", user_name="eve", roles=frozenset({"admin"})),
    Principal(DEFAULT_ORG, "user_ann", "ann", team_id="team_red", team_shares=True),
    Principal(DEFAULT_ORG, "user_cat", "cat", team_id="team_blue"),
    Principal(DEFAULT_ORG, "user_dan", "dan"),
    SYSTEM,
]


async def _people(store: Store) -> None:
    await store.execute("INSERT INTO orgs (id, name, created_at) VALUES (?, 'acme', 0)", (ACME,))
    for team, org, shares in (
        ("team_red", DEFAULT_ORG, 1),
        ("team_blue", DEFAULT_ORG, 0),
        ("team_green", ACME, 0),
    ):
        await store.execute(
            "INSERT INTO teams (id, org_id, name, shares, created_at) VALUES (?, ?, ?, ?, 0)",
            (team, org, team.removeprefix("team_"), shares),
        )
    for name, (org, user_team, keys) in _USERS.items():
        await store.execute(
            "INSERT INTO users (id, org_id, team_id, name, kind, roles, created_at)"
            " VALUES (?, ?, ?, ?, 'user', 'member', 0)",
            (f"user_{name}", org, user_team, name),
        )
        for key in keys:
            if key is not None:
                await store.execute(
                    "INSERT INTO api_keys (id, name, prefix, key_hash, created_at, user_id)"
                    " VALUES (?, ?, ?, ?, 0, ?)",
                    (key, key.removeprefix("key_") + "-laptop", key[-4:], key, f"user_{name}"),
                )


def _when(rng: random.Random) -> float:
    """A time in [BASE, END) outside days 10-13 (a gap), sometimes on or just by an hour."""
    while True:
        at = rng.uniform(BASE, END)
        if rng.random() < 0.15:
            at = BASE + rng.randrange(40 * 24) * H + rng.choice([0.0, -1e-4, -0.6, 0.4])
        if not BASE + 10 * 86400 <= at < BASE + 14 * 86400 and BASE <= at < END:
            return at


def _call(rng: random.Random, i: int, at: float) -> tuple[Any, ...]:
    name = rng.choice(list(_USERS))
    org, team, keys = _USERS[name]
    deployment, provider = rng.choice(_MODELS)
    ok = deployment is not None and rng.random() < 0.85
    priced = ok and deployment == "big" and rng.random() < 0.9
    run = rng.choice([None, None, "run_1", "run_2"])
    return (
        f"c{i:06d}", f"t{i}", at, rng.choice(["default", "fast"]), 0, "ok" if ok else "error",
        rng.randrange(5000), rng.randrange(900), 12.5,
        round(rng.uniform(0, 0.05), 7) if priced else (0.0 if ok and rng.random() < 0.3 else None),
        0, "[]", org, team, f"user_{name}", rng.choice(keys), run,
        rng.choice([None, "support", "triage"]), rng.choice([None, "s-1", "s-2"]),
        deployment, provider, rng.choice(_TAGS), rng.choice([None, 0, rng.randrange(800)]),
        rng.choice([None, 0.0, 0.1, 0.2, 0.3, round(rng.uniform(0, 0.01), 9)]),
        rng.choice([None, None, None, "embedding", "chat"]),
    )  # fmt: skip


async def _insert(store: Store, rows: list[tuple[Any, ...]]) -> None:
    marks = ", ".join("?" for _ in rows[0])
    await store.executemany(f"INSERT INTO model_calls ({_COLS}) VALUES ({marks})", rows)


async def _calls(store: Store, n: int, seed: int) -> random.Random:
    rng = random.Random(seed)
    await _people(store)
    await _insert(store, [_call(rng, i, _when(rng)) for i in range(n)])
    return rng


def _query(rng: random.Random) -> dict[str, Any]:
    dims = [d for d in DIMENSIONS if d not in ("run", "session") or rng.random() < 0.3]
    bounds = [
        None,
        rng.uniform(BASE - 86400, END + 86400),
        BASE + rng.randrange(-24, 41 * 24) * H,
        BASE + rng.randrange(-1, 41) * 86400,
        BASE + rng.randrange(40 * 24) * H + rng.choice([-1e-4, 0.5, 1799.0]),
    ]
    since, until = rng.choice(bounds), rng.choice(bounds)
    values = {
        "org": [DEFAULT_ORG, "acme"], "team": ["team_red", "blue"], "user": ["user_bob", "ann"],
        "key": ["key_ann1", "cat-laptop", "_eve"], "agent": ["support"], "route": ["fast"],
        "model": ["big", "small"], "provider": ["local"], "tag": ["prod", "search", 'a"b'],
        "status": ["ok", "error"], "kind": ["chat", "embedding"], "run": ["run_1"],
        "session": ["s-2"],
    }  # fmt: skip
    filters = {d: rng.choice(values[d]) for d in rng.sample(dims, rng.choice([0, 0, 1, 2]))}
    return {
        "group_by": rng.sample(dims, rng.choice([0, 1, 1, 2, 3])),
        "bucket": rng.choice([None, *BUCKETS]),
        "since": since,
        "until": until,
        "filters": filters,
    }


def _same(got: CostReport, want: CostReport, what: Any) -> None:
    """Equal as displayed (money rounded to 1e-6) and to 1e-9 relative before rounding."""
    if got.to_dict() != want.to_dict():
        a, b = got.to_dict()["data"], want.to_dict()["data"]
        diff = [(x, y) for x, y in zip(a, b, strict=False) if x != y][:3]
        raise AssertionError(f"{what}: {len(a)} vs {len(b)} rows; first differences {diff}")
    for a, b in [(got.totals, want.totals)] + [
        (x.figures, y.figures) for x, y in zip(got.rows, want.rows, strict=True)
    ]:
        assert math.isclose(a.cost, b.cost, rel_tol=1e-9, abs_tol=1e-12), what
        assert math.isclose(a.saved, b.saved, rel_tol=1e-9, abs_tol=1e-12), what


async def _reports(store: Store, queries: list[tuple[Principal, dict[str, Any]]]) -> list[Any]:
    return [await cost_report(store, who, **q) for who, q in queries]


async def _consistent(store: Store) -> None:
    """Every rolled-up hour (and day) holds exactly its calls: none missing, none twice."""
    mark = await read_mark(store)
    assert mark is not None
    row = await store.fetchone(
        "SELECT COUNT(*) FROM model_calls WHERE created_at < ?", ((mark + 1) * H,)
    )
    hourly = await store.fetchone("SELECT SUM(calls) FROM cost_hourly")
    assert row is not None and hourly is not None and int(hourly[0] or 0) == row[0]
    days = (mark + 1) // 24
    row = await store.fetchone(
        "SELECT COUNT(*) FROM model_calls WHERE created_at < ?", (days * 86400,)
    )
    daily = await store.fetchone("SELECT SUM(calls) FROM cost_daily")
    assert row is not None and daily is not None and int(daily[0] or 0) == row[0]


async def test_reports_with_the_rollup_equal_reports_from_the_calls(store: Store) -> None:
    rng = await _calls(store, 1500, seed=31)
    queries = [(rng.choice(PRINCIPALS), _query(rng)) for _ in range(120)]
    raw = await _reports(store, queries)
    assert sum(r.totals.calls for r in raw) > 0
    mid = BASE + 17 * 86400 + 5 * H + 1234.5
    for now in (mid, END + 2 * H):
        assert await roll_up(store, now) > 0
        assert await read_mark(store) == math.floor((now - LAG) / H) - 1
        await _consistent(store)
        for (who, q), want in zip(queries, raw, strict=True):
            _same(await cost_report(store, who, **q), want, (who.user_name, q))


async def test_whole_hours_are_read_from_the_rollup(store: Store) -> None:
    await _calls(store, 400, seed=5)
    await roll_up(store, END + 2 * H)
    admin = local_admin("cli")
    args: dict[str, Any] = {"since": BASE - 0.5, "until": END + 0.5, "bucket": "week"}
    before = await cost_report(store, admin, group_by=["model"], **args)
    by_run = await cost_report(store, admin, group_by=["run"], **args)
    await store.execute("UPDATE model_calls SET cost = cost + 1000 WHERE cost IS NOT NULL")
    # every call is in a whole rolled-up day: the report does not read them again
    assert (await cost_report(store, admin, group_by=["model"], **args)).to_dict() == (
        before.to_dict()
    )
    # ``run`` is not in the rollup: that report reads the calls
    after = await cost_report(store, admin, group_by=["run"], **args)
    assert after.totals.cost > by_run.totals.cost + 1000


async def test_the_mark_moves_by_closed_hours_past_the_lag_and_twice_counts_once(
    store: Store,
) -> None:
    assert await roll_up(store, BASE) == 0  # no calls: the mark moves on all the same
    assert await read_mark(store) == int((BASE - LAG) // H) - 1
    await _people(store)
    rng = random.Random(7)
    now = BASE + 3 * 86400 + 30 * 60  # 00:30 on day 3
    rows = [_call(rng, i, BASE + i * 97.0) for i in range(3000)]  # up to 80 h after BASE
    await _insert(store, rows)
    written = await roll_up(store, now)
    assert written > 0 and await read_mark(store) == int(now // H) - 2  # 22:00 of day 2
    assert await roll_up(store, now) == 0
    assert await roll_up(store, now + 1799) == 0  # 00:59: hour 23 ended less than LAG ago
    await _consistent(store)
    assert await roll_up(store, now + 1800) > 0  # 01:00
    assert await read_mark(store) == int(now // H) - 1
    await _consistent(store)
    assert await store.fetchone("SELECT COUNT(*) FROM cost_daily") != (0,)


async def test_concurrent_runs_roll_each_hour_up_once(store: Store, store_url: str) -> None:
    await _calls(store, 2000, seed=11)
    other = await open_store(store_url)
    try:
        done = await asyncio.gather(
            roll_up(store, END + 2 * H), roll_up(other, END + 2 * H), roll_up(store, END + 2 * H)
        )
    finally:
        await other.close()
    rows = await store.fetchone(
        "SELECT (SELECT COUNT(*) FROM cost_hourly) + (SELECT COUNT(*) FROM cost_daily)"
    )
    assert rows is not None and sum(done) == rows[0] > 0
    await _consistent(store)


async def test_late_calls_are_counted(store: Store) -> None:
    await _people(store)
    rng = random.Random(3)
    admin = SYSTEM  # every organisation's calls
    await _insert(store, [_call(rng, i, BASE + i * 60.0) for i in range(24 * 60 * 3)])
    now = BASE + 2 * 86400 + 1800  # hours up to 22:00 of day 1 are rolled up
    await roll_up(store, now)
    mark = await read_mark(store)
    assert mark == int(now // H) - 2
    n = 10_000
    # within the lag (hour 23 of day 1, not rolled up yet), and after it (hour 20, rolled up)
    late = [_call(rng, n, (mark + 1) * H + 5.0), _call(rng, n + 1, (mark - 2) * H + 5.0)]
    # later than the lag and the recheck: the report misses it until ``rebuild``
    lost = _call(rng, n + 2, (mark - RECHECK - 3) * H + 5.0)
    await _insert(store, [*late, lost])
    await roll_up(store, now + 2 * H)
    raw = await cost_report(store, admin, group_by=["run"], bucket="day")
    rolled = await cost_report(store, admin, group_by=["user"], bucket="day")
    assert rolled.totals.calls == raw.totals.calls - 1
    assert await rebuild(store, lost[2] - 1, lost[2] + 1) > 0
    rolled = await cost_report(store, admin, group_by=["user"], bucket="day")
    assert rolled.totals.calls == raw.totals.calls == 24 * 60 * 3 + 3
    await _consistent(store)


def test_plan_covers_the_range_once_with_whole_periods() -> None:
    rng = random.Random(1)
    for _ in range(2000):
        mark = rng.choice([None, 500_000 + rng.randrange(200)])
        points = [None, 1.8e9 + rng.uniform(-3e5, 3e5), (500_000 + rng.randrange(-48, 240)) * H]
        since, until = rng.choice(points), rng.choice(points)
        tiers = rng.choice([(HOURLY,), (DAILY, HOURLY)])
        spans = plan(since, until, mark, tiers)
        if since is not None and until is not None and since >= until:
            assert all(s.lo is not None and s.hi is not None and s.lo >= s.hi for s in spans)
            continue
        assert spans[0].lo == since and spans[-1].hi == until
        for a, b in itertools.pairwise(spans):
            assert a.hi == b.lo and a.hi is not None
        for s in spans:
            if s.tier is not None:
                assert mark is not None and s.hi is not None and s.hi <= (mark + 1) * H
                assert s.hi % s.tier.unit == 0 and (s.lo is None or s.lo % s.tier.unit == 0)


@pytest.mark.parametrize("when", [math.nan, math.inf, -1e300])
async def test_a_time_that_is_not_epoch_seconds_is_a_request_error(
    store: Store, when: float
) -> None:
    for param in ("since", "until"):
        bad: dict[str, Any] = {param: when}
        with pytest.raises(RequestError) as caught:
            await cost_report(store, local_admin("cli"), group_by=["user"], **bad)
        assert caught.value.param == param and caught.value.code == "invalid_request"
