"""Releases on both stores: the manifest (no secrets), idempotent creation, names, diffs of a
prompt, a policy and a model parameter, activation, rollback and history, the
ELEVENFACTOR_RELEASE pin, the process binding (a mismatch names what differs), runs recording
their release, a worker refusing a run of another release, and the CLI."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from elevenfactor.cli._main import main
from elevenfactor.config import Settings, load_project
from elevenfactor.errors import PermissionDenied, ReleaseMismatch, ReleaseNotFound, RequestError
from elevenfactor.governance import DEFAULT_ORG, Principal, local_admin
from elevenfactor.runtime import build_runtime, get_run, submit_run
from elevenfactor.runtime._release import (
    activate,
    active_release,
    applicable_release,
    create_release,
    diff,
    get_release,
    history,
    list_releases,
    rollback,
)
from elevenfactor.runtime._release_binding import ReleaseBinding, default_release
from elevenfactor.runtime._release_manifest import build_manifest
from elevenfactor.runtime._release_view import (
    keep_versions,
    release_agents,
    release_project,
    release_prompt_refs,
)
from elevenfactor.runtime._service import build_worker
from elevenfactor.store import Store

pytestmark = pytest.mark.integration

API_KEY = "sk-live-0123456789abcdefSECRETKEYabcdef0123"
DB_PASSWORD = "hunter2-db-pw"
ADMIN = local_admin("cli")
MEMBER = Principal(DEFAULT_ORG, "u_ann", "ann")

PROJECT = f"""providers:
  t: {{type: test, api_key: "{API_KEY}"}}
models:
  echo: {{provider: t, model: echo-1, params: {{temperature: 0.2}}}}
routes:
  default: {{chain: [echo]}}
programs: ["tests.support.programs:programs"]
mcp_servers:
  db:
    command: dbtool
    args: ["--dsn", "postgresql://app:{DB_PASSWORD}@db.internal:5432/app"]
    env: {{DATABASE_URL: "postgresql://app:{DB_PASSWORD}@db.internal:5432/app"}}
"""
PROMPT = "---\nid: support\n---\nYou are a helpful support agent.\n"
POLICY = "stages:\n  input:\n    - {rule: secrets, action: redact}\n"
AGENT = "prompt: support\nmodel: echo\npolicy: strict\n"


def write_project(home: Path) -> Settings:
    """A project in ``home``: a prompt, a policy, an agent; its settings."""
    for sub in ("prompts", "policies", "agents"):
        (home / sub).mkdir(parents=True, exist_ok=True)
    (home / "elevenfactor.yaml").write_text(PROJECT)
    (home / "prompts" / "support.md").write_text(PROMPT)
    (home / "policies" / "strict.yaml").write_text(POLICY)
    (home / "agents" / "helper.yaml").write_text(AGENT)
    return Settings(config_file=home / "elevenfactor.yaml", data_dir=home)


async def release_of(store: Store, settings: Settings, name: str | None = None) -> Any:
    project = load_project(settings.config_file)
    manifest = await build_manifest(settings, project, store=store)
    return (await create_release(store, ADMIN, manifest, name=name))[0]


async def test_create_is_idempotent_and_keeps_no_secret(store: Store, tmp_path: Path) -> None:
    settings = write_project(tmp_path)
    project = load_project(settings.config_file)
    manifest = await build_manifest(settings, project, store=store)
    first, created = await create_release(store, ADMIN, manifest, name="v1")
    again, created_again = await create_release(
        store, ADMIN, await build_manifest(settings, project, store=store)
    )
    assert created and not created_again
    assert again.id == first.id and again.name == "v1" and len(first.id) == 64
    stored = await store.fetchone("SELECT manifest FROM releases WHERE id = ?", (first.id,))
    assert stored is not None
    text = str(stored[0])
    assert API_KEY not in text and DB_PASSWORD not in text and "<secret>" in text
    assert orjson.loads(text) == first.manifest
    # what a release freezes
    m = first.manifest
    assert m is not None
    assert m["prompts"]["support"]["version"] == (await _prompt_hash(tmp_path))
    assert set(m["policies"]) == {"default", "strict"}
    assert m["agents"]["helper"]["spec"]["prompt"] == "support"
    assert m["agents"]["helper"]["policies"][0].startswith("strict@")
    assert m["config"]["models"]["echo"]["params"] == {"temperature": 0.2}
    assert m["prices"] == {} or isinstance(m["prices"], dict)
    assert m["code"]["elevenfactor"] and len(m["code"]["source"]) == 64
    # one ledger entry per creation, none for the idempotent second call
    rows = await store.fetchall(
        "SELECT kind FROM ledger WHERE subject = ? ORDER BY seq", (first.id,)
    )
    assert [r[0] for r in rows] == ["release.created"]
    # names: one per release, unique
    with pytest.raises(RequestError) as taken:
        await create_release(store, ADMIN, manifest, name="v2")
    assert taken.value.code == "release_name_taken"
    (tmp_path / "prompts" / "support.md").write_text(PROMPT + "Be brief.\n")
    other = await build_manifest(settings, project, store=store)
    with pytest.raises(RequestError) as taken_name:
        await create_release(store, ADMIN, other, name="v1")
    assert taken_name.value.code == "release_name_taken" and taken_name.value.http_status == 409
    with pytest.raises(PermissionDenied):
        await create_release(store, MEMBER, other)
    # found by id, prefix or name
    assert (await get_release(store, first.id[:10])).id == first.id
    assert (await get_release(store, "v1")).id == first.id
    with pytest.raises(ReleaseNotFound):
        await get_release(store, "nope")


async def _prompt_hash(home: Path) -> str:
    from elevenfactor.context import load_prompts

    return load_prompts(home / "prompts").get("support").full_hash


async def test_diff_names_a_prompt_a_policy_and_a_model_parameter(
    store: Store, tmp_path: Path
) -> None:
    settings = write_project(tmp_path)
    a = await release_of(store, settings, "a")
    (tmp_path / "prompts" / "support.md").write_text(PROMPT + "Answer in French.\n")
    (tmp_path / "policies" / "strict.yaml").write_text(POLICY.replace("redact", "block"))
    (tmp_path / "elevenfactor.yaml").write_text(PROJECT.replace("0.2", "0.7"))
    b = await release_of(store, settings, "b")
    left, right, changes = await diff(store, "a", "b")
    assert (left.id, right.id) == (a.id, b.id)
    paths = {c.dotted: c for c in changes}
    assert paths["prompts.support.version"].kind == "changed"
    assert paths["policies.strict.version"].kind == "changed"
    param = paths["config.models.echo.params.temperature"]
    assert (param.old, param.new) == (0.2, 0.7)
    assert "agents.helper.prompt_version" in paths  # the agent's resolved prompt moved too
    assert not any(p.startswith("code.") for p in paths)
    assert (await diff(store, "a", "a"))[2] == []


async def test_activate_rollback_and_history(store: Store, tmp_path: Path) -> None:
    settings = write_project(tmp_path)
    made = []
    for i in range(3):
        (tmp_path / "prompts" / "support.md").write_text(PROMPT + f"Version {i}.\n")
        made.append(await release_of(store, settings, f"r{i}"))
    assert await active_release(store, "production") is None
    for r in made:
        await activate(store, ADMIN, "production", r.name)
    again = await activate(store, ADMIN, "production", "r2")  # already active: no new switch
    assert again.release_id == made[2].id
    assert (await active_release(store, "production")).id == made[2].id  # type: ignore[union-attr]
    back = await rollback(store, ADMIN, "production")
    assert (back.release_id, back.previous_id) == (made[1].id, made[2].id)
    assert (await rollback(store, ADMIN, "production")).release_id == made[0].id
    with pytest.raises(RequestError) as none_left:
        await rollback(store, ADMIN, "production")
    assert none_left.value.code == "release_no_previous"
    assert (await active_release(store, "production")).id == made[0].id  # type: ignore[union-attr]
    switches = await history(store, "production")
    assert [s.action for s in switches] == ["rollback", "rollback", *["activate"] * 3]
    listed = {r.name: r.environments for r in await list_releases(store)}
    assert listed == {"r0": ("production",), "r1": (), "r2": ()}
    kinds = await store.fetchall(
        "SELECT kind FROM ledger WHERE kind LIKE 'release.%' AND kind != 'release.created'"
    )
    assert sorted(k[0] for k in kinds) == ["release.activated"] * 3 + ["release.rolled_back"] * 2
    with pytest.raises(PermissionDenied):
        await activate(store, MEMBER, "production", "r1")
    with pytest.raises(PermissionDenied):
        await rollback(store, MEMBER, "production")
    with pytest.raises(RequestError):
        await activate(store, ADMIN, "bad env!", "r1")


async def test_which_release_applies_pin_then_environment(store: Store, tmp_path: Path) -> None:
    settings = write_project(tmp_path)
    assert await applicable_release(store, settings) is None  # opt-in: nothing anywhere
    r1 = await release_of(store, settings, "one")
    (tmp_path / "prompts" / "support.md").write_text(PROMPT + "Two.\n")
    r2 = await release_of(store, settings, "two")
    await activate(store, ADMIN, "default", "one")
    found = await applicable_release(store, settings)
    assert found is not None and found.id == r1.id
    pinned = await applicable_release(store, settings.model_copy(update={"release": "two"}))
    assert pinned is not None and pinned.id == r2.id
    staging = settings.model_copy(update={"environment": "staging"})
    assert await applicable_release(store, staging) is None
    with pytest.raises(ReleaseNotFound) as unknown:
        await applicable_release(store, settings.model_copy(update={"release": "three"}))
    assert "ELEVENFACTOR_RELEASE" in unknown.value.message


async def test_binding_checks_the_files_and_runs_record_the_release(
    store: Store, tmp_path: Path
) -> None:
    settings = write_project(tmp_path)
    project = load_project(settings.config_file)
    unbound = await ReleaseBinding.open(store, settings, project)
    assert unbound.release_id is None
    rid0 = await submit_run(store, "greet", {"name": "x"})
    assert (await get_run(store, rid0)).release_id is None
    release = await release_of(store, settings, "live")
    await activate(store, ADMIN, "default", "live")
    binding = await ReleaseBinding.open(store, settings, project)
    try:
        assert binding.release_id == release.id and default_release(store.url) == release.id
        await binding.check_disk()
        parent = await submit_run(store, "greet", {"name": "ada"})
        child = await submit_run(store, "greet", {"name": "kid"}, parent_id=parent)
        for rid in (parent, child):
            assert (await get_run(store, rid)).release_id == release.id
        body = await store.fetchone(
            "SELECT body FROM ledger WHERE kind = 'run.created' AND subject = ?", (parent,)
        )
        assert body is not None and json.loads(body[0])["release_id"] == release.id
        (tmp_path / "prompts" / "support.md").write_text(PROMPT + "Edited after release.\n")
        with pytest.raises(ReleaseMismatch) as changed:
            await binding.check_disk()
        assert "prompt 'support'" in changed.value.message and changed.value.http_status == 409
        assert "live" in changed.value.message
        with pytest.raises(ReleaseMismatch):
            await ReleaseBinding.open(store, settings, project)
        (tmp_path / "prompts" / "support.md").write_text(PROMPT)  # restored: fine again
        await binding.check_disk()
    finally:
        binding.close()
    assert default_release(store.url) is None


async def test_a_worker_refuses_a_run_of_another_release(store: Store, tmp_path: Path) -> None:
    settings = write_project(tmp_path)
    project = load_project(settings.config_file)
    old = await release_of(store, settings, "old")
    rid = await submit_run(store, "greet", {"name": "ada"}, release_id=old.id)
    same = await submit_run(store, "greet", {"name": "bob"}, release_id=old.id)
    (tmp_path / "elevenfactor.yaml").write_text(PROJECT.replace("0.2", "0.9"))
    project = load_project(settings.config_file)
    await release_of(store, settings, "new")
    await activate(store, ADMIN, "default", "new")
    binding = await ReleaseBinding.open(store, settings, project)
    runtime = build_runtime(settings, project)
    try:
        worker = build_worker(store, settings, project, runtime.programs, release=binding)
        assert callable(worker.programs.get("greet"))
        await worker.run_until_idle()
    finally:
        await runtime.aclose()
        binding.close()
    for run_id in (rid, same):
        info = await get_run(store, run_id)
        error = info.error_dict()
        assert info.status == "failed" and error is not None
        assert error["code"] == "release_mismatch"
        assert "config key models.echo.params.temperature (0.2 -> 0.9)" in error["message"]


async def test_a_release_view_for_replays(store: Store, tmp_path: Path) -> None:
    settings = write_project(tmp_path)
    project = load_project(settings.config_file)
    release = await release_of(store, settings, "view")
    await keep_versions(store, settings, project)
    (tmp_path / "prompts" / "support.md").write_text(PROMPT + "Changed.\n")
    (tmp_path / "elevenfactor.yaml").write_text(PROJECT.replace("0.2", "0.5"))
    frozen = release_project(release, load_project(settings.config_file))
    assert frozen.models["echo"].params == {"temperature": 0.2}
    key = frozen.providers["t"].api_key
    assert key is not None and key.get_secret_value() == API_KEY  # this deployment's secret
    assert release_agents(release)["helper"].prompt == "support"
    from elevenfactor.context import load_prompts

    registry = load_prompts(tmp_path / "prompts")
    old = await registry.resolve(release_prompt_refs(release)["support"], store)
    assert (
        "Changed" not in old.body
        and old.full_hash == release.manifest["prompts"]["support"]["version"]
    )


def test_cli_release_commands(
    store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = write_project(tmp_path)
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    env = {"DATABASE_URL": store_url, "ELEVENFACTOR_CONFIG_FILE": str(settings.config_file)}

    def invoke(*args: str) -> Any:
        return runner.invoke(main, ["release", *args], env=env)

    assert runner.invoke(main, ["migrate"], env=env).exit_code == 0
    made = invoke("create", "--name", "v1", "--json")
    assert made.exit_code == 0, made.output
    first = json.loads(made.output)
    assert first["created"] and first["name"] == "v1"
    again = invoke("create", "--json")
    assert json.loads(again.output)["id"] == first["id"] and not json.loads(again.output)["created"]
    (tmp_path / "prompts" / "support.md").write_text(PROMPT + "v2\n")
    assert invoke("create", "--name", "v2").exit_code == 0
    listed = invoke("list", "--json")
    assert [r["name"] for r in json.loads(listed.output)] == ["v2", "v1"]
    assert "v1" in invoke("list").output
    shown = json.loads(invoke("show", "v1", "--json").output)
    assert shown["manifest"]["prompts"]["support"]["version"]
    assert API_KEY not in invoke("show", "v1", "--json").output
    assert "support" in invoke("show", "v1").output
    changes = json.loads(invoke("diff", "v1", "v2", "--json").output)["changes"]
    assert "prompts.support.version" in {c["path"] for c in changes}
    assert "prompts.support.version" in invoke("diff", "v1", "v2").output
    assert invoke("activate", "v1", "--env", "prod").exit_code == 0
    assert invoke("activate", "v2", "--env", "prod").exit_code == 0
    current = json.loads(invoke("current", "--env", "prod", "--json").output)
    assert current["release"]["name"] == "v2" and len(current["history"]) == 2
    assert "rolled back" in invoke("rollback", "--env", "prod").output
    assert "v1" in invoke("current", "--env", "prod").output
    assert "no release is active" in invoke("current").output
    missing = invoke("show", "v9")
    assert missing.exit_code == 2 and "release_not_found" in missing.output + str(missing.stderr)
    denied = invoke("list", "--as", "nobody")
    assert denied.exit_code != 0
    asyncio.run(_member(store_url))
    member = invoke("list", "--as", "ann")
    assert member.exit_code == 2 and "permission_denied" in member.output + str(member.stderr)


async def _member(url: str) -> None:
    from elevenfactor.governance import create_user
    from elevenfactor.store import open_store

    db = await open_store(url)
    try:
        await create_user(db, local_admin("cli"), "ann", roles=("member",))
    finally:
        await db.close()
