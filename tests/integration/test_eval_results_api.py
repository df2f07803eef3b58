"""Stored eval results over HTTP, on both stores, with real keys outside dev mode: list (pages,
suite), one result (JSON with its cases, or the HTML report), a suite's history; another
member's or organisation's result is 404 as a missing one; malformed queries are 400 naming
the parameter; ``/v1/evals/online`` and ``/v1/evals/history`` are not taken for ids."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from elevenfactor.config import Settings, parse_project
from elevenfactor.errors import RequestError
from elevenfactor.evals._results import CaseResult, Score, SuiteResult
from elevenfactor.evals._store import list_results, save_result
from elevenfactor.governance import (
    DEFAULT_ORG,
    Principal,
    create_key,
    create_team,
    create_user,
    local_admin,
    principal_for_user,
)
from elevenfactor.store import Store, migrate, open_store
from tests.conftest import _pg_schema_url
from tests.support.http import expect_error as _error
from tests.support.server import running_gateway

pytestmark = pytest.mark.integration


def _suite(run_id: str, finished: float, second: bool, suite: str = "qa") -> SuiteResult:
    """Two cases: ``c1`` passes, ``c2`` passes if ``second`` (pass rate 1.0 or 0.5)."""
    return SuiteResult(
        suite,
        "v1",
        results=[
            CaseResult("c1", 0, (Score("exact", True, 1.0),), output="ok", cost_usd=0.01),
            CaseResult("c2", 0, (Score("exact", second, 1.0 if second else 0.0),), cost_usd=0.02),
        ],
        thresholds={"c1": 1.0, "c2": 1.0},
        metadata={
            "run_id": run_id,
            "target": "greet",
            "model": "echo",
            "started_at": finished - 5,
            "finished_at": finished,
        },
    )


# -- the library: pages -----------------------------------------------------------------------


async def test_list_results_pages_with_a_cursor_the_caller_sees(store: Store) -> None:
    ann = Principal(DEFAULT_ORG, "u_ann", "ann", roles=frozenset({"member"}))
    bob = Principal(DEFAULT_ORG, "u_bob", "bob", roles=frozenset({"member"}))
    for i, at in enumerate((100.0, 200.0, 200.0, 300.0)):  # two finish at the same time
        await save_result(store, ann, _suite(f"ev_a{i}", at, True))
    await save_result(store, bob, _suite("ev_b0", 250.0, True))
    first = await list_results(store, ann, limit=2)
    assert [r.id for r in first] == ["ev_a3", "ev_a2"]
    rest = await list_results(store, ann, limit=10, before=first[-1].id)
    assert [r.id for r in rest] == ["ev_a1", "ev_a0"]
    for cursor in ("ev_b0", "ev_nope"):  # another's result is no cursor, as a missing one
        with pytest.raises(RequestError) as bad:
            await list_results(store, ann, before=cursor)
        assert (bad.value.param, bad.value.code, bad.value.http_status) == (
            "before",
            "invalid_value",
            400,
        )


# -- HTTP -------------------------------------------------------------------------------------

PROJECT = parse_project(
    {
        "providers": {"t": {"type": "test"}},
        "models": {"echo": {"provider": "t", "model": "echo-1"}},
        "routes": {"default": {"chain": ["echo"]}},
    }
)
PEOPLE = {"ann": "ts", "sam": "ts", "bob": "t2", "boss": None}
# id: (owner, finished_at, c2 passes, suite)
RESULTS = {
    "ev_ann_1": ("ann", 1000.0, True, "qa"),
    "ev_ann_2": ("ann", 2000.0, False, "qa"),
    "ev_ann_3": ("ann", 3000.0, True, "qa"),
    "ev_ann_x": ("ann", 2500.0, True, "other"),
    "ev_bob_1": ("bob", 1500.0, False, "qa"),
    "ev_eve_1": ("eve", 1800.0, True, "qa"),
}


@dataclass
class World:
    base: str
    secrets: dict[str, str]

    def get(self, who: str | None, path: str, **params: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.secrets[who]}"} if who else {}
        with httpx.Client(base_url=self.base, headers=headers, timeout=30) as c:
            return c.get(path, params=params)

    def ok(self, who: str, path: str, **params: Any) -> Any:
        resp = self.get(who, path, **params)
        assert resp.status_code == 200, resp.text
        return resp.json()


async def _seed(url: str) -> dict[str, str]:
    db = await open_store(url)
    try:
        await migrate(db)
        admin = local_admin("cli")
        await create_team(db, admin, "ts", shares=True)
        await create_team(db, admin, "t2", shares=False)
        secrets = {}
        for name, team in PEOPLE.items():
            roles = ("admin",) if name == "boss" else ("member",)
            await create_user(db, admin, name, team=team, roles=roles)
            _, secrets[name] = await create_key(db, admin, f"key-{name}", user=name)
        await db.execute("INSERT INTO orgs (id, name, created_at) VALUES ('org_two', 'two', 0)")
        alien_admin = Principal("org_two", "u_root2", "root2", roles=frozenset({"admin"}))
        await create_user(db, alien_admin, "eve", roles=("admin",))
        _, secrets["eve"] = await create_key(db, alien_admin, "key-eve", user="eve")
        for rid, (owner, at, second, suite) in RESULTS.items():
            who = await principal_for_user(db, owner, org="two" if owner == "eve" else "default")
            await save_result(db, who, _suite(rid, at, second, suite), tokens=42)
        return secrets
    finally:
        await db.close()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    tmp: Path = tmp_path_factory.mktemp(f"evalapi-{request.param}")
    url = f"sqlite:///{tmp}/test.db" if request.param == "sqlite" else _pg_schema_url(request)
    secrets = asyncio.run(_seed(url))
    settings = Settings(database_url=url, data_dir=tmp, dev=False, in_process_worker=False)
    with running_gateway(settings, PROJECT) as (base, _):
        yield World(base, secrets)


def _ids(page: dict[str, Any]) -> list[str]:
    return [r["id"] for r in page["data"]]


def test_list_sees_what_the_caller_may_newest_first_with_pages(world: World) -> None:
    mine = ["ev_ann_3", "ev_ann_x", "ev_ann_2", "ev_ann_1"]
    page = world.ok("ann", "/v1/evals")
    assert page["object"] == "list" and _ids(page) == mine and page["has_more"] is False
    assert world.ok("sam", "/v1/evals")["data"] == page["data"]  # the team shares
    assert _ids(world.ok("bob", "/v1/evals")) == ["ev_bob_1"]  # his team does not
    assert _ids(world.ok("eve", "/v1/evals")) == ["ev_eve_1"]  # another organisation
    assert _ids(world.ok("boss", "/v1/evals")) == [*mine[:3], "ev_bob_1", "ev_ann_1"]
    row = page["data"][0]
    assert (row["object"], row["suite"], row["status"], row["pass_rate"]) == (
        "eval.result",
        "qa",
        "passed",
        1.0,
    )
    assert (row["cases"], row["cases_passed"], row["tokens"], row["target"]) == (2, 2, 42, "greet")
    assert row["cost_usd"] == pytest.approx(0.03) and "result" not in row
    first = world.ok("ann", "/v1/evals", limit=2)
    assert _ids(first) == mine[:2] and first["has_more"] is True
    rest = world.ok("ann", "/v1/evals", limit=2, before=_ids(first)[-1])
    assert _ids(rest) == mine[2:] and rest["has_more"] is False
    qa = world.ok("ann", "/v1/evals", suite="qa")
    assert _ids(qa) == ["ev_ann_3", "ev_ann_2", "ev_ann_1"]
    assert world.ok("ann", "/v1/evals", suite="nothing")["data"] == []


def test_one_result_with_its_cases_and_as_html(world: World) -> None:
    got = world.ok("ann", "/v1/evals/ev_ann_2")
    assert got["id"] == "ev_ann_2" and got["status"] == "failed" and got["pass_rate"] == 0.5
    cases = {c["case_id"]: c for c in got["result"]["cases"]}
    assert cases["c1"]["passed"] is True and cases["c2"]["passed"] is False
    assert [r["case_id"] for r in got["result"]["results"]] == ["c1", "c2"]
    assert world.ok("sam", "/v1/evals/ev_ann_2")["id"] == "ev_ann_2"
    assert world.ok("boss", "/v1/evals/ev_bob_1")["owner"]["org_id"] == DEFAULT_ORG
    page = world.get("ann", "/v1/evals/ev_ann_2", format="html")
    assert page.status_code == 200, page.text
    assert page.headers["content-type"].startswith("text/html")
    assert page.text.startswith("<!DOCTYPE html>") and "eval qa" in page.text
    assert "<svg" in page.text  # the suite's pass-rate trend
    csp = page.headers["content-security-policy"]  # an escaped output could never run anyway
    assert "default-src 'none'" in csp and "script-src" not in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    assert world.get("ann", "/v1/evals/ev_ann_2", format="json").json()["id"] == "ev_ann_2"


def test_others_get_404_as_for_a_missing_result(world: World) -> None:
    for who, rid in (
        ("bob", "ev_ann_1"),  # another member; his team does not share
        ("ann", "ev_bob_1"),
        ("eve", "ev_ann_1"),  # another organisation's admin
        ("boss", "ev_eve_1"),
        ("ann", "ev_none"),
    ):
        _error(world.get(who, f"/v1/evals/{rid}"), 404, "eval_not_found")
        _error(world.get(who, f"/v1/evals/{rid}", format="html"), 404, "eval_not_found")


def test_history_is_the_suite_oldest_first_in_scope(world: World) -> None:
    hist = world.ok("ann", "/v1/evals/history", suite="qa")
    assert hist["object"] == "eval.history" and hist["suite"] == "qa"
    assert [(p["id"], p["pass_rate"], p["finished_at"]) for p in hist["data"]] == [
        ("ev_ann_1", 1.0, 1000.0),
        ("ev_ann_2", 0.5, 2000.0),
        ("ev_ann_3", 1.0, 3000.0),
    ]
    point = hist["data"][1]
    assert (point["cases"], point["cases_passed"], point["cases_failed"]) == (2, 1, 1)
    assert point["cost_usd"] == pytest.approx(0.03) and point["status"] == "failed"
    assert [p["id"] for p in world.ok("ann", "/v1/evals/history", suite="qa", limit=2)["data"]] == [
        "ev_ann_2",
        "ev_ann_3",
    ]
    assert [p["id"] for p in world.ok("bob", "/v1/evals/history", suite="qa")["data"]] == [
        "ev_bob_1"
    ]
    assert [p["id"] for p in world.ok("eve", "/v1/evals/history", suite="qa")["data"]] == [
        "ev_eve_1"
    ]
    assert len(world.ok("boss", "/v1/evals/history", suite="qa")["data"]) == 4
    assert world.ok("ann", "/v1/evals/history", suite="nothing")["data"] == []


def test_online_and_history_are_not_taken_for_ids(world: World) -> None:
    assert world.ok("ann", "/v1/evals/online")["object"] == "online_eval_summary"
    _error(world.get("ann", "/v1/evals/history"), 400, "missing_required_parameter", "suite")


@pytest.mark.parametrize(
    ("path", "params", "code", "param"),
    [
        ("/v1/evals", {"limit": "0"}, "invalid_value", "limit"),
        ("/v1/evals", {"limit": "501"}, "invalid_value", "limit"),
        ("/v1/evals", {"limit": "ten"}, "invalid_type", "limit"),
        ("/v1/evals", {"before": "ev_none"}, "invalid_value", "before"),
        ("/v1/evals", {"before": "ev_bob_1"}, "invalid_value", "before"),  # not ann's to see
        ("/v1/evals", {"before": "bad id"}, "invalid_value", "before"),
        ("/v1/evals", {"suite": "x" * 300}, "invalid_value", "suite"),
        ("/v1/evals", {"owner": "bob"}, "unknown_parameter", "owner"),
        ("/v1/evals/history", {"suite": "qa", "limit": "-1"}, "invalid_value", "limit"),
        ("/v1/evals/history", {"suite": "q a"}, "invalid_value", "suite"),
        ("/v1/evals/ev_ann_1", {"format": "pdf"}, "invalid_value", "format"),
        ("/v1/evals/bad%20id", {}, "invalid_id", "result_id"),
    ],
)
def test_malformed_queries_are_400_naming_the_parameter(
    world: World, path: str, params: dict[str, str], code: str, param: str
) -> None:
    _error(world.get("ann", path, **params), 400, code, param)


def test_authentication_and_openapi(world: World) -> None:
    for path in ("/v1/evals", "/v1/evals/ev_ann_1", "/v1/evals/history?suite=qa"):
        assert world.get(None, path).status_code == 401
    paths = world.ok("ann", "/openapi.json")["paths"]
    assert set(paths["/v1/evals"]) == {"get"}
    assert set(paths["/v1/evals/history"]) == {"get"}
    one = paths["/v1/evals/{result_id}"]["get"]
    assert {p["name"] for p in one["parameters"]} >= {"result_id", "format"}
    assert {p["name"] for p in paths["/v1/evals"]["get"]["parameters"]} >= {
        "suite",
        "limit",
        "before",
    }
