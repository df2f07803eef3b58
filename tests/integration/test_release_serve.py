"""Releases in a serving deployment, on both stores: the read-only API (admin 200, member 403,
malformed 400, unknown 404, in the OpenAPI document), runs and gateway calls (the official
``openai`` client) recording the release, ``POST /v1/runs`` refused with 409
``release_mismatch`` once a prompt file changes, ``serve`` refusing to start naming the prompt,
``audit verify`` over records with and without a release, the run bundle carrying the
release manifest, and ``eval run --release``."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest
from click.testing import CliRunner

from elevenfactor.cli._main import main
from elevenfactor.config import Settings, load_project
from elevenfactor.governance import create_key, create_user, local_admin
from elevenfactor.observe import CallRecord, CallRecorder
from elevenfactor.runtime import audit
from elevenfactor.runtime._bundle import export_bundle
from elevenfactor.runtime._bundle_verify import verify_bundle
from elevenfactor.runtime._release import activate, create_release
from elevenfactor.runtime._release_manifest import build_manifest
from elevenfactor.store import Store, migrate, open_store
from tests.conftest import _pg_schema_url
from tests.integration.test_release import PROMPT, write_project
from tests.support.serve import EXE, ROOT
from tests.support.server import running_gateway

pytestmark = pytest.mark.integration


@dataclass
class World:
    base: str
    url: str
    home: Path
    settings: Settings
    secrets: dict[str, str]
    release_id: str

    def call(self, who: str, method: str, path: str, **kw: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.secrets[who]}"}
        with httpx.Client(base_url=self.base, headers=headers, timeout=30) as c:
            return c.request(method, path, **kw)


async def _seed(url: str, settings: Settings) -> tuple[dict[str, str], str]:
    db = await open_store(url)
    try:
        await migrate(db)
        admin = local_admin("cli")
        secrets = {}
        for name, roles in (("boss", ("admin",)), ("ann", ("member",))):
            await create_user(db, admin, name, roles=roles)
            _, secrets[name] = await create_key(db, admin, f"key-{name}", user=name)
        # a call recorded before any release: it must still verify
        recorder = CallRecorder(db)
        recorder.record(
            CallRecord(trace_id="t-old", route="default", stream=False, status="ok",
                       tokens_in=1, tokens_out=1, latency_ms=1.0)
        )  # fmt: skip
        await recorder.flush()
        project = load_project(settings.config_file)
        manifest = await build_manifest(settings, project, store=db)
        release, _ = await create_release(db, admin, manifest, name="v1")
        await activate(db, admin, "default", "v1")
        return secrets, release.id
    finally:
        await db.close()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    home: Path = tmp_path_factory.mktemp(f"release-{request.param}")
    url = f"sqlite:///{home}/db.sqlite" if request.param == "sqlite" else _pg_schema_url(request)
    settings = write_project(home).model_copy(
        update={"database_url": url, "dev": False, "in_process_worker": True}
    )
    secrets, release_id = asyncio.run(_seed(url, settings))
    project = load_project(settings.config_file)
    with running_gateway(settings, project) as (base, _):
        yield World(base, url, home, settings, secrets, release_id)


def _wait_run(world: World, rid: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while True:
        run = world.call("boss", "GET", f"/v1/runs/{rid}").json()
        if run["status"] in ("succeeded", "failed", "cancelled"):
            return dict(run)
        assert time.monotonic() < deadline, run
        time.sleep(0.05)


async def _db(world: World) -> Store:
    return await open_store(world.url)


def test_the_api_reads_releases_for_admins_only(world: World) -> None:
    listed = world.call("boss", "GET", "/v1/releases")
    assert listed.status_code == 200, listed.text
    body = listed.json()
    assert body["serving"] == world.release_id
    assert [(r["id"], r["name"], r["environments"]) for r in body["data"]] == [
        (world.release_id, "v1", ["default"])
    ]
    assert "manifest" not in body["data"][0]
    for ref in ("v1", world.release_id, world.release_id[:10]):
        shown = world.call("boss", "GET", f"/v1/releases/{ref}")
        assert shown.status_code == 200 and shown.json()["id"] == world.release_id
    manifest = shown.json()["manifest"]
    assert manifest["prompts"]["support"]["version"] and "<secret>" in json.dumps(manifest)
    for path in ("/v1/releases", "/v1/releases/v1"):
        denied = world.call("ann", "GET", path)
        assert denied.status_code == 403 and denied.json()["error"]["code"] == "permission_denied"
    bad = world.call("boss", "GET", "/v1/releases/bad%20name!")
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_value"
    assert world.call("boss", "GET", "/v1/releases?limit=0").status_code == 400
    assert world.call("boss", "GET", "/v1/releases?limit=x").status_code == 400
    assert world.call("boss", "GET", "/v1/releases?bogus=1").status_code == 400
    missing = world.call("boss", "GET", "/v1/releases/v9")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "release_not_found"
    assert httpx.get(world.base + "/v1/releases").status_code == 401
    doc = httpx.get(world.base + "/openapi.json").json()
    assert {"/v1/releases", "/v1/releases/{release}"} <= set(doc["paths"])
    assert "release_id" in doc["components"]["schemas"]["Run"]["properties"]


def test_runs_and_gateway_calls_record_the_release_and_still_verify(world: World) -> None:
    made = world.call("ann", "POST", "/v1/runs", json={"program": "greet", "input": {"name": "x"}})
    assert made.status_code == 201, made.text
    assert made.json()["release_id"] == world.release_id
    run = _wait_run(world, made.json()["id"])
    assert run["status"] == "succeeded" and run["release_id"] == world.release_id
    client = openai.OpenAI(base_url=world.base + "/v1", api_key=world.secrets["ann"])
    answer = client.chat.completions.create(
        model="default", messages=[{"role": "user", "content": "hello release"}]
    )
    assert answer.choices[0].message.content

    async def check() -> None:
        db = await _db(world)
        try:
            deadline = time.monotonic() + 20
            while True:
                rows = await db.fetchall("SELECT trace_id, release_id FROM model_calls")
                found = {str(t): r for t, r in rows}
                if len(found) >= 2:
                    break
                assert time.monotonic() < deadline, found
                await asyncio.sleep(0.05)
            assert found.pop("t-old") is None
            assert set(found.values()) == {world.release_id}
            report = await audit(db)
            assert report.ok, [f.message for f in report.findings]
            assert report.calls >= 2
            # the hash covers the release: moving a call to another release is caught
            await db.execute(
                "UPDATE model_calls SET release_id = 'forged' WHERE trace_id != 't-old'"
            )
            await db.execute("UPDATE model_calls SET release_id = 'added' WHERE trace_id = 't-old'")
            tampered = await audit(db)
            assert sum(f.kind == "call" for f in tampered.findings) == len(found) + 1
            await db.execute("UPDATE model_calls SET release_id = ? WHERE trace_id != 't-old'",
                             (world.release_id,))  # fmt: skip
            await db.execute("UPDATE model_calls SET release_id = NULL WHERE trace_id = 't-old'")
            assert (await audit(db)).ok
        finally:
            await db.close()

    asyncio.run(check())


def test_the_bundle_carries_the_release_manifest(world: World) -> None:
    made = world.call("boss", "POST", "/v1/runs", json={"program": "greet", "input": {"name": "b"}})
    rid = made.json()["id"]
    _wait_run(world, rid)

    async def export() -> bytes:
        db = await _db(world)
        try:
            return await export_bundle(db, rid, local_admin("cli"))
        finally:
            await db.close()

    data = asyncio.run(export())
    doc = orjson.loads(data)
    assert doc["release"]["id"] == world.release_id and doc["release"]["name"] == "v1"
    assert doc["release"]["manifest"]["prompts"]["support"]["version"]
    report = verify_bundle(data)
    assert report.ok, report.to_dict()
    assert any(c.name == "release" and "v1" in c.detail for c in report.checks)
    # an edited manifest no longer hashes to the release id
    doc["release"]["manifest"]["config"]["models"]["echo"]["params"]["temperature"] = 1.0
    from elevenfactor.governance._ledger import canonical
    from elevenfactor.runtime._bundle_verify import manifest_of

    doc["manifest"] = manifest_of(doc)
    forged = verify_bundle(canonical(doc).encode())
    release_check = next(c for c in forged.checks if c.name == "release")
    assert not release_check.ok and "does not hash" in release_check.detail


def test_a_changed_prompt_refuses_new_runs_and_the_start_of_serve(world: World) -> None:
    prompt = world.home / "prompts" / "support.md"
    prompt.write_text(PROMPT + "Edited after the release.\n")
    try:
        refused = world.call(
            "ann", "POST", "/v1/runs", json={"program": "greet", "input": {"name": "y"}}
        )
        assert refused.status_code == 409, refused.text
        error = refused.json()["error"]
        assert error["code"] == "release_mismatch" and "prompt 'support'" in error["message"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("ELEVENFACTOR_")}
        env.update(DATABASE_URL=world.url, PYTHONPATH=str(ROOT))
        started = subprocess.run(
            [EXE, "serve", "--port", "0"], cwd=world.home, env=env, capture_output=True,
            timeout=120, text=True,
        )  # fmt: skip
        assert started.returncode == 2, started.stderr
        assert "release_mismatch" in started.stderr and "prompt 'support'" in started.stderr
        assert "v1" in started.stderr
    finally:
        prompt.write_text(PROMPT)
    again = world.call("ann", "POST", "/v1/runs", json={"program": "greet", "input": {"name": "z"}})
    assert again.status_code == 201


SUITE = """target: {agent: helper}
cases:
  - id: refund
    input: I want a refund
    expect: [{type: contains, value: refund, ignore_case: true}]
"""


def test_eval_release_resolves_a_real_release(world: World) -> None:
    (world.home / "evals").mkdir(exist_ok=True)
    (world.home / "evals" / "support.yaml").write_text(SUITE)
    runner = CliRunner()
    env = {"DATABASE_URL": world.url, "ELEVENFACTOR_CONFIG_FILE": str(world.settings.config_file)}
    done = runner.invoke(main, ["eval", "run", "support", "--release", "v1", "--json"], env=env)
    assert done.exit_code == 0, done.output
    report = json.loads(done.output)
    assert report["record"]["release"] == world.release_id
    run = world.call("boss", "GET", f"/v1/runs/{report['run_id']}").json()
    assert run["release_id"] == world.release_id
    unknown = runner.invoke(main, ["eval", "run", "support", "--release", "v404"], env=env)
    assert unknown.exit_code == 2
    assert "release_not_found" in unknown.output + str(unknown.stderr)
