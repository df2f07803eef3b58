"""The online-evaluation summary (``evals._online_summary``, which ``/ui/quality``,
``GET /v1/evals/online`` and ``eval online`` share) against the query it had before it was
rewritten for speed (no join to ``runs``: a score's organisation and its run's owner are on the
row, m032; ``runtime._feedback_scope``), which joined every score to its run: the same totals and
buckets for an admin, a member, a sharing team's member, another organisation and the system,
with and without a rule and a time range, on both stores.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from elevenfactor.evals._online_summary import _FIGURES, online_summary
from elevenfactor.governance import SYSTEM, Principal
from elevenfactor.store import Store, open_store
from tests.conftest import _pg_schema_url
from tests.ui.quality_sql_world import NOW, PEOPLE, SEEN, World, make_world

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> World:
    tmp: Path = tmp_path_factory.mktemp(f"quality-online-{request.param}")
    url = f"sqlite:///{tmp}/test.db" if request.param == "sqlite" else _pg_schema_url(request)
    return make_world(url, tmp)


async def _former_online(db: Store, who: Principal, **kw: Any) -> list[tuple[Any, ...]]:
    """The totals as the summary's former query computed them: every score joined to its run,
    the caller's scope on the run."""
    scope, params = who.scope("r")
    where = ["f.source = 'online'", "f.rule IS NOT NULL", scope]
    if not who.unscoped:
        where.append("f.org_id = ?")
        params.append(who.org_id)
    for column, op in (("rule", "="), ("since", ">="), ("until", "<")):
        if kw.get(column) is not None:
            where.append(f"f.{'created_at' if column != 'rule' else 'rule'} {op} ?")
            params.append(kw[column])
    rows = await db.fetchall(
        f"SELECT f.rule, f.scorer, {_FIGURES} FROM run_feedback f JOIN runs r ON r.id = f.run_id"
        f" WHERE {' AND '.join(where)} GROUP BY f.rule, f.scorer ORDER BY f.rule, f.scorer",
        params,
    )
    return [
        (str(r[0]), str(r[1]), int(r[2]), int(r[3]), int(r[4] or 0), int(r[5] or 0),
         int(r[6] or 0), None if r[7] is None else round(float(r[7]), 9))
        for r in rows
    ]  # fmt: skip


@pytest.mark.parametrize("who", [*PEOPLE, "system"])
@pytest.mark.parametrize(
    "filters", [{}, {"rule": "quality"}, {"since": NOW - 3600, "until": NOW + 86400}]
)
async def test_online_totals_are_the_former_querys(
    world: World, who: str, filters: dict[str, Any]
) -> None:
    principal = world.people.get(who) or SYSTEM
    db = await open_store(world.url)
    try:
        summary = await online_summary(db, principal, bucket=None, **filters)
        bucketed = await online_summary(db, principal, bucket="day", **filters)
        want = await _former_online(db, principal, **filters)
    finally:
        await db.close()
    got = [
        (r.rule, r.scorer, r.runs, r.scores, r.passed, r.failed, r.errors,
         None if r.mean_score is None else round(r.mean_score, 9))
        for r in summary.totals
    ]  # fmt: skip
    assert got == want
    assert [(r.rule, r.scorer, r.scores) for r in bucketed.totals] == [
        (w[0], w[1], w[3]) for w in want
    ]
    assert sum(r.scores for r in bucketed.data) == sum(w[3] for w in want)
    if not filters:  # root saw no scores of its own run; the system sees eve's too
        seen = {**SEEN, "root": 4, "system": 5}[who]
        assert sum(w[3] for w in want) == 4 * seen
