"""Budgets and kill switches through the CLI and over HTTP with real keys, on SQLite and
PostgreSQL: admins only, organisations apart, malformed input a 400 (never a 500)."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result

from elevenfactor.cli import main
from elevenfactor.config import Settings, parse_project
from elevenfactor.governance import (
    create_key,
    create_user,
    local_admin,
    principal_for_user,
    set_budget,
)
from elevenfactor.runtime import get_run, submit_run
from elevenfactor.store import migrate, open_store
from tests.support.server import running_gateway

pytestmark = pytest.mark.integration

PROJECT = parse_project(
    {
        "providers": {"t": {"type": "test"}},
        "models": {"echo": {"provider": "t", "model": "echo-1"}},
        "routes": {"default": {"chain": ["echo"]}},
    }
)


async def _ledger(url: str) -> list[tuple[str, str]]:
    db = await open_store(url)
    try:
        rows = await db.fetchall("SELECT kind, actor FROM ledger ORDER BY seq")
    finally:
        await db.close()
    return [(str(kind), json.loads(str(actor)).get("user")) for kind, actor in rows]


def _bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


# -- the CLI --------------------------------------------------------------------------------


async def _setup(url: str) -> str:
    """Migrate; create member ``mia`` with a queued run; return the run's id."""
    db = await open_store(url)
    try:
        await migrate(db)
        await create_user(db, local_admin("cli"), "mia")
        mia = await principal_for_user(db, "mia")
        return await submit_run(db, "some-agent", {}, owner=mia)
    finally:
        await db.close()


async def _run_status(url: str, run_id: str) -> str:
    db = await open_store(url)
    try:
        return (await get_run(db, run_id)).status
    finally:
        await db.close()


def test_cli_sets_budgets_and_pulls_kill_switches(
    store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    run_id = asyncio.run(_setup(store_url))
    runner = CliRunner()

    def cli(*args: str, ok: bool = True) -> Result:
        result = runner.invoke(main, list(args), env={"DATABASE_URL": store_url})
        if ok:
            assert result.exit_code == 0, (args, result.output, result.exception)
        return result

    made = json.loads(
        cli(
            *("budgets", "set", "user:mia", "--limit", "2.5", "--window", "day"),
            *("--alert", "0.8", "--alert", "0.5", "--soft", "--json"),
        ).stdout
    )
    assert (made["scope"], made["limit"], made["alerts"], made["soft"]) == (
        "user:mia",
        2.5,
        [0.5, 0.8],
        True,
    )
    assert made["spent"] == 0 and made["resets_at_iso"].endswith("T00:00:00Z")
    cli("budgets", "set", "org", "--limit", "100", "--window", "month")
    cli("budgets", "set", "user:mia", "--limit", "3", "--window", "day")  # an update
    listed = json.loads(cli("budgets", "list", "--json").stdout)
    assert [(b["scope"], b["window"], b["limit"]) for b in listed] == [
        ("org", "month", 100.0),
        ("user:mia", "day", 3.0),
    ]
    table = cli("budgets", "list").stdout
    assert "user:mia" in table and "$3.00" in table
    shown = json.loads(cli("budgets", "show", "user:mia", "--json").stdout)
    assert shown["id"] == made["id"] and shown["limit"] == 3.0

    for args, code in [
        (("budgets", "set", "user:ghost", "--limit", "1"), "not_found"),
        (("budgets", "set", "org", "--limit", "-1"), "invalid_budget"),
        (("budgets", "set", "org", "--limit", "inf"), "invalid_budget"),
        (("budgets", "set", "planet:mars", "--limit", "1"), "invalid_budget"),
        (("budgets", "set", "org", "--limit", "1", "--alert", "0"), "invalid_budget"),
        (("budgets", "set", "org", "--limit", "1", "--on-exceed", "pray"), "invalid_budget"),
        (("budgets", "set", "org", "--limit", "1", "--webhook", "file:///x"), "invalid_budget"),
        (("budgets", "set", "org", "--limit", "1", "--as", "mia"), "permission_denied"),
        (("budgets", "list", "--as", "mia"), "permission_denied"),
        (("kill", "user:mia", "--reason", "x", "--as", "mia"), "permission_denied"),
        (("kill", "org", "--reason", "x"), "invalid_budget"),
        (("kill", "user:mia", "--reason", " "), "missing_required_parameter"),
        (("budgets", "show", "nothing"), "not_found"),
    ]:
        refused = cli(*args, ok=False)
        assert refused.exit_code == 2 and f"error[{code}]" in refused.stderr, (args, refused)

    killed = json.loads(cli("kill", "user:mia", "--reason", "runaway", "--json").stdout)
    assert killed["scope"] == "user:mia" and killed["runs"] == [run_id]
    assert asyncio.run(_run_status(store_url, run_id)) == "cancelled"
    again = json.loads(cli("kill", "user:mia", "--reason", "again", "--json").stdout)
    assert again["id"] == killed["id"] and again["reason"] == "runaway"
    assert [k["scope"] for k in json.loads(cli("kills", "--json").stdout)] == ["user:mia"]
    assert "runaway" in cli("kills").stdout
    cli("unkill", "user:mia", "--reason", "fixed")
    assert json.loads(cli("kills", "--json").stdout) == []
    [lifted] = json.loads(cli("kills", "--all", "--json").stdout)
    assert lifted["lifted_by"] == "local" and lifted["lift_reason"] == "fixed"
    assert cli("unkill", "user:mia", "--reason", "x", ok=False).exit_code == 2

    cli("budgets", "delete", made["id"])
    assert [b["scope"] for b in json.loads(cli("budgets", "list", "--json").stdout)] == ["org"]
    ledger = Counter(k for k, _ in asyncio.run(_ledger(store_url)) if "budget" in k or "kill" in k)
    assert ledger == {
        "admin.budget.set": 3,
        "admin.budget.delete": 1,
        "admin.kill": 1,
        "admin.unkill": 1,
    }


# -- HTTP -----------------------------------------------------------------------------------


@pytest.fixture
async def gateway(store_url: str) -> AsyncIterator[tuple[str, dict[str, str]]]:
    """A gateway outside dev mode; the secrets of ``root`` (an admin), ``mia`` (a member) and
    ``oscar`` (an admin of another organisation)."""
    db = await open_store(store_url)
    await migrate(db)
    cli = local_admin("cli")
    await create_user(db, cli, "root", roles=["admin"])
    await create_user(db, cli, "mia")
    await create_user(db, cli, "bo")
    await db.execute("INSERT INTO orgs (id, name, created_at) VALUES ('org_b', 'b', 0)", ())
    await db.execute(
        "INSERT INTO users (id, org_id, team_id, name, kind, roles, created_at)"
        " VALUES ('user_oscar', 'org_b', NULL, 'oscar', 'user', 'admin', 0)",
        (),
    )
    oscar = await principal_for_user(db, "oscar", org="b")
    await set_budget(db, oscar, "org", 7.0, window="week")
    secrets = {
        "root": (await create_key(db, cli, "root-key", user="root"))[1],
        "mia": (await create_key(db, cli, "mia-key", user="mia"))[1],
        "oscar": (await create_key(db, oscar, "oscar-key", user="oscar"))[1],
    }
    await db.close()
    with running_gateway(Settings(database_url=store_url, dev=False), PROJECT) as (base, _):
        yield base, secrets


def _chat(base: str, secret: str) -> httpx.Response:
    return httpx.post(
        base + "/v1/chat/completions",
        json={"model": "default", "messages": [{"role": "user", "content": "hi"}]},
        headers=_bearer(secret),
    )


async def test_an_admin_manages_budgets_and_kill_switches(
    gateway: tuple[str, dict[str, str]], store_url: str
) -> None:
    base, secrets = gateway
    async with httpx.AsyncClient(base_url=base, headers=_bearer(secrets["root"])) as http:
        body = {"scope": "user:mia", "limit": 2, "window": "day", "alerts": [0.5]}
        r = await http.post("/v1/admin/budgets", json=body)
        assert r.status_code == 201, r.text
        made = r.json()
        assert (made["scope"], made["limit"], made["spent"], made["reserved"]) == (
            "user:mia",
            2.0,
            0.0,
            0.0,
        )
        r = await http.post("/v1/admin/budgets", json={**body, "limit": 3.5})
        assert r.status_code == 200 and r.json()["id"] == made["id"]
        await http.post("/v1/admin/budgets", json={"scope": "user:bo", "limit": 1})
        await http.post("/v1/admin/budgets", json={"scope": "org", "limit": 50, "soft": True})
        listed = (await http.get("/v1/admin/budgets")).json()["data"]
        assert [b["scope"] for b in listed] == ["org", "user:bo", "user:mia"]  # not org b's
        assert (await http.get("/v1/admin/budgets/user:mia")).json()["limit"] == 3.5
        r = await http.patch(
            f"/v1/admin/budgets/{made['id']}",
            json={"limit": 4, "webhook": "https://example.com/hook", "on_exceed": "approve:fin"},
        )
        assert r.status_code == 200, r.text
        assert (r.json()["limit"], r.json()["on_exceed"]) == (4.0, "approve:fin")
        r = await http.patch(f"/v1/admin/budgets/{made['id']}", json={"webhook": None})
        assert r.json()["webhook"] is None and r.json()["limit"] == 4.0

        mine = await http.get("/v1/budgets", headers=_bearer(secrets["mia"]))
        assert mine.status_code == 200
        assert sorted(b["scope"] for b in mine.json()["data"]) == ["org", "user:mia"]

        assert _chat(base, secrets["mia"]).status_code == 200
        r = await http.post("/v1/admin/kills", json={"scope": "key:mia-key", "reason": "leaked"})
        assert r.status_code == 201, r.text
        switch = r.json()
        assert switch["created_by"] == "root" and switch["runs"] == []
        again = await http.post("/v1/admin/kills", json={"scope": "key:mia-key", "reason": "x"})
        assert again.status_code == 200 and again.json()["id"] == switch["id"]
        refused = _chat(base, secrets["mia"])  # at once: the change went through this process
        assert refused.status_code == 403, refused.text
        err = refused.json()["error"]
        assert err["code"] == "killed" and err["details"]["kill_switch"] == switch["id"]
        assert "leaked" in err["message"] and err["details"]["created_by"] == "root"
        assert [k["id"] for k in (await http.get("/v1/admin/kills")).json()["data"]] == [
            switch["id"]
        ]
        r = await http.delete(f"/v1/admin/kills/{switch['id']}", params={"reason": "rotated"})
        assert r.status_code == 200 and r.json()["lifted_by"] == "root"
        assert _chat(base, secrets["mia"]).status_code == 200
        assert (await http.get("/v1/admin/kills")).json()["data"] == []
        assert len((await http.get("/v1/admin/kills?all=true")).json()["data"]) == 1

        r = await http.delete(f"/v1/admin/budgets/{made['id']}")
        assert r.status_code == 200 and r.json()["scope"] == "user:mia"
        assert (await http.get(f"/v1/admin/budgets/{made['id']}")).status_code == 404

    kinds = Counter(k for k, u in await _ledger(store_url) if u == "root")
    assert kinds == {
        "admin.budget.set": 4,
        "admin.budget.update": 2,
        "admin.budget.delete": 1,
        "admin.kill": 1,
        "admin.unkill": 1,
    }


def _every_endpoint(budget_id: str, kill_id: str) -> list[tuple[str, str, Any]]:
    return [
        ("GET", "/v1/admin/budgets", None),
        ("POST", "/v1/admin/budgets", {"scope": "org", "limit": 1000}),
        ("GET", f"/v1/admin/budgets/{budget_id}", None),
        ("PATCH", f"/v1/admin/budgets/{budget_id}", {"limit": 1000}),
        ("DELETE", f"/v1/admin/budgets/{budget_id}", None),
        ("GET", "/v1/admin/kills", None),
        ("POST", "/v1/admin/kills", {"scope": "user:root", "reason": "mine"}),
        ("DELETE", f"/v1/admin/kills/{kill_id}?reason=x", None),
        ("POST", "/v1/admin/budgets", {"scope": 2**70, "nonsense": "\x00"}),
    ]


async def test_members_are_refused_and_other_organisations_see_nothing(
    gateway: tuple[str, dict[str, str]], store_url: str
) -> None:
    base, secrets = gateway
    async with httpx.AsyncClient(base_url=base, headers=_bearer(secrets["root"])) as http:
        budget = (await http.post("/v1/admin/budgets", json={"scope": "org", "limit": 1})).json()
        switch = (
            await http.post("/v1/admin/kills", json={"scope": "user:bo", "reason": "test"})
        ).json()
    before = await _ledger(store_url)
    async with httpx.AsyncClient(base_url=base) as http:
        for method, path, body in _every_endpoint(budget["id"], switch["id"]):
            r = await http.request(method, path, json=body, headers=_bearer(secrets["mia"]))
            assert r.status_code == 403, (method, path, r.text)
            assert r.json()["error"]["code"] == "permission_denied"
        elsewhere = [
            *_every_endpoint(budget["id"], switch["id"])[2:5],
            ("DELETE", f"/v1/admin/kills/{switch['id']}?reason=x", None),
            ("DELETE", "/v1/admin/kills/user:bo?reason=x", None),
        ]
        for method, path, body in elsewhere:
            r = await http.request(method, path, json=body, headers=_bearer(secrets["oscar"]))
            assert r.status_code == 404, (method, path, r.text)
        theirs = await http.get("/v1/admin/budgets", headers=_bearer(secrets["oscar"]))
        assert [b["limit"] for b in theirs.json()["data"]] == [7.0]
        killing = await http.post(
            "/v1/admin/kills",
            json={"scope": "user:mia", "reason": "x"},
            headers=_bearer(secrets["oscar"]),
        )
        assert killing.status_code == 404  # mia is not in organisation b
        assert (await http.get("/v1/budgets")).status_code == 401
    assert await _ledger(store_url) == before


MALFORMED: list[tuple[str, str, Any]] = [
    ("POST", "/v1/admin/budgets", {"scope": "org"}),
    ("POST", "/v1/admin/budgets", {"scope": "org", "limit": -1}),
    ("POST", "/v1/admin/budgets", {"scope": "org", "limit": 0}),
    ("POST", "/v1/admin/budgets", {"scope": "org", "limit": "5"}),
    ("POST", "/v1/admin/budgets", {"scope": "org", "limit": True}),
    ("POST", "/v1/admin/budgets", {"scope": "org", "limit": 2**70, "window": "year"}),
    ("POST", "/v1/admin/budgets", "not json"),
    ("POST", "/v1/admin/budgets", '{"scope": "org", "limit": NaN}'),
    ("POST", "/v1/admin/budgets", '{"scope": "org", "limit": 1e999}'),
    ("POST", "/v1/admin/budgets", {"scope": "galaxy", "limit": 1}),
    ("POST", "/v1/admin/budgets", {"scope": "user:", "limit": 1}),
    ("POST", "/v1/admin/budgets", {"scope": "user:a\x00b", "limit": 1}),
    ("POST", "/v1/admin/budgets", {"scope": "org:x", "limit": 1}),
    ("POST", "/v1/admin/budgets", {"scope": "org", "limit": 1, "alerts": [0]}),
    ("POST", "/v1/admin/budgets", {"scope": "org", "limit": 1, "alerts": [1.01]}),
    ("POST", "/v1/admin/budgets", {"scope": "org", "limit": 1, "alerts": "0.5"}),
    ("POST", "/v1/admin/budgets", {"scope": "org", "limit": 1, "on_exceed": "retry"}),
    ("POST", "/v1/admin/budgets", {"scope": "org", "limit": 1, "webhook": "ftp://h/x"}),
    ("POST", "/v1/admin/budgets", {"scope": "org", "limit": 1, "soft": "yes"}),
    ("POST", "/v1/admin/budgets", {"scope": "org", "limit": 1, "colour": "red"}),
    ("PATCH", "/v1/admin/budgets/{id}", {"limit": -5}),
    ("PATCH", "/v1/admin/budgets/{id}", {"scope": "user:x"}),
    ("GET", "/v1/admin/budgets/%00", None),
    ("DELETE", "/v1/admin/budgets/-x", None),
    ("POST", "/v1/admin/kills", {"scope": "org", "reason": "x"}),
    ("POST", "/v1/admin/kills", {"scope": "user:mia"}),
    ("POST", "/v1/admin/kills", {"scope": "user:mia", "reason": ""}),
    ("POST", "/v1/admin/kills", {"scope": "user:mia", "reason": "a\x00b"}),
    ("DELETE", "/v1/admin/kills/{kill}", None),
    ("DELETE", "/v1/admin/kills/{kill}?reason=", None),
    ("GET", "/v1/admin/kills?all=maybe", None),
]


async def test_malformed_requests_are_400_never_500(
    gateway: tuple[str, dict[str, str]], store_url: str
) -> None:
    base, secrets = gateway
    async with httpx.AsyncClient(base_url=base, headers=_bearer(secrets["root"])) as http:
        budget = (await http.post("/v1/admin/budgets", json={"scope": "org", "limit": 1})).json()
        switch = (
            await http.post("/v1/admin/kills", json={"scope": "user:bo", "reason": "t"})
        ).json()
        before = await _ledger(store_url)
        for method, path, body in MALFORMED:
            content = body.encode() if isinstance(body, str) else json.dumps(body).encode()
            r = await http.request(
                method,
                path.replace("{id}", budget["id"]).replace("{kill}", switch["id"]),
                content=None if body is None else content,
                headers={"Content-Type": "application/json"},
            )
            assert r.status_code == 400, (method, path, body, r.text)
            assert r.json()["error"]["code"], (method, path, body)
        assert [b["limit"] for b in (await http.get("/v1/admin/budgets")).json()["data"]] == [1.0]
    assert await _ledger(store_url) == before
