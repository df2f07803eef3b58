"""Feedback on runs, on both stores: the library (who may give and read feedback, validation,
pages), the HTTP API with real keys outside dev mode (201/200, 400 with a stable code and
``param``, 404 for whoever may not read the run, a fuzzed body never 500) and the CLI."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from elevenfactor.cli._main import main
from elevenfactor.config import Settings, parse_project
from elevenfactor.errors import RequestError, RunNotFound
from elevenfactor.governance import (
    DEFAULT_ORG,
    Principal,
    create_key,
    create_team,
    create_user,
    local_admin,
)
from elevenfactor.runtime import delete_run, submit_run
from elevenfactor.runtime._feedback import add_feedback, list_feedback
from elevenfactor.store import Store, migrate, open_store
from tests.conftest import _pg_schema_url
from tests.support.http import expect_error as _error
from tests.support.server import running_gateway

pytestmark = pytest.mark.integration


def _who(user: str, *, team: str | None = None, shares: bool = False, **kw: Any) -> Principal:
    return Principal(
        org_id=kw.get("org", DEFAULT_ORG),
        user_id=f"u_{user}",
        user_name=user,
        team_id=team,
        team_shares=shares,
        roles=frozenset(kw.get("roles", ("member",))),
    )


ANN = _who("ann", team="t_share", shares=True)
SAM = _who("sam", team="t_share", shares=True)  # ann's team-mate; the team shares
BOB = _who("bob", team="t_other")
BOSS = _who("boss", roles=("admin",))
ALIEN = _who("eve", org="org_two", roles=("admin",))


# -- the library ------------------------------------------------------------------------------


async def test_add_and_list_newest_first_with_pages(store: Store) -> None:
    rid = await submit_run(store, "greet", {"name": "ada"}, owner=ANN)
    first = await add_feedback(store, ANN, rid, score=1, label="correct", metadata={"ui": "web"})
    assert (first.score, first.label, first.comment, first.source) == (
        1.0,
        "correct",
        None,
        "human",
    )
    assert (first.user_id, first.org_id, first.metadata) == ("u_ann", DEFAULT_ORG, {"ui": "web"})
    made = [first]
    for i in range(4):
        made.append(await add_feedback(store, ANN, rid, comment=f"note {i}", score=-0.5))
    page = await list_feedback(store, ANN, rid, limit=2)
    assert [f.id for f in page.data] == [made[4].id, made[3].id] and page.has_more
    rest = await list_feedback(store, ANN, rid, limit=10, before=page.data[-1].id)
    assert [f.id for f in rest.data] == [m.id for m in reversed(made[:3])]
    assert not rest.has_more
    # every feedback is in the ledger, with a hash of its content rather than the comment
    rows = await store.fetchall("SELECT subject, body FROM ledger WHERE kind = 'run.feedback'")
    assert {r[0] for r in rows} == {m.id for m in made}
    assert all("note" not in r[1] and json.loads(r[1])["run_id"] == rid for r in rows)
    with pytest.raises(RequestError) as bad:
        await list_feedback(store, ANN, rid, before="fb_nope")
    assert bad.value.param == "before"


async def test_who_may_give_and_read_feedback(store: Store) -> None:
    rid = await submit_run(store, "greet", {}, owner=ANN)
    private = await submit_run(store, "greet", {}, owner=BOB)
    for who in (ANN, SAM, BOSS):  # the owner, a team-mate where the team shares, an admin
        given = await add_feedback(store, who, rid, label="seen")
        assert given.user_id == who.user_id
    assert {f.user_id for f in (await list_feedback(store, SAM, rid)).data} == {
        "u_ann",
        "u_sam",
        "u_boss",
    }
    # another member, a member of a team that does not share, another organisation's admin
    for who, run in (
        (BOB, rid),
        (ALIEN, rid),
        (ANN, private),
        (_who("cy", team="t_other"), private),
    ):
        with pytest.raises(RunNotFound):
            await add_feedback(store, who, run, score=1)
        with pytest.raises(RunNotFound):
            await list_feedback(store, who, run)
    with pytest.raises(RunNotFound):
        await add_feedback(store, ANN, "no-such-run", score=1)
    assert len((await list_feedback(store, BOB, private)).data) == 0
    count = await store.fetchone("SELECT COUNT(*) FROM run_feedback")
    assert count is not None and count[0] == 3


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({}, "score"),
        ({"score": math.inf}, "score"),
        ({"score": math.nan}, "score"),
        ({"score": 1e10}, "score"),
        ({"score": True}, "score"),
        ({"label": "has space"}, "label"),
        ({"label": "x" * 65}, "label"),
        ({"comment": ""}, "comment"),
        ({"comment": "x" * 4001}, "comment"),
        ({"comment": "bell\x07"}, "comment"),
        ({"score": 1, "metadata": {"k": "x" * 5000}}, "metadata"),
        ({"score": 1, "source": "robot"}, "source"),
    ],
)
async def test_invalid_fields_are_refused_by_name(
    store: Store, fields: dict[str, Any], param: str
) -> None:
    rid = await submit_run(store, "greet", {}, owner=ANN)
    with pytest.raises(RequestError) as err:
        await add_feedback(store, ANN, rid, **fields)
    assert err.value.param == param and err.value.http_status == 400
    assert (await list_feedback(store, ANN, rid)).data == []


# -- HTTP -------------------------------------------------------------------------------------

PROJECT = parse_project(
    {
        "providers": {"t": {"type": "test"}},
        "models": {"echo": {"provider": "t", "model": "echo-1"}},
        "routes": {"default": {"chain": ["echo"]}},
    }
)
PEOPLE = {"ann": "ts", "sam": "ts", "bob": "t2", "boss": None}


@dataclass
class World:
    base: str
    secrets: dict[str, str]
    user_ids: dict[str, str]
    run: str

    def call(self, who: str, method: str, path: str, **kw: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.secrets[who]}"}
        with httpx.Client(base_url=self.base, headers=headers, timeout=30) as c:
            return c.request(method, path, **kw)

    def give(self, who: str, body: Any, run: str | None = None) -> httpx.Response:
        return self.call(who, "POST", f"/v1/runs/{run or self.run}/feedback", json=body)


async def _seed(url: str) -> tuple[dict[str, str], dict[str, str], str]:
    db = await open_store(url)
    try:
        await migrate(db)
        admin = local_admin("cli")
        await create_team(db, admin, "ts", shares=True)
        await create_team(db, admin, "t2", shares=False)
        secrets, ids = {}, {}
        for name, team in PEOPLE.items():
            roles = ("admin",) if name == "boss" else ("member",)
            ids[name] = (await create_user(db, admin, name, team=team, roles=roles)).id
            _, secrets[name] = await create_key(db, admin, f"key-{name}", user=name)
        await db.execute("INSERT INTO orgs (id, name, created_at) VALUES ('org_two', 'two', 0)")
        alien_admin = Principal("org_two", "u_root2", "root2", roles=frozenset({"admin"}))
        ids["eve"] = (await create_user(db, alien_admin, "eve", roles=("admin",))).id
        _, secrets["eve"] = await create_key(db, alien_admin, "key-eve", user="eve")
        from elevenfactor.governance import principal_for_user

        ann = await principal_for_user(db, "ann")
        run = await submit_run(db, "greet", {"name": "ada"}, owner=ann)
        return secrets, ids, run
    finally:
        await db.close()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    tmp: Path = tmp_path_factory.mktemp(f"feedback-{request.param}")
    url = f"sqlite:///{tmp}/test.db" if request.param == "sqlite" else _pg_schema_url(request)
    secrets, ids, run = asyncio.run(_seed(url))
    settings = Settings(database_url=url, data_dir=tmp, dev=False, in_process_worker=False)
    with running_gateway(settings, PROJECT) as (base, _):
        yield World(base, secrets, ids, run)


def test_http_give_and_list(world: World) -> None:
    resp = world.give("ann", {"score": 0.9, "label": "helpful", "comment": "Good answer."})
    assert resp.status_code == 201, resp.text
    made = resp.json()
    assert made["object"] == "run.feedback" and made["run_id"] == world.run
    assert made["by"]["user_id"] == world.user_ids["ann"] and made["source"] == "human"
    assert (made["score"], made["label"], made["comment"]) == (0.9, "helpful", "Good answer.")
    for who in ("sam", "boss"):  # a team-mate in a sharing team, an admin of the organisation
        assert world.give(who, {"score": -1}).status_code == 201
    listed = world.call("sam", "GET", f"/v1/runs/{world.run}/feedback", params={"limit": 2})
    assert listed.status_code == 200, listed.text
    page = listed.json()
    assert page["object"] == "list" and page["has_more"] is True
    assert page["data"][0]["by"]["user_id"] == world.user_ids["boss"]
    older = world.call(
        "boss",
        "GET",
        f"/v1/runs/{world.run}/feedback",
        params={"limit": 1000, "before": page["data"][-1]["id"]},
    ).json()
    assert made["id"] in [f["id"] for f in older["data"]]


def test_http_others_get_404_as_for_a_missing_run(world: World) -> None:
    for who in ("bob", "eve"):  # another member; another organisation's admin
        _error(world.give(who, {"score": 1}), 404, "run_not_found")
        _error(world.call(who, "GET", f"/v1/runs/{world.run}/feedback"), 404, "run_not_found")
    _error(world.give("ann", {"score": 1}, run="no-such-run"), 404, "run_not_found")
    _error(world.give("ann", {"score": 1}, run="bad%20id"), 400, "invalid_id", "run_id")


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        ({}, "missing_required_parameter", "score"),
        ({"score": "1"}, "invalid_type", "score"),
        ({"score": True}, "invalid_type", "score"),
        ({"score": 2e9}, "invalid_value", "score"),
        ({"label": "two words"}, "invalid_value", "label"),
        ({"label": 7}, "invalid_type", "label"),
        ({"comment": "x" * 4001}, "invalid_value", "comment"),
        ({"comment": ""}, "invalid_value", "comment"),
        ({"score": 1, "metadata": [1]}, "invalid_type", "metadata"),
        ({"score": 1, "metadata": {"k": "x" * 5000}}, "invalid_value", "metadata"),
        ({"score": 1, "by": "someone"}, "unknown_parameter", "by"),
        ({"score": 1, "source": "offline"}, "unknown_parameter", "source"),
    ],
)
def test_http_bad_bodies_are_400_naming_the_field(
    world: World, body: dict[str, Any], code: str, param: str
) -> None:
    _error(world.give("ann", body), 400, code, param)


def test_http_bad_json_and_query(world: World) -> None:
    raw = world.call(
        "ann",
        "POST",
        f"/v1/runs/{world.run}/feedback",
        content=b"{nope",
        headers={"Content-Type": "application/json"},
    )
    _error(raw, 400, "invalid_json", "body")
    _error(world.give("ann", [1, 2]), 400, "invalid_type", "body")
    for raw_score in (b"1e999", b"NaN", b"Infinity"):  # a JSON encoder would not send these
        resp = world.call(
            "ann",
            "POST",
            f"/v1/runs/{world.run}/feedback",
            content=b'{"score": ' + raw_score + b"}",
            headers={"Content-Type": "application/json"},
        )
        assert resp.status_code == 400, resp.text
    q = world.call("ann", "GET", f"/v1/runs/{world.run}/feedback", params={"limit": 0})
    _error(q, 400, "invalid_value", "limit")
    q = world.call("ann", "GET", f"/v1/runs/{world.run}/feedback", params={"before": "fb_x"})
    _error(q, 400, "invalid_value", "before")


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)
BODY = st.dictionaries(
    st.sampled_from(["score", "label", "comment", "metadata", "extra"]) | st.text(max_size=8),
    JSON
    | st.floats(min_value=-2e9, max_value=2e9)
    | st.text(alphabet=st.characters(codec="utf-8"), max_size=80),
    max_size=5,
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(body=BODY)
@example(body={"score": 1e308, "label": "a" * 64})
@example(body={"comment": "\u0000"})
@example(body={"metadata": {"\u0000": "\ud7ff"}, "label": "ok"})
@example(body={"score": -1e9, "metadata": {}})
def test_http_fuzzed_bodies_never_fail_the_server(world: World, body: dict[str, Any]) -> None:
    resp = world.give("ann", body)
    assert resp.status_code in (201, 400), (resp.status_code, resp.text, body)
    if resp.status_code == 400:
        assert resp.json()["error"]["param"], resp.text


# -- the CLI ----------------------------------------------------------------------------------


async def _cli_seed(url: str) -> str:
    db = await open_store(url)
    try:
        await migrate(db)
        admin = local_admin("cli")
        for name in ("ann", "bob"):
            await create_user(db, admin, name, roles=("member",))
        from elevenfactor.governance import principal_for_user

        return await submit_run(db, "greet", {}, owner=await principal_for_user(db, "ann"))
    finally:
        await db.close()


def test_cli_round_trip(store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    rid = asyncio.run(_cli_seed(store_url))
    runner = CliRunner()
    env = {"DATABASE_URL": store_url}

    def invoke(*args: str) -> Any:
        return runner.invoke(main, ["runs", "feedback", *args], env=env)

    given = invoke(rid, "--score", "1", "--label", "correct", "--as", "ann", "--json")
    assert given.exit_code == 0, given.output
    made = json.loads(given.output)
    assert (made["score"], made["label"], made["source"]) == (1.0, "correct", "human")
    assert invoke(rid, "--comment", "too long-winded", "--as", "ann").exit_code == 0
    listed = invoke(rid, "--list", "--as", "ann", "--json")
    assert listed.exit_code == 0, listed.output
    data = json.loads(listed.output)["data"]
    assert [f["comment"] for f in data] == ["too long-winded", None]
    assert data[1]["id"] == made["id"]
    table = invoke(rid, "--list", "--as", "ann")
    assert "too long-winded" in table.output and "correct" in table.output
    # bob may not read ann's run: the same answer as a missing run; nothing given is an error
    denied = invoke(rid, "--score", "1", "--as", "bob")
    assert denied.exit_code != 0 and "run_not_found" in denied.output + str(denied.stderr)
    empty = invoke(rid, "--as", "ann")
    assert empty.exit_code != 0


async def test_deleting_a_run_deletes_its_feedback(store: Store) -> None:
    admin = local_admin()
    rid = await submit_run(store, "greet", {}, owner=admin)
    await add_feedback(store, admin, rid, score=1, comment="mentions a customer by name")
    await store.execute("UPDATE runs SET status = 'succeeded' WHERE id = ?", (rid,))
    await delete_run(store, rid, admin, "data subject request")
    rows = await store.fetchall("SELECT id FROM run_feedback WHERE run_id = ?", (rid,))
    assert rows == []
