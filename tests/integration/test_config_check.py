"""``config check`` loads the project as ``serve`` does; ``serve`` refuses a broken project with
one line and no traceback, and migrates a brand-new SQLite store itself."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port
from tests.integration.test_serve_cli import EXE, _cli, _env

PROJECT = """
providers:
  t: {type: test}
models:
  echo: {provider: t, model: echo-1}
routes:
  default: {chain: [echo]}
"""

TOOLS = """
from elevenfactor.tools import FunctionToolset

def ping() -> str:
    '''Answer pong.'''
    return "pong"

tools = FunctionToolset([ping])
"""


def _project(tmp: Path, extra: str = "", agents: dict[str, str] | None = None) -> Path:
    (tmp / "elevenfactor.yaml").write_text(PROJECT + extra)
    for name, text in (agents or {}).items():
        (tmp / "agents").mkdir(exist_ok=True)
        (tmp / "agents" / f"{name}.yaml").write_text(text)
    return tmp


def _assert_error(out: subprocess.CompletedProcess[str], file: str, key: str) -> None:
    assert out.returncode == 2, out.stdout + out.stderr
    assert "Traceback" not in out.stdout + out.stderr
    lines = [line for line in out.stderr.splitlines() if f"{file}: {key}:" in line]
    assert lines and lines[0].startswith("error[config_invalid]: "), out.stderr


def test_a_valid_project_with_agents_toolsets_and_programs_is_ok(tmp_path: Path) -> None:
    (tmp_path / "mytools.py").write_text(TOOLS)
    (tmp_path / "flows.py").write_text("async def nightly(ctx, payload):\n    return payload\n")
    _project(
        tmp_path,
        "toolsets: {ping: 'mytools:tools'}\nprograms: ['flows:nightly']\n",
        {"helper": "instructions: help\ntools: [{toolset: ping}]\n"},
    )
    out = _cli(tmp_path, "config", "check")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok: configuration is valid")


@pytest.mark.parametrize(
    ("extra", "agents", "file", "key"),
    [
        (
            "toolsets: {billing: 'nosuchmodule:tools'}\n",
            {},
            "elevenfactor.yaml",
            "toolsets.billing",
        ),
        ("programs: ['nosuchflows:nightly']\n", {}, "elevenfactor.yaml", "programs[0]"),
        ("", {"a": "tools: [{toolset: nope}]\n"}, "a.yaml", "tools[0].toolset"),
        ("", {"a": "model: gpt-9\n"}, "a.yaml", "model"),
        ("", {"a": "delegates: [ghost]\n"}, "a.yaml", "delegates[0]"),
    ],
    ids=["toolset-module", "program-module", "agent-toolset", "agent-model", "agent-delegate"],
)
def test_config_check_names_file_and_key(
    tmp_path: Path, extra: str, agents: dict[str, str], file: str, key: str
) -> None:
    _project(tmp_path, extra, agents)
    out = _cli(tmp_path, "config", "check")
    _assert_error(out, file, key)
    assert "ok" not in out.stdout


def test_a_route_naming_an_unknown_model_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "elevenfactor.yaml").write_text(
        "providers: {t: {type: test}}\nroutes: {default: {chain: [echo]}}\n"
    )
    _assert_error(_cli(tmp_path, "config", "check"), "elevenfactor.yaml", "routes.default.chain[0]")


def test_a_project_that_drops_the_only_model_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "elevenfactor.yaml").write_text("providers: {t: {type: test}}\n")
    (tmp_path / "agents").mkdir()
    (tmp_path / "agents" / "a.yaml").write_text("instructions: hi\n")
    _assert_error(_cli(tmp_path, "config", "check"), "a.yaml", "model")


def test_config_check_reports_every_error(tmp_path: Path) -> None:
    _project(
        tmp_path,
        "toolsets: {billing: 'nosuchmodule:tools'}\nprograms: ['nosuchflows:nightly']\n",
        {"a": "model: gpt-9\ntools: [{toolset: nope}]\ndelegates: [ghost]\n"},
    )
    out = _cli(tmp_path, "config", "check")
    assert out.returncode == 2
    for file, key in [
        ("elevenfactor.yaml", "toolsets.billing"),
        ("elevenfactor.yaml", "programs[0]"),
        ("a.yaml", "tools[0].toolset"),
        ("a.yaml", "delegates[0]"),
        ("a.yaml", "model"),
    ]:
        _assert_error(out, file, key)
    assert "5 configuration error(s)" in out.stderr


def test_serve_refuses_a_broken_project_in_one_line(tmp_path: Path) -> None:
    _project(tmp_path, "toolsets: {billing: 'nosuchmodule:tools'}\n")
    out = _cli(tmp_path, "serve", "--port", str(free_port()))
    _assert_error(out, "elevenfactor.yaml", "toolsets.billing")
    assert out.stderr.splitlines()[1].startswith("  hint: ")
    assert out.stdout == ""


def test_worker_refuses_a_broken_project_in_one_line(tmp_path: Path) -> None:
    _project(tmp_path, "", {"a": "model: gpt-9\n"})
    assert _cli(tmp_path, "migrate").returncode == 0
    _assert_error(_cli(tmp_path, "worker"), "a.yaml", "model")


def test_serve_migrates_a_new_sqlite_store_and_answers_readyz(tmp_path: Path) -> None:
    _project(tmp_path)
    port = free_port()
    proc = subprocess.Popen(
        [EXE, "serve", "--dev", "--port", str(port)],
        cwd=tmp_path,
        text=True,
        env=_env(tmp_path, DATABASE_URL=f"sqlite:///{tmp_path}/fresh/new.db"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assert time.monotonic() < deadline, "server did not become ready"
            time.sleep(0.05)
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0
    assert (tmp_path / "fresh" / "new.db").exists()


def test_serve_still_refuses_a_store_with_data_and_pending_migrations(tmp_path: Path) -> None:
    import sqlite3

    _project(tmp_path)
    db = tmp_path / "db.sqlite"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE schema_migrations (name TEXT PRIMARY KEY, applied_at REAL)")
        conn.execute("INSERT INTO schema_migrations VALUES ('m001_initial', 0)")
    out = _cli(tmp_path, "serve", "--port", str(free_port()))
    assert out.returncode == 2
    assert "store_unmigrated" in out.stderr and "elevenfactor migrate" in out.stderr


@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)
def test_serve_refuses_a_new_postgresql_store_with_the_migrate_hint(
    tmp_path: Path, store_url: str
) -> None:
    _project(tmp_path)
    out = _cli(tmp_path, "serve", "--port", str(free_port()), DATABASE_URL=store_url)
    assert out.returncode == 2
    assert "store_unmigrated" in out.stderr and "elevenfactor migrate" in out.stderr
    assert "Traceback" not in out.stdout + out.stderr
