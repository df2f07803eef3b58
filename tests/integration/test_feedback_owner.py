"""The owner of a feedback row's run on the row (``run_user_id``, ``run_team_id``, m032), on
both stores: filled from ``runs`` for the rows written before the migration, and copied from
the run by every writer — the feedback API's ``add_feedback``, the online scorers'
``record_scores``, offline eval results' ``save_result`` — whoever the author is. NULL where a
member must not match the row: its run gone, in another organisation, or (the team) team-less.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from elevenfactor.evals import CaseResult, Score, SuiteResult
from elevenfactor.evals._store import save_result
from elevenfactor.governance import DEFAULT_ORG, Principal
from elevenfactor.runtime import submit_run
from elevenfactor.runtime._feedback import ScorerRow, add_feedback, record_scores
from elevenfactor.store import MIGRATIONS, Store, _migrations, migrate, open_store

pytestmark = pytest.mark.integration

BEFORE = MIGRATIONS[: [m.name for m in MIGRATIONS].index("m032_feedback_owner")]


def _who(user: str, *, team: str | None = None, org: str = DEFAULT_ORG, **kw: Any) -> Principal:
    return Principal(
        org_id=org,
        user_id=f"u_{user}",
        user_name=user,
        team_id=team,
        team_shares=team is not None,
        roles=frozenset(kw.get("roles", ("member",))),
    )


ANN = _who("ann", team="t_blue")
SAM = _who("sam", team="t_blue")  # ann's team-mate; the team shares
BOB = _who("bob")  # no team
EVE = _who("eve", org="org_two")
BOSS = _who("boss", roles=("admin",))

_OLD_INSERT = (
    "INSERT INTO run_feedback (id, run_id, org_id, user_id, key_id, score, label, comment,"
    " metadata, source, created_at, rule, scorer) VALUES (?, ?, ?, ?, NULL, 1.0, 'ok', NULL,"
    " NULL, ?, ?, ?, ?)"
)
"""A row as the writers wrote it before m032 (no owner columns)."""


async def _owners(db: Store) -> dict[str, tuple[str | None, str | None]]:
    rows = await db.fetchall("SELECT id, run_user_id, run_team_id FROM run_feedback")
    return {str(r[0]): (r[1], r[2]) for r in rows}


async def _runs(db: Store) -> tuple[str, str, str]:
    return (
        await submit_run(db, "greet", {"n": 1}, owner=ANN),
        await submit_run(db, "greet", {"n": 2}, owner=BOB),
        await submit_run(db, "greet", {"n": 3}, owner=EVE),
    )


async def test_m032_fills_the_run_owner_of_rows_written_before(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = await open_store(store_url)
    try:
        monkeypatch.setattr(_migrations, "MIGRATIONS", BEFORE)
        await migrate(db)
        a, b, e = await _runs(db)
        now = time.time()
        for fid, run, org, author, source, rule in (
            ("fb_boss", a, DEFAULT_ORG, "u_boss", "human", None),  # an admin judged ann's run
            ("fb_online", a, DEFAULT_ORG, "scorer:q", "online", "q"),
            ("fb_bob", b, DEFAULT_ORG, "u_bob", "offline", None),  # a team-less owner
            ("fb_eve", e, "org_two", "u_eve", "human", None),
            ("fb_gone", "run_gone", DEFAULT_ORG, "u_ann", "human", None),  # its run deleted
            ("fb_astray", a, "org_two", "u_eve", "human", None),  # not in its run's organisation
        ):
            await db.execute(_OLD_INSERT, (fid, run, org, author, source, now, rule, rule))
        monkeypatch.setattr(_migrations, "MIGRATIONS", MIGRATIONS)
        assert await migrate(db) == ["m032_feedback_owner"]
        assert await _owners(db) == {
            "fb_boss": ("u_ann", "t_blue"),
            "fb_online": ("u_ann", "t_blue"),
            "fb_bob": ("u_bob", None),
            "fb_eve": ("u_eve", None),
            "fb_gone": (None, None),
            "fb_astray": (None, None),
        }
    finally:
        await db.close()


def _suite(run_id: str, cases: list[str]) -> SuiteResult:
    now = time.time()
    results = [CaseResult(c, 0, (Score("contains", True, 1.0), Score("tone", False, 0.25)))
               for c in cases]  # fmt: skip
    meta = {"run_id": run_id, "started_at": now - 1, "finished_at": now, "target": "agent:x"}
    return SuiteResult("qa", "v1", results, {c: 1.0 for c in cases}, meta)


async def test_every_writer_copies_the_run_owner(store: Store) -> None:
    a, b, e = await _runs(store)
    boss = await add_feedback(store, BOSS, a, score=1, label="good")
    mate = await add_feedback(store, SAM, a, comment="seen by the team")
    own = await add_feedback(store, BOB, b, score=-1)
    rows = [ScorerRow("fb_on_a", 1.0, "pass", None, None, rule="q", scorer="judge")]
    assert await record_scores(store, a, "scorer:q", rows) == 1
    rows = [ScorerRow("fb_on_e", 0.0, "fail", None, None, rule="q", scorer="judge")]
    assert await record_scores(store, e, "scorer:q", rows) == 1
    # Offline scores of an admin's eval whose cases ran as ann's and bob's runs (and, astray,
    # eve's run of another organisation): each row gets its own run's owner.
    await save_result(
        store, BOSS, _suite("ev_1", ["c1", "c2", "c3"]),
        children={a: ("c1", 0), b: ("c2", 0), e: ("c3", 0)},
    )  # fmt: skip
    got = await _owners(store)
    assert got[boss.id] == got[mate.id] == got["fb_on_a"] == ("u_ann", "t_blue")
    assert got[own.id] == ("u_bob", None)
    assert got["fb_on_e"] == ("u_eve", None)
    offline = await store.fetchall(
        "SELECT run_id, label, user_id, run_user_id, run_team_id FROM run_feedback"
        " WHERE source = 'offline' ORDER BY run_id, label"
    )
    want = sorted(
        (run, label, "u_boss", *owner)
        for run, owner in ((a, ("u_ann", "t_blue")), (b, ("u_bob", None)), (e, (None, None)))
        for label in ("contains", "tone")
    )
    assert sorted(tuple(r) for r in offline) == want
    # The invariant the members' reads rely on, row by row.
    runs = {
        str(r[0]): (str(r[1]), r[2], r[3])
        for r in await store.fetchall("SELECT id, org_id, user_id, team_id FROM runs")
    }
    for fid, run_id, org_id, user, team in await store.fetchall(
        "SELECT id, run_id, org_id, run_user_id, run_team_id FROM run_feedback"
    ):
        run = runs.get(str(run_id))
        owner = run[1:] if run is not None and run[0] == org_id else (None, None)
        assert (user, team) == owner, fid
    assert len(got) == 3 + 2 + 6
