"""The online evaluation trend, on both stores: per rule and scorer and per day, runs scored,
pass rate and mean score, counting only the runs the caller may read (an admin its
organisation's, a member its own, another organisation nothing) — in the library, over HTTP
with real keys (400 naming a malformed parameter, never 500) and in ``eval online``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from elevenfactor.cli._main import main
from elevenfactor.config import Settings, parse_project
from elevenfactor.errors import RequestError
from elevenfactor.evals._online_summary import online_summary
from elevenfactor.governance import (
    DEFAULT_ORG,
    Principal,
    create_key,
    create_user,
    local_admin,
    principal_for_user,
)
from elevenfactor.runtime import submit_run
from elevenfactor.runtime._feedback import ScorerRow, add_feedback, record_scores
from elevenfactor.store import Store, migrate, open_store
from tests.conftest import _pg_schema_url
from tests.support.server import running_gateway

pytestmark = pytest.mark.integration

DAY1, DAY2 = 1_764_547_200.0, 1_764_633_600.0  # 2025-12-01 and 2025-12-02, 00:00 UTC


def _who(user: str, org: str = DEFAULT_ORG, admin: bool = False) -> Principal:
    roles = frozenset({"admin"} if admin else {"member"})
    return Principal(org_id=org, user_id=f"u_{user}", user_name=user, roles=roles)


ANN, BOB, BOSS = _who("ann"), _who("bob"), _who("boss", admin=True)
ALIEN = _who("eve", org="org_two", admin=True)


async def _score(
    store: Store, run_id: str, rule: str, marks: list[tuple[str, str, float]], at: float
) -> None:
    """Write ``(scorer, label, score)`` rows on ``run_id`` as ``rule``, dated ``at``."""
    rows = [
        ScorerRow(f"fb_{rule}_{run_id}_{i}", v, label, "why", {"rule": rule}, rule, name)
        for i, (name, label, v) in enumerate(marks)
    ]
    assert await record_scores(store, run_id, f"scorer:{rule}", rows) == len(rows)
    await store.execute(
        "UPDATE run_feedback SET created_at = ? WHERE run_id = ? AND rule = ?", (at, run_id, rule)
    )


async def _seed(store: Store, ann: Principal, bob: Principal, alien: Principal) -> None:
    a1 = await submit_run(store, "support", "a1", owner=ann)
    a2 = await submit_run(store, "support", "a2", owner=ann)
    b1 = await submit_run(store, "support", "b1", owner=bob)
    e1 = await submit_run(store, "support", "e1", owner=alien)
    await _score(store, a1, "quality", [("contains", "pass", 1.0), ("judge", "pass", 0.8)], DAY1)
    await _score(store, a2, "quality", [("contains", "fail", 0.0), ("judge", "error", 0.0)], DAY2)
    await _score(store, b1, "quality", [("contains", "pass", 1.0), ("judge", "fail", 0.2)], DAY2)
    await _score(store, b1, "tone", [("judge", "pass", 0.6)], DAY2)
    await _score(store, e1, "quality", [("contains", "pass", 1.0)], DAY1)
    await add_feedback(store, ann, a1, score=-1, label="bad")  # human rows are not counted


def _table(rows: list[Any]) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    return {
        (r.bucket, r.rule, r.scorer): (r.runs, r.passed, r.failed, r.errors, r.pass_rate,
                                       r.mean_score)
        for r in rows
    }  # fmt: skip


async def test_per_rule_scorer_and_day_within_the_callers_scope(store: Store) -> None:
    await _seed(store, ANN, BOB, ALIEN)
    boss = await online_summary(store, BOSS)
    assert _table(boss.data) == {
        ("2025-12-01", "quality", "contains"): (1, 1, 0, 0, 1.0, 1.0),
        ("2025-12-01", "quality", "judge"): (1, 1, 0, 0, 1.0, 0.8),
        ("2025-12-02", "quality", "contains"): (2, 1, 1, 0, 0.5, 0.5),
        ("2025-12-02", "quality", "judge"): (2, 0, 1, 1, 0.0, pytest.approx(0.2)),
        ("2025-12-02", "tone", "judge"): (1, 1, 0, 0, 1.0, pytest.approx(0.6)),
    }
    totals = _table(boss.totals)
    assert totals[(None, "quality", "contains")] == (
        3,
        2,
        1,
        0,
        pytest.approx(2 / 3),
        pytest.approx(2 / 3),
    )
    assert totals[(None, "quality", "judge")] == (3, 1, 1, 1, 0.5, pytest.approx(0.5))
    # a member: its own runs' scores only; another organisation: its own only
    ann = _table((await online_summary(store, ANN, bucket=None)).totals)
    assert ann == {
        (None, "quality", "contains"): (2, 1, 1, 0, 0.5, 0.5),
        (None, "quality", "judge"): (2, 1, 0, 1, 1.0, pytest.approx(0.8)),
    }
    alien = await online_summary(store, ALIEN)
    assert _table(alien.totals) == {(None, "quality", "contains"): (1, 1, 0, 0, 1.0, 1.0)}
    stranger = await online_summary(store, _who("nobody", org="org_three", admin=True))
    assert stranger.data == [] and stranger.totals == []
    # filters: one rule, a time range
    tone = await online_summary(store, BOSS, rule="tone")
    assert {r.rule for r in tone.data + tone.totals} == {"tone"}
    late = await online_summary(store, BOSS, since=DAY2, bucket="week")
    assert {r.bucket for r in late.data} == {"2025-12-01"}  # the week starts on Monday
    assert sum(r.scores for r in late.totals) == 5
    early = await online_summary(store, BOSS, until=DAY2)
    assert sum(r.scores for r in early.totals) == 2


async def test_bad_parameters_name_themselves(store: Store) -> None:
    with pytest.raises(RequestError) as err:
        await online_summary(store, BOSS, bucket="year")
    assert err.value.param == "per"
    with pytest.raises(RequestError) as err:
        await online_summary(store, BOSS, rule="two words")
    assert err.value.param == "rule"


# -- HTTP and the CLI --------------------------------------------------------------------------

PROJECT = parse_project(
    {
        "providers": {"t": {"type": "test"}},
        "models": {"echo": {"provider": "t", "model": "echo-1"}},
        "routes": {"default": {"chain": ["echo"]}},
    }
)


@dataclass
class World:
    base: str
    url: str
    secrets: dict[str, str]

    def get(self, who: str | None, **params: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.secrets[who]}"} if who else {}
        with httpx.Client(base_url=self.base, headers=headers, timeout=30) as c:
            return c.get("/v1/evals/online", params=params)


async def _seed_world(url: str) -> dict[str, str]:
    db = await open_store(url)
    try:
        await migrate(db)
        admin = local_admin("cli")
        secrets = {}
        for name, roles in (("ann", ("member",)), ("bob", ("member",)), ("boss", ("admin",))):
            await create_user(db, admin, name, roles=roles)
            _, secrets[name] = await create_key(db, admin, f"key-{name}", user=name)
        await db.execute("INSERT INTO orgs (id, name, created_at) VALUES ('org_two', 'two', 0)")
        root2 = Principal("org_two", "u_root2", "root2", roles=frozenset({"admin"}))
        await create_user(db, root2, "eve", roles=("admin",))
        _, secrets["eve"] = await create_key(db, root2, "key-eve", user="eve")
        people = [await principal_for_user(db, n) for n in ("ann", "bob")]
        await _seed(db, *people, Principal("org_two", "u_alien", "alien"))
        return secrets
    finally:
        await db.close()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    tmp: Path = tmp_path_factory.mktemp(f"online-{request.param}")
    url = f"sqlite:///{tmp}/test.db" if request.param == "sqlite" else _pg_schema_url(request)
    secrets = asyncio.run(_seed_world(url))
    settings = Settings(database_url=url, data_dir=tmp, dev=False, in_process_worker=False)
    with running_gateway(settings, PROJECT) as (base, _):
        yield World(base, url, secrets)


def test_http_scoped_by_caller(world: World) -> None:
    boss = world.get("boss", per="day")
    assert boss.status_code == 200, boss.text
    body = boss.json()
    assert body["object"] == "online_eval_summary" and body["bucket"] == "day"
    assert {(r["rule"], r["scorer"], r["runs"]) for r in body["totals"]} == {
        ("quality", "contains", 3), ("quality", "judge", 3), ("tone", "judge", 1),
    }  # fmt: skip
    ann = world.get("ann", rule="quality").json()
    assert {(r["scorer"], r["runs"], r["pass_rate"]) for r in ann["totals"]} == {
        ("contains", 2, 0.5), ("judge", 2, 1.0),
    }  # fmt: skip
    assert all(r["rule"] == "quality" for r in ann["data"])
    bob = world.get("bob", per="week").json()
    assert {r["runs"] for r in bob["totals"]} == {1}
    eve = world.get("eve").json()  # another organisation: its own runs' scores only
    assert [(r["rule"], r["runs"]) for r in eve["totals"]] == [("quality", 1)]


@pytest.mark.parametrize(
    ("params", "code", "param"),
    [
        ({"per": "year"}, "invalid_value", "per"),
        ({"since": "yesterday-ish"}, None, "since"),
        ({"until": "2025-13-45"}, None, "until"),
        ({"rule": "two words"}, None, "rule"),
        ({"rule": "x" * 101}, None, "rule"),
        ({"group": "rule"}, "unknown_parameter", "group"),
    ],
)
def test_http_malformed_queries_are_400(
    world: World, params: dict[str, str], code: str | None, param: str
) -> None:
    resp = world.get("boss", **params)
    assert resp.status_code == 400, resp.text
    err = resp.json()["error"]
    assert err["param"] == param, resp.text
    if code is not None:
        assert err["code"] == code, resp.text


def test_http_needs_a_key(world: World) -> None:
    assert world.get(None).status_code == 401


def test_cli_table_and_json(world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    env = {"DATABASE_URL": world.url}
    out = runner.invoke(
        main, ["eval", "online", "--since", "2025-11-30", "--as", "ann", "--json"], env=env
    )
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert {(r["scorer"], r["runs"]) for r in data["totals"]} == {("contains", 2), ("judge", 2)}
    table = runner.invoke(
        main, ["eval", "online", "--since", "2025-11-30", "--per", "none", "--as", "boss"], env=env
    )
    assert table.exit_code == 0, table.output
    assert "tone" in table.output and "66.7%" in table.output
    bad = runner.invoke(main, ["eval", "online", "--since", "soon"], env=env)
    assert bad.exit_code == 2 and "since" in bad.output + str(bad.stderr)
