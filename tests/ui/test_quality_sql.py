"""Guard trip rates counted in SQL (``server.ui._quality_guards``), on both stores, against
the Python way (``quality_sql_world.python_trips``): every principal's figures; gateway calls with
several verdicts per record and every action (allow, monitor, redact, escalate, block, null),
verdicts without a policy or rule; journal guard steps inline (sorted and unsorted JSON,
``check_many`` records), stored in ``blobs`` and erased; the capped reads (``MAX_TRIP_CALLS``,
``MAX_RUNS``) and the window they count; the partial indexes both planners must use; and the
page's top rows, ``show=all`` and what it says about a capped count.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from elevenfactor.server.ui import _pages_quality
from elevenfactor.server.ui import _quality_guards as qg
from elevenfactor.server.ui._ranges import TimeRange
from elevenfactor.store import open_store
from elevenfactor.store.migrations import m030_ui_indexes
from tests.conftest import _pg_schema_url
from tests.ui.quality_sql_world import (
    GATEWAY,
    NOW,
    PEOPLE,
    RUN_STEPS,
    SEEN,
    SPAN,
    World,
    counted,
    expected,
    make_world,
    python_trips,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> World:
    tmp: Path = tmp_path_factory.mktemp(f"quality-sql-{request.param}")
    url = f"sqlite:///{tmp}/test.db" if request.param == "sqlite" else _pg_schema_url(request)
    return make_world(url, tmp)


@pytest.fixture
def client(world: World) -> Iterator[TestClient]:
    with TestClient(world.app, follow_redirects=False) as c:
        yield c


# -- guard trip rates ------------------------------------------------------------------------


@pytest.mark.parametrize("who", PEOPLE)
async def test_guard_counts_match_the_python_way(world: World, who: str) -> None:
    db = await open_store(world.url)
    try:
        principal = world.people[who]
        got = await qg.guard_rates(db, principal, SPAN)
        want = await expected(db, principal, -1.0, -1.0)
    finally:
        await db.close()
    assert got.since == {"gateway": None, "runs": None}
    assert counted(got) == want
    # Every action that trips, several verdicts per record, and the steps the index keeps
    # (blob-stored, unsorted JSON) are in; allow, null, erased and non-guard steps are not.
    actions = {action for (_, _, _, _, action) in want.trips}
    assert actions == {"block", "redact", "escalate", "monitor"}
    assert ("runs", "pol@1", "big", "input", "block") in want.trips
    assert ("runs", "pol@1", "order", "input", "block") in want.trips
    assert ("gateway", "?", "?", "input", "block") in want.trips
    assert not {k for k in want.trips if k[2] in ("gone", "not-a-guard", "odd")}
    calls = [g for g in GATEWAY if g is not None]
    tripping = sum(bool(python_trips(g)) for g in calls)
    assert want.checked == {"gateway": len(calls) * SEEN[who], "runs": len(RUN_STEPS) * SEEN[who]}
    assert want.tripped == {"gateway": tripping * SEEN[who], "runs": 6 * SEEN[who]}


async def test_capped_reads_count_the_same_window(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With fewer calls or runs allowed than there are, the counts are those after the oldest
    one read, both what tripped and what was checked."""
    monkeypatch.setattr(qg, "MAX_TRIP_CALLS", 4)
    monkeypatch.setattr(qg, "MAX_RUNS", 3)
    db = await open_store(world.url)
    try:
        root = world.people["root"]
        got = await qg.guard_rates(db, root, SPAN)
        gateway_cut, runs_cut = got.since["gateway"], got.since["runs"]
        assert gateway_cut is not None and runs_cut is not None
        scope, params = root.scope("c")
        newest = await db.fetchall(
            f"SELECT c.created_at FROM model_calls c WHERE {scope} AND c.guard IS NOT NULL"
            f" AND {qg.TRIP_SQL.replace('guard', 'c.guard')} AND c.created_at >= ?"
            " ORDER BY c.created_at DESC LIMIT 4",
            (*params, SPAN.since),
        )
        assert float(newest[-1][0]) == gateway_cut
        scope, params = root.scope("r")
        runs = await db.fetchall(
            f"SELECT r.created_at FROM runs r WHERE {scope} ORDER BY r.created_at DESC LIMIT 3",
            params,
        )
        assert float(runs[-1][0]) == runs_cut
        want = await expected(db, root, gateway_cut, runs_cut)
    finally:
        await db.close()
    assert counted(got) == want
    assert want.checked["runs"] == 2 * len(RUN_STEPS)  # the newest 3 read, the oldest left out
    assert want.tripped["gateway"] == 3  # the newest 4 read, the oldest left out


async def test_nothing_in_an_old_range(world: World) -> None:
    db = await open_store(world.url)
    try:
        old = TimeRange(NOW - 400 * 86400, NOW - 300 * 86400, "custom")
        got = await qg.guard_rates(db, world.people["root"], old)
    finally:
        await db.close()
    assert got.rates == [] and got.timeline == []
    assert got.checked == {"gateway": 0, "runs": 0} and got.tripped == {"gateway": 0, "runs": 0}


async def test_the_partial_indexes_are_used(world: World) -> None:
    """Each read of the guard counts goes through m030's partial indexes (their predicates are
    the module's, word for word) on both stores, for an admin, a member and a team."""
    assert qg.TRIP_SQL == m030_ui_indexes._TRIPS
    statements = " ".join(m030_ui_indexes.STATEMENTS)
    assert qg.MAY_TRIP.format(j="x", blob="{blob}").replace("x.", "") in statements.replace(
        "{{", "{"
    ).replace("}}", "}")
    db = await open_store(world.url)
    try:
        trips, checked = "model_calls_guard_trips", "model_calls_guarded"
        journal = ("journal_guard_trips", "journal_guard_runs")
        for who, suffix in (("root", ""), ("ann", "_user"), ("tom", "")):
            # SQLite is told which (INDEXED BY); PostgreSQL may read a member's calls from
            # either partial index.
            wanted: list[tuple[str, ...]] = [(f"{trips}{suffix}",), (f"{checked}{suffix}",)]
            wanted += [(j,) for j in journal]
            if db.dialect == "postgresql":
                wanted[:2] = [(trips, f"{trips}_user"), (checked, f"{checked}_user")]
            principal = world.people[who]
            plans = ""
            for sql, params in (
                qg._gateway_query(db.dialect, principal, SPAN),
                qg._runs_query(db.dialect, principal, SPAN),
            ):
                if db.dialect == "sqlite":
                    rows = await db.fetchall(f"EXPLAIN QUERY PLAN {sql}", params)
                    plans += "\n".join(str(r[-1]) for r in rows)
                else:  # tiny tables: make the planner show which indexes it can use
                    async with db.transaction() as tx:
                        await tx.execute("SET LOCAL enable_seqscan = off")
                        rows = await tx.fetchall(f"EXPLAIN {sql}", params)
                    plans += "\n".join(str(r[0]) for r in rows)
            for names in wanted:
                assert any(re.search(rf"\b{n}\b", plans) for n in names), (who, names, plans)
            assert "AUTOMATIC" not in plans
    finally:
        await db.close()


# -- the page ------------------------------------------------------------------------------


def test_the_page_shows_the_top_rows_and_all_on_request(
    world: World, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_pages_quality, "TOP", 5)
    auth = {"Authorization": f"Bearer {world.keys['root']}"}
    page = client.get("/ui/quality", headers=auth)
    everything = client.get("/ui/quality?show=all", headers=auth)
    assert page.status_code == 200 and everything.status_code == 200, page.text[:500]

    def rows(html: str, caption: str) -> int:
        return html.split(f"<caption>{caption}</caption>", 1)[1].split("</table>")[0].count("<tr>")

    assert rows(page.text, "Guard trip rates") == 1 + 5
    assert rows(everything.text, "Guard trip rates") == 1 + 12  # 6 gateway and 6 run rules
    guards = page.text.split('id="guards-heading"', 1)[1].split("</section>", 1)[0]
    assert (
        'The first 5 rules, the most trips first. <a href="/ui/quality?range=30d&amp;show=all">'
        in guards
    )
    assert "Show all" not in everything.text
    assert re.search(r"Gateway calls: 40 checked,\s+30 tripped", page.text)
    assert re.search(r"Run guard checks: 45 checked,\s+30 tripped", page.text)
    bad = client.get("/ui/quality?show=everything", headers=auth)
    assert bad.status_code == 400


def test_a_capped_count_says_since_when(
    world: World, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(qg, "MAX_TRIP_CALLS", 4)
    monkeypatch.setattr(qg, "MAX_RUNS", 3)
    auth = {"Authorization": f"Bearer {world.keys['root']}"}
    page = client.get("/ui/quality?range=7d&suite=qa", headers=auth)
    assert page.status_code == 200, page.text[:500]
    assert "Counted since <time" in page.text
    assert re.search(r"the newest [0-9,]+ calls that tripped", page.text)
    assert re.search(r"the newest [0-9,]+ runs", page.text)
