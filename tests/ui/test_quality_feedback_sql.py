"""The quality page's feedback figures (``_quality_data.recent_feedback``,
``feedback_averages``) and the online-eval summary (``evals._online_summary``), read on the run
owner's columns of ``run_feedback`` (m032) with no join to ``runs``, against a row-by-row
count in Python of the rows whose run each principal may read — on both stores, for an admin,
members of a sharing team, a member of a team that does not share, a team-less member,
another organisation's member and the system.

The world holds what could go wrong: rows written before m032 (filled by its backfill) and
after (by every writer: ``add_feedback``, ``record_scores``, ``save_result``); a member who
moved into the sharing team (its runs from before are its own, not the team's); judgements
whose author is not the run's owner; a row whose run is gone; a row in another organisation
than its run; a row older than the range.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from elevenfactor.config import Settings, parse_project
from elevenfactor.evals import CaseResult, Score, SuiteResult
from elevenfactor.evals._online_summary import online_summary
from elevenfactor.evals._store import save_result
from elevenfactor.governance import (
    SYSTEM,
    Principal,
    local_admin,
    principal_for_user,
    update_user,
)
from elevenfactor.runtime import submit_run
from elevenfactor.runtime._feedback import ScorerRow, add_feedback, record_scores
from elevenfactor.server import create_app
from elevenfactor.server.ui._quality_data import feedback_averages, recent_feedback
from elevenfactor.server.ui._ranges import TimeRange
from elevenfactor.store import MIGRATIONS, Store, _migrations, migrate, open_store
from tests.conftest import _pg_schema_url
from tests.support.principals import add_people

pytestmark = pytest.mark.integration

NOW = time.time()
SPAN = TimeRange(NOW - 30 * 86400, NOW + 86400, "30d")
PEOPLE = ("root", "sam", "tom", "ann", "lou", "eve")
BEFORE = MIGRATIONS[: [m.name for m in MIGRATIONS].index("m032_feedback_owner")]
SEES = {
    "root": {"sam_red", "sam_blue", "tom", "ann", "lou", "root", "gone"},
    "sam": {"sam_red", "sam_blue", "tom"},  # its own (from team red too) and team blue's
    "tom": {"tom", "sam_blue"},  # team blue's: not sam's runs from team red
    "ann": {"ann"},  # team red does not share
    "lou": {"lou"},  # no team
    "eve": {"eve"},  # org two: not the row of org two on tom's run
}
"""The runs whose feedback (in the range) each one sees (``gone``: a row whose run is gone,
in the admin's organisation)."""


@dataclass
class World:
    url: str
    people: dict[str, Principal]
    keys: dict[str, str]
    runs: dict[str, str]
    app: Any


def _suite(run_id: str, cases: list[str]) -> SuiteResult:
    results = [CaseResult(c, 0, (Score("contains", True, 1.0), Score("tone", False, 0.25)))
               for c in cases]  # fmt: skip
    meta = {"run_id": run_id, "started_at": NOW - 1, "finished_at": NOW, "target": "agent:x"}
    return SuiteResult("qa", "v1", results, {c: 1.0 for c in cases}, meta)


async def _before_m032(db: Store, who: dict[str, Principal], runs: dict[str, str]) -> None:
    """Rows as the writers wrote them before m032 (no owner columns)."""
    uid = {n: p.user_id for n, p in who.items()}
    for fid, run, org, author, source, score, label, rule, at in (
        ("old_1", runs["tom"], "org_default", uid["root"], "human", 0.5, "good", None, 3600),
        ("old_2", runs["tom"], "org_default", "scorer:q", "online", 1.0, "pass", "quality", 3500),
        ("old_3", runs["sam_red"], "org_default", "scorer:q", "online", 0.0, "fail", "quality",
         3400),
        ("old_4", runs["sam_red"], "org_default", uid["sam"], "offline", 1.0, "contains", None,
         3300),
        ("old_5", runs["lou"], "org_default", uid["lou"], "human", None, "meh", None, 3200),
        ("old_6", runs["eve"], "org_two", uid["eve"], "human", 1.0, "good", None, 3100),
        ("old_gone", "run_gone", "org_default", uid["ann"], "human", 1.0, "good", None, 3000),
        ("old_astray", runs["tom"], "org_two", "scorer:q", "online", 1.0, "pass", "quality",
         2900),
        ("old_old", runs["tom"], "org_default", uid["tom"], "human", 1.0, "good", None,
         40 * 86400),
    ):  # fmt: skip
        await db.execute(
            "INSERT INTO run_feedback (id, run_id, org_id, user_id, key_id, score, label,"
            " comment, metadata, source, created_at, rule, scorer)"
            " VALUES (?, ?, ?, ?, NULL, ?, ?, NULL, NULL, ?, ?, ?, ?)",
            (fid, run, org, author, score, label, source, NOW - at, rule,
             "judge" if rule else None),
        )  # fmt: skip


async def _write(db: Store, who: dict[str, Principal], runs: dict[str, str]) -> None:
    """Rows written by every writer after m032."""
    for author, run, kw in (
        ("root", "sam_red", {"score": 1, "label": "good"}),
        ("tom", "sam_blue", {"score": 0.5, "label": "good"}),
        ("sam", "sam_red", {"label": "self", "comment": "mine, from team red"}),
        ("sam", "tom", {"score": 0, "label": "bad"}),
        ("ann", "ann", {"score": -1, "comment": "ann's note"}),
        ("lou", "lou", {"score": 0.25, "label": "good"}),
        ("eve", "eve", {"score": 1, "label": "good"}),
    ):
        await add_feedback(db, who[author], runs[run], **kw)
    for i, name in enumerate(("sam_blue", "sam_red", "tom", "ann", "lou", "eve", "root")):
        rows = [ScorerRow(f"fb_{name}_{j}", score, label, None, None, rule=rule, scorer=sc)
                for j, (score, label, rule, sc) in enumerate([
                    (1.0, "pass", "quality", "judge"), (0.0, "fail", "quality", "judge"),
                    (0.5, "error", "quality", "contains"), (0.125 * i, "pass", "tone", "judge"),
                ][: 2 + i % 3])]  # fmt: skip
        await record_scores(db, runs[name], "scorer:x", rows)
    kids = {runs["sam_blue"]: ("c1", 0), runs["sam_red"]: ("c2", 0)}
    await save_result(db, who["sam"], _suite("ev_sam", ["c1", "c2"]), children=kids)
    kids = {runs["tom"]: ("c1", 0), runs["ann"]: ("c2", 0)}
    await save_result(db, who["root"], _suite("ev_root", ["c1", "c2"]), children=kids)


async def _seed(url: str) -> tuple[dict[str, Principal], dict[str, str], dict[str, str]]:
    db = await open_store(url)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(_migrations, "MIGRATIONS", BEFORE)
            await migrate(db)
        keys = await add_people(
            db, [("blue", True), ("red", False)],
            [("root", None, ("admin",)), ("sam", "red", ("member",)), ("tom", "blue", ("member",)),
             ("ann", "red", ("member",)), ("lou", None, ("member",))],
        )  # fmt: skip

        async def people() -> dict[str, Principal]:
            return {n: await principal_for_user(db, n, org="two" if n == "eve" else "default")
                    for n in PEOPLE}  # fmt: skip

        who = await people()
        runs = {n: await submit_run(db, "greet", {"n": n}, owner=who[n]) for n in PEOPLE}
        runs["sam_red"] = runs.pop("sam")
        await _before_m032(db, who, runs)
        assert await migrate(db) == ["m032_feedback_owner"]
        await update_user(
            db, local_admin("cli"), "sam", team="blue"
        )  # sam moves to the sharing team
        who = await people()
        runs["sam_blue"] = await submit_run(db, "greet", {"n": "sam"}, owner=who["sam"])
        await _write(db, who, runs)
        return who, keys, {**runs, "gone": "run_gone"}
    finally:
        await db.close()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> World:
    tmp: Path = tmp_path_factory.mktemp(f"quality-feedback-{request.param}")
    url = f"sqlite:///{tmp}/test.db" if request.param == "sqlite" else _pg_schema_url(request)
    who, keys, runs = asyncio.run(_seed(url))
    settings = Settings(database_url=url, data_dir=tmp, dev=False, in_process_worker=False)
    project = parse_project({"providers": {"t": {"type": "test"}},
                             "models": {"echo": {"provider": "t", "model": "e"}}})  # fmt: skip
    return World(url, who, keys, runs, create_app(settings, project))


async def _visible(db: Store, who: Principal, *, joined: bool = False) -> list[tuple[Any, ...]]:
    """Every feedback row in ``SPAN`` whose run ``who`` may read, decided row by row in
    Python from ``runs`` (as ``Principal.scope`` reads runs: an admin its organisation's, a
    member its own and its sharing team's), never from the rows' owner columns. ``joined``:
    only rows whose run exists (the system's online summary joins them)."""
    found = await db.fetchall("SELECT id, org_id, user_id, team_id FROM runs")
    runs = {str(r[0]): (r[1], r[2], r[3]) for r in found}
    users = dict(await db.fetchall("SELECT id, name FROM users"))
    out = []
    for row in await db.fetchall(
        "SELECT id, run_id, score, label, comment, source, created_at, user_id, org_id, rule,"
        " scorer FROM run_feedback"
    ):
        run = runs.get(str(row[1]))
        if not SPAN.since <= float(row[6]) < SPAN.until or (joined and run is None):
            continue
        if not who.unscoped:
            if row[8] != who.org_id:
                continue
            if not who.is_admin:
                team = who.team_id if who.team_shares else None
                if (
                    run is None
                    or run[0] != row[8]
                    or not (run[1] == who.user_id or (team is not None and run[2] == team))
                ):
                    continue
        out.append((*row[:7], users.get(row[7], row[7]), row[9], row[10]))
    return out


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 9) if values else None


def _totals(rows: list[tuple[Any, ...]], rule: str | None = None) -> list[tuple[Any, ...]]:
    """The online summary's totals per rule and scorer, counted in Python."""
    groups: dict[tuple[str, str], list[tuple[Any, ...]]] = {}
    for r in rows:
        if r[5] == "online" and r[8] is not None and rule in (None, r[8]):
            groups.setdefault((r[8], r[9]), []).append(r)
    out = []
    for (name, scorer), got in sorted(groups.items()):
        labels = Counter(r[3] for r in got)
        mean = _mean([float(r[2]) for r in got if r[3] != "error" and r[2] is not None])
        out.append((name, scorer, len({r[1] for r in got}), len(got), labels["pass"],
                    labels["fail"], labels["error"], mean))  # fmt: skip
    return out


@pytest.mark.parametrize("name", [*PEOPLE, "system"])
async def test_feedback_and_online_figures_are_the_row_by_row_count(
    world: World, name: str
) -> None:
    who = world.people.get(name, SYSTEM)
    db = await open_store(world.url)
    try:
        want = await _visible(db, who)
        joined = await _visible(db, who, joined=True)
        recent = await recent_feedback(db, who, SPAN, limit=1000)
        newest = await recent_feedback(db, who, SPAN, limit=3)
        averages = await feedback_averages(db, who, SPAN, limit=1000)
        online = {rule: await online_summary(db, who, rule=rule, since=SPAN.since,
                                             until=SPAN.until, bucket="day")
                  for rule in (None, "quality")}  # fmt: skip
    finally:
        await db.close()
    if name in SEES:
        assert {r[1] for r in want} == {world.runs[n] for n in SEES[name]}
    got = sorted((f.id, f.run_id, f.score, f.label, f.comment, f.source, f.created_at, f.by)
                 for f in recent)  # fmt: skip
    assert got == sorted(tuple(float(v) if i in (2, 6) and v is not None else v
                               for i, v in enumerate(r[:8])) for r in want)  # fmt: skip
    times = sorted((float(r[6]) for r in want), reverse=True)
    assert [f.created_at for f in recent] == times
    assert [f.created_at for f in newest] == times[:3]
    groups: dict[tuple[str, str | None], list[float | None]] = {}
    for r in want:
        groups.setdefault((r[5], r[3]), []).append(None if r[2] is None else float(r[2]))
    expect = {}
    for key, values in groups.items():
        scored = [v for v in values if v is not None]
        expect[key] = (len(values), len(scored), _mean(scored))
    assert {(a.source, a.label): (a.count, a.scored, None if a.mean is None else round(a.mean, 9))
            for a in averages} == expect  # fmt: skip
    assert [a.count for a in averages] == sorted((a.count for a in averages), reverse=True)
    for rule, summary in online.items():
        assert [(r.rule, r.scorer, r.runs, r.scores, r.passed, r.failed, r.errors,
                 None if r.mean_score is None else round(r.mean_score, 9))
                for r in summary.totals] == _totals(joined, rule)  # fmt: skip
        assert sum(r.scores for r in summary.data) == sum(r.scores for r in summary.totals)


@pytest.fixture
def client(world: World) -> Iterator[TestClient]:
    with TestClient(world.app, follow_redirects=False) as c:
        yield c


def _table(html: str, caption: str) -> str:
    return html.split(f"<caption>{caption}</caption>", 1)[1].split("</table>", 1)[0]


@pytest.mark.parametrize("name", ["sam", "tom", "root"])
def test_the_page_shows_the_runs_it_may_read(world: World, client: TestClient, name: str) -> None:
    page = client.get(
        "/ui/quality?show=all", headers={"Authorization": f"Bearer {world.keys[name]}"}
    )
    assert page.status_code == 200, page.text[:500]
    shown = set(re.findall(r'href="/ui/runs/([^"]+)"', _table(page.text, "Feedback")))
    assert shown == {world.runs[n] for n in SEES[name]}
    counts = re.findall(
        r'<th scope="row">(\w+)</th>\s*<td>([^<]*)</td>\s*<td class="num">([\d,]+)</td>',
        _table(page.text, "Feedback averages"),
    )
    db_rows = asyncio.run(_count_visible(world, name))
    assert {(s, label, int(n.replace(",", ""))) for s, label, n in counts} == db_rows


async def _count_visible(world: World, name: str) -> set[tuple[str, str, int]]:
    db = await open_store(world.url)
    try:
        rows = await _visible(db, world.people[name])
    finally:
        await db.close()
    found = Counter((r[5], r[3] or "—") for r in rows)
    return {(s, label, n) for (s, label), n in found.items()}


class _Tap:
    """A store that records the statements read through it."""

    def __init__(self, db: Store) -> None:
        self.db, self.dialect = db, db.dialect
        self.seen: list[tuple[str, list[Any]]] = []

    async def fetchall(self, sql: str, params: Any = ()) -> Any:
        self.seen.append((sql, list(params)))
        return await self.db.fetchall(sql, params)


@pytest.mark.parametrize(
    ("name", "indexes"),
    [("root", {"run_feedback_quality"}), ("sam", {"run_feedback_team", "run_feedback_owner"}),
     ("ann", {"run_feedback_owner"}), ("lou", {"run_feedback_owner"})],
)  # fmt: skip
async def test_each_part_is_read_from_its_index(world: World, name: str, indexes: set[str]) -> None:
    """Without planner statistics SQLite still reads each part of a scope from its own index
    (an admin's from m030's), covering the counts, and never ``runs`` nor the organisation's
    rows by time for a member. PostgreSQL chooses from its statistics (its plans on the
    bench's store are in ``bench/ui --explain``); on these tiny tables, told to avoid
    sequential scans, it shows that a member's reads can use the owner indexes and never read
    ``runs``."""
    db = await open_store(world.url)
    try:
        tap: Any = _Tap(db)
        who = world.people[name]
        await recent_feedback(tap, who, SPAN)
        await feedback_averages(tap, who, SPAN)
        for rule in (None, "quality"):
            await online_summary(tap, who, rule=rule, since=SPAN.since, until=SPAN.until)
        assert tap.seen
        if db.dialect == "postgresql":
            plans = ""
            for sql, params in tap.seen:
                async with db.transaction() as tx:
                    await tx.execute("SET LOCAL enable_seqscan = off")
                    rows = await tx.fetchall(f"EXPLAIN {sql}", params)
                plans += "\n".join(str(r[0]) for r in rows) + "\n"
            assert not re.search(r" on runs\b", plans), plans
            if name != "root":
                used = set(re.findall(r"\b(run_feedback_\w+)\b", plans))
                assert used & indexes, plans
            return
        for sql, params in tap.seen:
            plan = [str(r[-1]) for r in await db.fetchall(f"EXPLAIN QUERY PLAN {sql}", params)]
            used = {m for line in plan for m in re.findall(r"USING (?:COVERING )?INDEX (\w+)", line)
                    if line.startswith("SEARCH f ")}  # fmt: skip
            assert used == indexes, (sql, plan)
            assert not [line for line in plan if re.match(r"(SCAN|SEARCH) (r|runs)\b", line)]
            if sql.startswith("SELECT f.source") or "COUNT(DISTINCT" in sql:
                searches = [line for line in plan if line.startswith("SEARCH f ")]
                assert all("COVERING" in line for line in searches), plan
    finally:
        await db.close()
