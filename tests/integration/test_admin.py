"""Identity and access: the ``users``/``teams``/``keys`` commands and ``/v1/admin/...`` over HTTP
with real keys, on SQLite and PostgreSQL."""

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
from elevenfactor.governance import create_key, create_user, local_admin, principal_for_user
from elevenfactor.runtime import Worker
from elevenfactor.store import migrate, open_store
from tests.support.programs import programs
from tests.support.server import running_gateway

pytestmark = pytest.mark.integration

PROJECT = parse_project(
    {
        "providers": {"t": {"type": "test"}},
        "models": {"echo": {"provider": "t", "model": "echo-1"}},
        "routes": {"default": {"chain": ["echo"]}},
    }
)


async def _migrated(url: str) -> None:
    db = await open_store(url)
    await migrate(db)
    await db.close()


async def _ledger(url: str) -> list[tuple[str, str]]:
    """``(kind, acting user)`` of every ledger entry."""
    db = await open_store(url)
    try:
        rows = await db.fetchall("SELECT kind, actor FROM ledger ORDER BY seq")
    finally:
        await db.close()
    return [(str(kind), json.loads(str(actor)).get("user")) for kind, actor in rows]


def _bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


# -- the CLI --------------------------------------------------------------------------------


@pytest.fixture
def cli(store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """``elevenfactor ARGS...`` in-process on a migrated database; returns the click result."""
    monkeypatch.chdir(tmp_path)
    asyncio.run(_migrated(store_url))
    runner = CliRunner()

    def invoke(*args: str, ok: bool = True) -> Result:
        result = runner.invoke(main, list(args), env={"DATABASE_URL": store_url})
        if ok:
            assert result.exit_code == 0, (args, result.output, result.exception)
        return result

    return invoke


def _json(result: Result) -> Any:
    return json.loads(result.stdout)


def test_cli_manages_teams_users_and_keys(cli: Any, store_url: str) -> None:
    team = _json(cli("teams", "create", "ops", "--shares", "--json"))
    assert team["name"] == "ops" and team["shares"] is True
    assert [t["name"] for t in _json(cli("teams", "list", "--json"))] == ["ops"]

    alice = _json(
        cli(
            "users",
            *("create", "alice", "--team", "ops", "--role", "member", "--group", "finance"),
            "--json",
        )
    )
    assert (alice["team"], alice["roles"], alice["groups"]) == ("ops", ["member"], ["finance"])
    assert {u["name"] for u in _json(cli("users", "list", "--json"))} == {"local", "alice"}
    assert "alice" in cli("users", "list").stdout  # the table for people

    updated = _json(
        cli(
            "users",
            *("update", "alice", "--no-team", "--role", "member", "--role", "admin"),
            *("--group", "finance", "--group", "legal", "--json"),
        )
    )
    assert updated["team"] is None and updated["roles"] == ["member", "admin"]
    assert updated["groups"] == ["finance", "legal"]
    assert _json(cli("users", "show", "alice", "--json")) == updated

    key = _json(cli("keys", "create", "laptop", "--user", "alice", "--json"))
    assert key["user"] == "alice" and key["key"].startswith(f"ef_{key['prefix']}_")
    bot = _json(cli("keys", "create", "ci-bot", "--json"))
    assert bot["user"] == "ci-bot"
    assert _json(cli("users", "show", "ci-bot", "--json"))["kind"] == "service"
    cli("keys", "update", key["prefix"], "--name", "desk")
    shown = _json(cli("keys", "show", key["id"], "--json"))
    assert shown["name"] == "desk" and shown["revoked_at"] is None
    listing = cli("keys", "list").stdout
    assert key["prefix"] in listing and key["key"] not in listing and bot["key"] not in listing

    # alice is an admin now and acts under her own name; a service account is a member
    cli("teams", "create", "research", "--as", "alice")
    denied = cli("users", "list", "--as", "ci-bot", ok=False)
    assert denied.exit_code == 2 and "permission_denied" in denied.stderr
    nobody = cli("keys", "list", "--as", "nobody", ok=False)
    assert nobody.exit_code == 2 and "not_found" in nobody.stderr

    with running_gateway(Settings(database_url=store_url, dev=False), PROJECT) as (base, _):
        cli("keys", "revoke", key["prefix"])
        assert _json(cli("keys", "show", key["prefix"], "--json"))["revoked_at"] is not None
        refused = httpx.get(base + "/v1/models", headers=_bearer(key["key"]))
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "invalid_api_key"
        assert httpx.get(base + "/v1/models", headers=_bearer(bot["key"])).status_code == 200

    cli("users", "revoke", "ci-bot")
    assert _json(cli("users", "show", "ci-bot", "--json"))["disabled_at"] is not None

    ledger = Counter(asyncio.run(_ledger(store_url)))
    assert ledger == {
        ("admin.team.create", "local"): 1,
        ("admin.user.create", "local"): 2,  # alice, and the ci-bot service account
        ("admin.user.update", "local"): 2,  # alice's update, ci-bot disabled
        ("admin.key.create", "local"): 2,
        ("admin.key.update", "local"): 1,
        ("admin.key.revoke", "local"): 1,
        ("admin.team.create", "alice"): 1,
    }


async def _execute(url: str) -> None:
    db = await open_store(url)
    try:
        await Worker(db, programs).run_until_idle()
    finally:
        await db.close()


def test_runs_and_approvals_act_as_the_given_user(cli: Any, store_url: str) -> None:
    # `elevenfactor run` refuses a program the project does not declare.
    Path("elevenfactor.yaml").write_text('programs: ["tests.support.programs:programs"]\n')
    cli("users", "create", "rita", "--role", "member", "--role", "reviewer", "--group", "finance")
    cli("users", "create", "mo")
    rid = cli(
        "run", "transfer", "--input", '{"to": "bob", "amount": 5}', "--as", "mo"
    ).stdout.strip()
    asyncio.run(_execute(store_url))
    [mine] = _json(cli("runs", "list", "--as", "mo", "--json"))
    assert mine["id"] == rid and mine["status"] == "waiting"
    assert _json(cli("runs", "list", "--as", "rita", "--json")) == []
    hidden = cli("runs", "show", rid, "--as", "rita", ok=False)
    assert hidden.exit_code == 2 and "run_not_found" in hidden.stderr

    [pending] = _json(cli("approvals", "list", "--as", "rita", "--json"))
    assert pending["run_id"] == rid and pending["group"] == "finance"
    denied = cli("approvals", "approve", pending["id"], "--as", "mo", ok=False)
    assert denied.exit_code == 2 and "permission_denied" in denied.stderr
    cli("approvals", "approve", pending["id"], "--as", "rita", "--reason", "fine")
    asyncio.run(_execute(store_url))

    shown = _json(cli("runs", "show", rid, "--as", "mo", "--json"))
    assert shown["status"] == "succeeded" and shown["result"]["by"] == "user:rita"
    decision = next(s for s in shown["steps"] if s["kind"] == "approval")["output"]
    assert decision["decider"]["user"] == "rita" and decision["decider"]["via"] == "cli"

    other = cli("run", "transfer", "--input", '{"to": "x", "amount": 1}', "--as", "mo")
    refused = cli("runs", "cancel", other.stdout.strip(), "--as", "rita", ok=False)
    assert refused.exit_code == 2 and "run_not_found" in refused.stderr
    assert "cancelled" in cli("runs", "cancel", other.stdout.strip(), "--as", "mo").stdout


# -- HTTP -----------------------------------------------------------------------------------


@pytest.fixture
async def gateway(store_url: str) -> AsyncIterator[tuple[str, dict[str, str]]]:
    """A gateway outside dev mode; the secrets of ``root`` (an admin) and ``mia`` (a member)."""
    db = await open_store(store_url)
    await migrate(db)
    cli = local_admin("cli")
    await create_user(db, cli, "root", roles=["admin"])
    await create_user(db, cli, "mia")
    secrets = {
        "root": (await create_key(db, cli, "root-key", user="root"))[1],
        "mia": (await create_key(db, cli, "mia-key", user="mia"))[1],
    }
    await db.close()
    with running_gateway(Settings(database_url=store_url, dev=False), PROJECT) as (base, _):
        yield base, secrets


async def test_an_admin_manages_users_teams_and_keys(
    gateway: tuple[str, dict[str, str]], store_url: str
) -> None:
    base, secrets = gateway
    before = len(await _ledger(store_url))
    async with httpx.AsyncClient(base_url=base, headers=_bearer(secrets["root"])) as http:
        r = await http.post("/v1/admin/teams", json={"name": "ops", "shares": True})
        assert r.status_code == 201 and r.json()["shares"] is True
        assert [t["name"] for t in (await http.get("/v1/admin/teams")).json()["data"]] == ["ops"]

        r = await http.post(
            "/v1/admin/users", json={"name": "bob", "team": "ops", "groups": ["finance"]}
        )
        assert r.status_code == 201, r.text
        assert (r.json()["team"], r.json()["roles"]) == ("ops", ["member"])
        listed = (await http.get("/v1/admin/users")).json()["data"]
        assert {u["name"] for u in listed} == {"local", "root", "mia", "bob"}
        r = await http.patch(
            "/v1/admin/users/bob",
            json={"team": None, "roles": ["member", "reviewer"], "groups": ["legal"]},
        )
        assert r.status_code == 200, r.text
        bob = (await http.get("/v1/admin/users/bob")).json()
        assert (bob["team"], bob["roles"], bob["groups"]) == (
            None,
            ["member", "reviewer"],
            ["legal"],
        )

        used = await http.post("/v1/admin/keys", json={"name": "bob-laptop", "user": "bob"})
        fresh = await http.post("/v1/admin/keys", json={"name": "bob-phone", "user": "bob"})
        assert used.status_code == fresh.status_code == 201
        laptop, phone = used.json(), fresh.json()
        assert laptop["user"] == "bob" and laptop["key"].startswith("ef_")
        keys = await http.get("/v1/admin/keys")
        assert {"bob-laptop", "bob-phone"} <= {k["name"] for k in keys.json()["data"]}
        assert laptop["key"] not in keys.text and "key" not in keys.json()["data"][0]
        r = await http.patch(f"/v1/admin/keys/{laptop['id']}", json={"name": "bob-desk"})
        assert r.status_code == 200 and r.json()["name"] == "bob-desk"
        assert (await http.get(f"/v1/admin/keys/{laptop['prefix']}")).json()["name"] == "bob-desk"

        as_bob = await http.get("/v1/models", headers=_bearer(laptop["key"]))
        assert as_bob.status_code == 200
        r = await http.delete(f"/v1/admin/keys/{laptop['id']}")
        assert r.status_code == 200 and r.json()["revoked_at"] is not None
        r = await http.delete("/v1/admin/users/bob")
        assert r.status_code == 200 and r.json()["disabled_at"] is not None
        # bob's other key was never used, so no server has it cached: refused at once
        refused = await http.get("/v1/models", headers=_bearer(phone["key"]))
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"

        itself = await http.delete("/v1/admin/users/root")
        assert itself.status_code == 409

    after = (await _ledger(store_url))[before:]
    assert Counter(after) == {
        ("admin.team.create", "root"): 1,
        ("admin.user.create", "root"): 1,
        ("admin.user.update", "root"): 2,  # the PATCH, and the DELETE (disable)
        ("admin.key.create", "root"): 2,
        ("admin.key.update", "root"): 1,
        ("admin.key.revoke", "root"): 1,
    }


def _every_endpoint(key_id: str) -> list[tuple[str, str, Any]]:
    return [
        ("GET", "/v1/admin/users", None),
        ("POST", "/v1/admin/users", {"name": "eve", "roles": ["admin"]}),
        ("GET", "/v1/admin/users/root", None),
        ("PATCH", "/v1/admin/users/mia", {"roles": ["admin"]}),
        ("DELETE", "/v1/admin/users/root", None),
        ("DELETE", "/v1/admin/users/mia", None),
        ("GET", "/v1/admin/teams", None),
        ("POST", "/v1/admin/teams", {"name": "evil"}),
        ("GET", "/v1/admin/keys", None),
        ("POST", "/v1/admin/keys", {"name": "eve", "user": "root"}),
        ("GET", f"/v1/admin/keys/{key_id}", None),
        ("PATCH", f"/v1/admin/keys/{key_id}", {"name": "x"}),
        ("DELETE", f"/v1/admin/keys/{key_id}", None),
        ("POST", "/v1/admin/users", {"name": 2**70, "nonsense": "\x00"}),
    ]


async def test_a_member_is_refused_every_admin_endpoint(
    gateway: tuple[str, dict[str, str]], store_url: str
) -> None:
    base, secrets = gateway
    before = await _ledger(store_url)
    async with httpx.AsyncClient(base_url=base) as http:
        keys = await http.get("/v1/admin/keys", headers=_bearer(secrets["root"]))
        root_key = next(k for k in keys.json()["data"] if k["name"] == "root-key")
        for method, path, body in _every_endpoint(root_key["id"]):
            r = await http.request(method, path, json=body, headers=_bearer(secrets["mia"]))
            assert r.status_code == 403, (method, path, r.text)
            assert r.json()["error"]["code"] == "permission_denied", (method, path)
        anonymous = await http.get("/v1/admin/users")
        assert anonymous.status_code == 401
    assert await _ledger(store_url) == before
    async with httpx.AsyncClient(base_url=base, headers=_bearer(secrets["root"])) as http:
        mia = (await http.get("/v1/admin/users/mia")).json()
        assert mia["roles"] == ["member"] and mia["disabled_at"] is None


async def test_another_organisation_is_not_found(
    gateway: tuple[str, dict[str, str]], store_url: str
) -> None:
    base, secrets = gateway
    db = await open_store(store_url)
    await db.execute("INSERT INTO orgs (id, name, created_at) VALUES ('org_b', 'b', 0)", ())
    await db.execute(
        "INSERT INTO users (id, org_id, team_id, name, kind, roles, created_at)"
        " VALUES ('user_oscar', 'org_b', NULL, 'oscar', 'user', 'admin', 0)",
        (),
    )
    oscar = await principal_for_user(db, "oscar", org="b")
    _, secret = await create_key(db, oscar, "oscar-key", user="oscar")
    await db.close()
    async with httpx.AsyncClient(base_url=base, headers=_bearer(secrets["root"])) as http:
        keys = (await http.get("/v1/admin/keys")).json()["data"]
        mia_key = next(k for k in keys if k["name"] == "mia-key")
        assert "oscar-key" not in {k["name"] for k in keys}
    async with httpx.AsyncClient(base_url=base, headers=_bearer(secret)) as http:
        users = (await http.get("/v1/admin/users")).json()["data"]
        assert [u["name"] for u in users] == ["oscar"]
        for method, path, body in [
            ("GET", "/v1/admin/users/mia", None),
            ("PATCH", "/v1/admin/users/mia", {"roles": ["admin"]}),
            ("DELETE", "/v1/admin/users/mia", None),
            ("GET", f"/v1/admin/keys/{mia_key['id']}", None),
            ("PATCH", f"/v1/admin/keys/{mia_key['id']}", {"name": "stolen"}),
            ("DELETE", f"/v1/admin/keys/{mia_key['prefix']}", None),
            ("POST", "/v1/admin/keys", {"name": "k", "user": "mia"}),
        ]:
            r = await http.request(method, path, json=body)
            assert r.status_code == 404, (method, path, r.text)
        assert (await http.get("/v1/models", headers=_bearer(secrets["mia"]))).status_code == 200


MALFORMED: list[tuple[str, str, Any]] = [
    ("POST", "/v1/admin/users", {"name": 1}),
    ("POST", "/v1/admin/users", {"name": 2**70}),
    ("POST", "/v1/admin/users", {"name": "a\x00b"}),
    ("POST", "/v1/admin/users", {"name": "ok", "roles": "admin"}),
    ("POST", "/v1/admin/users", {"name": "ok", "roles": ["god"]}),
    ("POST", "/v1/admin/users", {"name": "ok", "groups": [2**70]}),
    ("POST", "/v1/admin/users", {"name": "ok", "groups": ["fin\x00ance"]}),
    ("POST", "/v1/admin/users", {"name": "ok", "kind": None}),
    ("POST", "/v1/admin/users", {"name": "ok", "colour": "red"}),
    ("POST", "/v1/admin/users", {}),
    ("POST", "/v1/admin/users", ["ok"]),
    ("POST", "/v1/admin/users", "not json"),
    ("PATCH", "/v1/admin/users/mia", {"enabled": "yes"}),
    ("PATCH", "/v1/admin/users/mia", {"enabled": 2**70}),
    ("PATCH", "/v1/admin/users/mia", {"team": "\x00"}),
    ("PATCH", "/v1/admin/users/mia", {"roles": [None]}),
    ("PATCH", "/v1/admin/users/mia", {"by": "root"}),
    ("GET", "/v1/admin/users/mi%00a", None),
    ("DELETE", "/v1/admin/users/a%20b", None),
    ("POST", "/v1/admin/teams", {"name": "t", "shares": 2**70}),
    ("POST", "/v1/admin/teams", {"name": "t", "shares": "true"}),
    ("POST", "/v1/admin/teams", {"name": "t" * 65}),
    ("POST", "/v1/admin/keys", {"name": "k", "user": {"a": 1}}),
    ("POST", "/v1/admin/keys", {"name": "k\x00"}),
    ("PATCH", "/v1/admin/keys/{id}", {"name": 5}),
    ("PATCH", "/v1/admin/keys/{id}", {}),
    ("GET", "/v1/admin/keys/%00", None),
    ("DELETE", "/v1/admin/keys/-x", None),
]


async def test_malformed_requests_are_400_never_500(
    gateway: tuple[str, dict[str, str]], store_url: str
) -> None:
    base, secrets = gateway
    before = await _ledger(store_url)
    async with httpx.AsyncClient(base_url=base, headers=_bearer(secrets["root"])) as http:
        keys = (await http.get("/v1/admin/keys")).json()["data"]
        key_id = keys[0]["id"]
        for method, path, body in MALFORMED:
            content = body.encode() if isinstance(body, str) else json.dumps(body).encode()
            r = await http.request(
                method,
                path.replace("{id}", key_id),
                content=None if body is None else content,
                headers={"Content-Type": "application/json"},
            )
            assert r.status_code == 400, (method, path, body, r.text)
            assert r.json()["error"]["code"], (method, path, body)
        users = (await http.get("/v1/admin/users")).json()["data"]
        assert {u["name"] for u in users} == {"local", "root", "mia"}
    assert await _ledger(store_url) == before
