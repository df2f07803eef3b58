"""Replay over HTTP and the CLI, on both stores, with real keys outside dev mode: a
deterministic replay answers at once; a what-if replay starts a run the server's worker
executes and ``GET /v1/replays/{id}`` reports on it; another member's run or replay is 404;
a malformed body is 400 (never 500); the operation is in the OpenAPI document."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from elevenfactor.cli._main import main
from elevenfactor.config import Settings, parse_project
from elevenfactor.governance import create_key, create_user, local_admin, principal_for_user
from elevenfactor.runtime import submit_run
from elevenfactor.store import migrate, open_store
from tests.conftest import _pg_schema_url
from tests.support.http import expect_error as _error
from tests.support.server import running_gateway

pytestmark = pytest.mark.integration

AGENT = "name: echoer\nmodel: echo\ninstructions: Repeat what the user says.\n"


def _project_dict(agents: Path) -> dict[str, Any]:
    return {
            "providers": {"t": {"type": "test"}},
            "models": {"echo": {"provider": "t", "model": "echo-1"}, "echo2": {
                "provider": "t", "model": "echo-2"}},
            "routes": {"default": {"chain": ["echo"]}},
            "programs": ["tests.support.programs:programs"],
            "agents_dir": str(agents),
        }  # fmt: skip


def _project(agents: Path) -> Any:
    return parse_project(_project_dict(agents))


@dataclass
class World:
    base: str
    secrets: dict[str, str]
    greet: str
    echo: str
    url: str
    agents: Path

    def call(self, who: str, method: str, path: str, **kw: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.secrets[who]}"}
        with httpx.Client(base_url=self.base, headers=headers, timeout=30) as c:
            return c.request(method, path, **kw)


async def _seed(url: str) -> tuple[dict[str, str], str, str]:
    db = await open_store(url)
    try:
        await migrate(db)
        admin = local_admin("cli")
        secrets = {}
        for name in ("ann", "bob"):
            await create_user(db, admin, name, roles=("member",))
            _, secrets[name] = await create_key(db, admin, f"key-{name}", user=name)
        ann = await principal_for_user(db, "ann")
        greet = await submit_run(db, "greet", {"name": "ada"}, owner=ann)
        echo = await submit_run(db, "echoer", "say <b>hi</b>", owner=ann)
        return secrets, greet, echo
    finally:
        await db.close()


def _wait(w: World, who: str, path: str, done: Any) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        body: dict[str, Any] = w.call(who, "GET", path).json()
        if done(body) or time.monotonic() > deadline:
            return body
        time.sleep(0.1)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    tmp: Path = tmp_path_factory.mktemp(f"replay-{request.param}")
    (tmp / "agents").mkdir()
    (tmp / "agents" / "echoer.yaml").write_text(AGENT)
    url = f"sqlite:///{tmp}/test.db" if request.param == "sqlite" else _pg_schema_url(request)
    secrets, greet, echo = asyncio.run(_seed(url))
    settings = Settings(database_url=url, data_dir=tmp, dev=False, in_process_worker=True)
    with running_gateway(settings, _project(tmp / "agents")) as (base, _):
        w = World(base, secrets, greet, echo, url, tmp / "agents")
        for rid in (greet, echo):
            run = _wait(w, "ann", f"/v1/runs/{rid}", lambda b: b.get("status") == "succeeded")
            assert run["status"] == "succeeded", run
        yield w


def test_http_deterministic_replay(world: World) -> None:
    for rid in (world.greet, world.echo):
        resp = world.call("ann", "POST", f"/v1/runs/{rid}/replay", json={})
        assert resp.status_code == 200, resp.text
        report = resp.json()
        assert report["mode"] == "deterministic" and report["identical"] is True
        assert report["result_identical"] is True and report["steps"] >= 2


def test_http_what_if_replay_and_its_report(world: World) -> None:
    resp = world.call("ann", "POST", f"/v1/runs/{world.echo}/replay", json={"model": "echo2"})
    assert resp.status_code == 202, resp.text
    started = resp.json()
    assert started["mode"] == "what_if" and started["id"].startswith("rp_")
    path = f"/v1/replays/{started['id']}"
    report = _wait(world, "ann", path, lambda b: b.get("finished"))
    assert report["finished"] is True and report["replay_status"] == "succeeded", report
    assert report["output_changed"] is False  # an echo is an echo
    assert report["divergence"]["kind"] == "model"  # its deployment differs
    _error(world.call("bob", "GET", path), 404, "replay_not_found")
    _error(world.call("ann", "GET", "/v1/replays/rp_nope"), 404, "replay_not_found")
    flow = world.call("ann", "POST", f"/v1/runs/{world.greet}/replay", json={"model": "echo"})
    _error(flow, 400, "invalid_value")


def test_http_others_get_404_and_bad_bodies_400(world: World) -> None:
    for body in ({}, {"model": "echo2"}):
        _error(
            world.call("bob", "POST", f"/v1/runs/{world.echo}/replay", json=body),
            404,
            "run_not_found",
        )
    path = f"/v1/runs/{world.echo}/replay"
    bodies: tuple[tuple[Any, str], ...] = (
        ({"model": 5}, "invalid_type"),
        ({"colour": "red"}, "unknown_parameter"),
        ({"model": "echo2", "prompt": "x@1"}, "invalid_value"),
        ({"model": "has space"}, "invalid_value"),
        ({"live_tools": "yes"}, "invalid_type"),
        ([1, 2], "invalid_type"),
    )
    for bad_body, code in bodies:
        resp = world.call("ann", "POST", path, json=bad_body)
        assert resp.status_code == 400, (bad_body, resp.text)
        assert resp.json()["error"]["code"] == code, (bad_body, resp.text)
    bad = world.call(
        "ann", "POST", path, content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert bad.status_code == 400, bad.text
    _error(world.call("ann", "POST", "/v1/runs/no-such-run/replay", json={}), 404, "run_not_found")


def test_openapi_documents_replay(world: World) -> None:
    doc = world.call("ann", "GET", "/openapi.json").json()
    post = doc["paths"]["/v1/runs/{run_id}/replay"]["post"]
    assert "requestBody" in post and "live_tools" in str(doc)
    assert "/v1/replays/{replay_id}" in doc["paths"]


def test_cli_replay(world: World, tmp_path: Path) -> None:
    runner = CliRunner()
    conf = tmp_path / "elevenfactor.yaml"
    conf.write_text(json.dumps(_project_dict(world.agents)))  # JSON is YAML
    env = {"DATABASE_URL": world.url, "ELEVENFACTOR_CONFIG_FILE": str(conf)}
    out = runner.invoke(main, ["replay", world.echo, "--as", "ann", "--json"], env=env)
    assert out.exit_code == 0, out.output
    html = tmp_path / "r.html"
    out = runner.invoke(
        main, ["replay", "--runs", "status=succeeded", "--as", "ann", "--html", str(html)],
        env=env,
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    page = html.read_text()
    assert world.echo in page and world.greet in page and "<b>" not in page
    bad = runner.invoke(main, ["replay", world.echo, "--model", "a", "--prompt", "b"], env=env)
    assert bad.exit_code == 2
    other = runner.invoke(main, ["replay", world.echo, "--as", "bob"], env=env)
    assert other.exit_code == 2 and "run_not_found" in other.output
