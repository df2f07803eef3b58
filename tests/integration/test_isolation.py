"""Who sees and decides what, over real HTTP with real keys, outside dev mode, on both stores.

One organisation: A and C are members of team ``t1`` (which does not share), B of ``t2``, S1
and S2 of ``ts`` (which shares); R reviews for group ``finance``, R2 for group ``other``; AD is
the admin. A owns a finished run, a run parked on a ``finance`` approval, a run with a child run,
and a chat completion. Every runs/approvals endpoint is called as each of them.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from elevenfactor.config import Settings, parse_project
from elevenfactor.governance import create_key, create_team, create_user, local_admin
from elevenfactor.runtime import Programs, RunContext, run_child
from elevenfactor.server import Gateway
from elevenfactor.store import migrate, open_store
from tests.conftest import _pg_schema_url
from tests.support.serve import sse_events, wait_for
from tests.support.server import running_gateway

pytestmark = pytest.mark.integration

programs = Programs()


@programs.workflow("family")
async def family(ctx: RunContext, data: dict[str, Any]) -> dict[str, Any]:
    """A parent that runs ``greet`` as a child run."""
    return {"child": await run_child(ctx, "greet", {"name": data["name"]})}


PROJECT = parse_project(
    {
        "providers": {"t": {"type": "test"}},
        "models": {"echo": {"provider": "t", "model": "echo-1"}},
        "routes": {"default": {"chain": ["echo"]}},
        "programs": ["tests.support.programs:programs", f"{__name__}:programs"],
    }
)

# name: (team, roles, groups)
PEOPLE: dict[str, tuple[str | None, tuple[str, ...], tuple[str, ...]]] = {
    "A": ("t1", ("member",), ()),
    "B": ("t2", ("member",), ()),
    "C": ("t1", ("member",), ()),
    "S1": ("ts", ("member",), ()),
    "S2": ("ts", ("member",), ()),
    "R": (None, ("member", "reviewer"), ("finance",)),
    "R2": (None, ("member", "reviewer"), ("other",)),
    "AD": (None, ("admin",), ()),
}


@dataclass
class World:
    """The running server, everyone's keys and A's objects."""

    base: str
    url: str
    gw: Gateway
    secrets: dict[str, str]
    key_ids: dict[str, str]
    user_ids: dict[str, str]
    team_ids: dict[str, str]
    runs: dict[str, str] = field(default_factory=dict)
    approval: str = ""
    chat_trace: str = ""

    def client(self, who: str | None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.secrets[who]}"} if who else {}
        return httpx.Client(base_url=self.base, headers=headers, timeout=30)

    def get(self, who: str | None, path: str, **kw: Any) -> httpx.Response:
        with self.client(who) as c:
            return c.get(path, **kw)

    def post(self, who: str | None, path: str, body: Any = None, **kw: Any) -> httpx.Response:
        with self.client(who) as c:
            return c.post(path, json={} if body is None else body, **kw)

    def status(self, who: str, rid: str) -> str:
        resp = self.get(who, f"/v1/runs/{rid}")
        assert resp.status_code == 200, resp.text
        return str(resp.json()["status"])

    def submit(self, who: str, program: str, data: Any) -> str:
        resp = self.post(who, "/v1/runs", {"program": program, "input": data})
        assert resp.status_code == 201, resp.text
        return str(resp.json()["id"])

    def parked_transfer(self, who: str = "A") -> tuple[str, str]:
        """A new ``transfer`` run of ``who`` waiting on its finance approval, and the approval."""
        rid = self.submit(who, "transfer", {"to": "bob", "amount": 5})
        wait_for(lambda: self.status(who, rid) == "waiting", "the transfer to park")
        listed = self.get(who, "/v1/approvals", params={"run_id": rid}).json()["data"]
        [item] = listed
        assert item["group"] == "finance" and item["status"] == "pending"
        return rid, str(item["id"])


async def _people(
    url: str,
) -> tuple[dict[str, str], dict[str, str], dict[str, str], dict[str, str]]:
    db = await open_store(url)
    try:
        await migrate(db)
        admin = local_admin("cli")
        teams = {
            name: (await create_team(db, admin, name, shares=name == "ts")).id
            for name in ("t1", "t2", "ts")
        }
        secrets, key_ids, user_ids = {}, {}, {}
        for name, (team, roles, groups) in PEOPLE.items():
            user = await create_user(db, admin, name, team=team, roles=roles, groups=groups)
            key, secret = await create_key(db, admin, f"key-{name}", user=name)
            secrets[name], key_ids[name], user_ids[name] = secret, key.id, user.id
        return secrets, key_ids, user_ids, teams
    finally:
        await db.close()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    tmp: Path = tmp_path_factory.mktemp(f"isolation-{request.param}")
    url = f"sqlite:///{tmp}/test.db" if request.param == "sqlite" else _pg_schema_url(request)
    secrets, key_ids, user_ids, teams = asyncio.run(_people(url))
    settings = Settings(database_url=url, data_dir=tmp, dev=False, in_process_worker=True)
    with running_gateway(settings, PROJECT) as (base, gw):
        w = World(base, url, gw, secrets, key_ids, user_ids, teams)
        w.runs["greet"] = w.submit("A", "greet", {"name": "ada"})
        w.runs["family"] = w.submit("A", "family", {"name": "kid"})
        w.runs["transfer"], w.approval = w.parked_transfer("A")
        for rid in (w.runs["greet"], w.runs["family"]):
            wait_for(lambda rid=rid: w.status("A", rid) == "succeeded", "A's runs to finish")
        children = [
            r
            for r in w.get("A", "/v1/runs", params={"program": "greet"}).json()["data"]
            if r["parent_id"] == w.runs["family"]
        ]
        [child] = children
        w.runs["child"] = child["id"]
        w.chat_trace = uuid.uuid4().hex
        chat = w.post(
            "A",
            "/v1/chat/completions",
            {"model": "default", "messages": [{"role": "user", "content": "hi"}]},
            headers={"traceparent": f"00-{w.chat_trace}-{'1' * 16}-01"},
        )
        assert chat.status_code == 200, chat.text
        yield w


def _error(resp: httpx.Response, status: int, code: str) -> None:
    assert resp.status_code == status, (resp.status_code, resp.text)
    assert resp.json()["error"]["code"] == code, resp.text


def test_health_is_open_and_everything_else_needs_a_real_key(world: World) -> None:
    assert world.get(None, "/healthz").status_code == 200
    assert world.get(None, "/readyz").json() == {"status": "ready"}
    _error(world.get(None, "/v1/models"), 401, "invalid_api_key")
    _error(world.get(None, "/v1/runs"), 401, "invalid_api_key")
    # Outside dev mode the dev placeholder is no key at all, and a made-up key is refused.
    for header in ("Bearer dev", "Bearer ef_00000000_nope", "Basic QTpC"):
        resp = httpx.get(world.base + "/v1/models", headers={"Authorization": header})
        _error(resp, 401, "invalid_api_key")
    _error(
        world.post(None, "/v1/runs", {"program": "greet", "input": {"name": "x"}}),
        401,
        "invalid_api_key",
    )
    models = world.get("B", "/v1/models")
    assert models.status_code == 200 and "default" in [m["id"] for m in models.json()["data"]]


@pytest.mark.parametrize("who", ["B", "C", "R2", "S1"])
def test_outsiders_get_404_for_every_object_of_A(world: World, who: str) -> None:
    """Another team, a team-mate in a team that does not share, a reviewer of another group and
    a member of a sharing team all get the answer a missing id gets."""
    a_runs = set(world.runs.values())
    for params in ({}, {"program": "greet"}, {"status": "waiting"}, {"limit": 1000}):
        listed = world.get(who, "/v1/runs", params=params)
        assert listed.status_code == 200
        assert a_runs.isdisjoint(r["id"] for r in listed.json()["data"])
    missing = world.get(who, "/v1/runs/no-such-run")
    for rid in a_runs:
        shown = world.get(who, f"/v1/runs/{rid}")
        _error(shown, 404, "run_not_found")
        assert shown.json()["error"]["type"] == missing.json()["error"]["type"]
        _error(world.get(who, f"/v1/runs/{rid}/events"), 404, "run_not_found")
    _error(world.post(who, f"/v1/runs/{world.runs['transfer']}/cancel"), 404, "run_not_found")
    # Only admins delete; the refusal says so without saying whether the run exists.
    with world.client(who) as c:
        refused = c.delete(f"/v1/runs/{world.runs['greet']}", params={"reason": "mine now"})
    _error(refused, 403, "permission_denied")
    for params in (
        {},
        {"status": "all"},
        {"run_id": world.runs["transfer"]},
        {"group": "finance", "status": "all"},
    ):
        approvals = world.get(who, "/v1/approvals", params=params)
        assert approvals.status_code == 200
        assert world.approval not in [a["id"] for a in approvals.json()["data"]]
    decided = world.post(who, f"/v1/approvals/{world.approval}", {"action": "approve"})
    _error(decided, 404, "approval_not_found")
    # Nothing changed for A.
    assert world.status("A", world.runs["transfer"]) == "waiting"
    assert world.status("A", world.runs["greet"]) == "succeeded"
    [still] = world.get("A", "/v1/approvals", params={"run_id": world.runs["transfer"]}).json()[
        "data"
    ]
    assert still["status"] == "pending" and still["decision"] is None


def test_a_run_id_of_someone_else_cannot_be_claimed(world: World) -> None:
    """Submitting with the id of A's run does not hand A's run (or its result) to B."""
    resp = world.post(
        "B", "/v1/runs", {"program": "greet", "input": {"name": "ada"}, "id": world.runs["greet"]}
    )
    assert resp.status_code == 409, resp.text
    assert "ADA" not in resp.text
    _error(world.get("B", f"/v1/runs/{world.runs['greet']}"), 404, "run_not_found")


def test_owner_reads_its_runs_events_and_child_runs(world: World) -> None:
    listed = {r["id"]: r for r in world.get("A", "/v1/runs").json()["data"]}
    assert set(world.runs.values()) <= set(listed)
    child = listed[world.runs["child"]]
    assert child["parent_id"] == world.runs["family"]
    assert child["owner"] == {"user_id": world.user_ids["A"], "team_id": world.team_ids["t1"]}
    family = world.get("A", f"/v1/runs/{world.runs['family']}").json()
    assert family["result"] == {"child": {"hello": "KID"}}
    events = _events(world, "A", world.runs["greet"])
    assert events[-1][0] == "end" and events[-1][1]["result"] == {"hello": "ADA"}


def _events(world: World, who: str, rid: str) -> list[tuple[str, dict[str, Any]]]:
    with world.client(who) as c, c.stream("GET", f"/v1/runs/{rid}/events") as resp:
        assert resp.status_code == 200
        return list(sse_events(resp))


def test_a_sharing_team_sees_its_runs_and_nobody_else_does(world: World) -> None:
    rid = world.submit("S1", "greet", {"name": "team"})
    wait_for(lambda: world.status("S1", rid) == "succeeded", "S1's run to finish")
    listed = world.get("S2", "/v1/runs").json()["data"]
    assert rid in [r["id"] for r in listed]
    assert world.get("S2", f"/v1/runs/{rid}").json()["result"] == {"hello": "TEAM"}
    assert _events(world, "S2", rid)[-1][0] == "end"
    # A's team-mate C does not share; A (another team) does not see the sharing team's run.
    for who in ("A", "B", "C"):
        _error(world.get(who, f"/v1/runs/{rid}"), 404, "run_not_found")
        assert rid not in [r["id"] for r in world.get(who, "/v1/runs").json()["data"]]
    # The sharing team-mate sees S1's approval but, as a member, cannot decide it.
    trid, approval = world.parked_transfer("S1")
    seen = world.get("S2", "/v1/approvals", params={"run_id": trid}).json()["data"]
    assert [a["id"] for a in seen] == [approval]
    _error(
        world.post("S2", f"/v1/approvals/{approval}", {"action": "approve"}),
        403,
        "permission_denied",
    )
    # It may cancel it, as S1 could.
    cancelled = world.post("S2", f"/v1/runs/{trid}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"


def test_a_member_cannot_decide_even_its_own_approval(world: World) -> None:
    own = world.get("A", "/v1/approvals").json()["data"]
    assert world.approval in [a["id"] for a in own]
    _error(
        world.post("A", f"/v1/approvals/{world.approval}", {"action": "approve"}),
        403,
        "permission_denied",
    )
    _error(
        world.post("C", f"/v1/approvals/{world.approval}", {"action": "approve"}),
        404,
        "approval_not_found",
    )
    assert world.status("A", world.runs["transfer"]) == "waiting"


def test_only_a_reviewer_of_the_group_decides_and_the_journal_names_it(world: World) -> None:
    rid, approval = world.parked_transfer("A")
    r2 = world.post("R2", f"/v1/approvals/{approval}", {"action": "approve"})
    assert r2.status_code in (403, 404), r2.text
    assert approval not in [
        a["id"] for a in world.get("R2", "/v1/approvals", params={"status": "all"}).json()["data"]
    ]
    assert approval in [a["id"] for a in world.get("R", "/v1/approvals").json()["data"]]
    for field_name, value in (("by", "user:AD"), ("decided_by", "user:AD"), ("decider", {})):
        forged = world.post(
            "R", f"/v1/approvals/{approval}", {"action": "approve", field_name: value}
        )
        _error(forged, 400, "unknown_parameter")
        assert forged.json()["error"]["param"] == field_name
    assert world.status("A", rid) == "waiting"
    decided = world.post("R", f"/v1/approvals/{approval}", {"action": "approve", "reason": "ok"})
    assert decided.status_code == 200, decided.text
    assert decided.json()["decision"]["decided_by"] == "user:R"
    wait_for(lambda: world.status("A", rid) == "succeeded", "the transfer to finish")
    shown = world.get("A", f"/v1/runs/{rid}").json()
    assert shown["result"]["by"] == "user:R"
    [step] = [s for s in shown["steps"] if s["kind"] == "approval"]
    assert step["output"]["decided_by"] == "user:R"
    assert step["output"]["decider"] == {
        "org_id": "org_default",
        "user_id": world.user_ids["R"],
        "user": "R",
        "key_id": world.key_ids["R"],
        "via": "key",
    }
    _error(
        world.post("AD", f"/v1/approvals/{approval}", {"action": "reject"}), 409, "approval_decided"
    )


def test_the_admin_sees_and_acts_on_everything_in_the_org(world: World) -> None:
    listed = {r["id"] for r in world.get("AD", "/v1/runs", params={"limit": 1000}).json()["data"]}
    assert set(world.runs.values()) <= listed
    for rid in world.runs.values():
        assert world.get("AD", f"/v1/runs/{rid}").status_code == 200
    assert _events(world, "AD", world.runs["child"])[-1][1]["result"] == {"hello": "KID"}
    approvals = world.get("AD", "/v1/approvals", params={"status": "all", "limit": 1000})
    assert world.approval in [a["id"] for a in approvals.json()["data"]]
    rid, approval = world.parked_transfer("B")
    cancelled = world.post("AD", f"/v1/runs/{rid}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    [gone] = world.get("B", "/v1/approvals", params={"run_id": rid, "status": "all"}).json()["data"]
    assert gone["id"] == approval and gone["status"] == "cancelled"


def test_call_records_carry_the_callers_ids(world: World) -> None:
    chat = world.post(
        "B",
        "/v1/chat/completions",
        {"model": "default", "messages": [{"role": "user", "content": "b"}]},
    )
    assert chat.status_code == 200
    b_trace = chat.headers["x-trace-id"]

    async def rows() -> dict[str, tuple[Any, ...]]:
        db = await open_store(world.url)
        try:
            deadline = time.monotonic() + 10
            while True:
                found = await db.fetchall(
                    "SELECT trace_id, org_id, team_id, user_id, api_key_id FROM model_calls"
                    " WHERE trace_id IN (?, ?)",
                    (world.chat_trace, b_trace),
                )
                if len(found) == 2 or time.monotonic() > deadline:
                    return {r[0]: tuple(r[1:]) for r in found}
                await asyncio.sleep(0.05)
        finally:
            await db.close()

    found = asyncio.run(rows())
    assert found[world.chat_trace] == (
        "org_default",
        world.team_ids["t1"],
        world.user_ids["A"],
        world.key_ids["A"],
    )
    assert found[b_trace] == (
        "org_default",
        world.team_ids["t2"],
        world.user_ids["B"],
        world.key_ids["B"],
    )
