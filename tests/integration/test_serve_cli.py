"""``elevenfactor`` as a user runs it: subprocesses, real ports, real signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port

EXE = str(Path(sys.executable).parent / "elevenfactor")

PROJECT = """
providers:
  t: {type: test, options: {chunk_delay: 0.25}}
models:
  echo: {provider: t, model: echo-1}
routes:
  default: {chain: [echo]}
"""


def _env(tmp: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("ELEVENFACTOR_") and k not in ("DATABASE_URL", "PORT")
    }
    env.update(
        {
            "DATABASE_URL": f"sqlite:///{tmp}/db.sqlite",
            "ELEVENFACTOR_CONFIG_FILE": str(tmp / "elevenfactor.yaml"),
            **extra,
        }
    )
    return env


def _cli(tmp: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [EXE, *args], env=_env(tmp, **env), capture_output=True, text=True, timeout=60, cwd=tmp
    )


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "elevenfactor.yaml").write_text(PROJECT)
    return tmp_path


def test_invalid_config_names_file_key_and_expectation(project: Path) -> None:
    (project / "elevenfactor.yaml").write_text(
        "providers: {t: {type: test}}\nmodels: {m: {provider: t, model: x, timeout: -1}}\n"
    )
    out = _cli(project, "config", "check")
    assert out.returncode == 2
    assert "elevenfactor.yaml" in out.stderr and "models.m.timeout" in out.stderr
    assert "greater than 0" in out.stderr
    (project / "elevenfactor.yaml").write_text(
        "providers: {o: {type: openai, api_key: '${NOT_SET_ANYWHERE}'}}\n"
    )
    out = _cli(project, "config", "check")
    assert out.returncode == 2 and "providers.o.api_key" in out.stderr
    assert "NOT_SET_ANYWHERE" in out.stderr


def test_config_check_masks_secrets(project: Path) -> None:
    (project / "elevenfactor.yaml").write_text(
        "providers: {o: {type: openai, api_key: '${MY_KEY}'}}\n"
    )
    out = _cli(
        project,
        "config",
        "check",
        "--json",
        MY_KEY="sk-very-secret",
        DATABASE_URL="postgresql://me:hunter2@127.0.0.1/test",
    )
    assert out.returncode == 0, out.stderr
    assert "sk-very-secret" not in out.stdout and "hunter2" not in out.stdout
    resolved = json.loads(out.stdout)
    assert resolved["project"]["providers"]["o"]["api_key"] == "**********"
    assert resolved["settings"]["database_url"] == "postgresql://me:***@127.0.0.1/test"


def test_version_and_keys_lifecycle(project: Path) -> None:
    out = _cli(project, "version")
    assert out.returncode == 0 and "elevenfactor 0." in out.stdout
    assert "elevenfactor.yaml" in out.stdout
    assert _cli(project, "migrate").returncode == 0
    created = json.loads(_cli(project, "keys", "create", "ci", "--json").stdout)
    assert created["key"].startswith(f"ef_{created['prefix']}_")
    listed = json.loads(_cli(project, "keys", "list", "--json").stdout)
    assert [k["prefix"] for k in listed] == [created["prefix"]]
    assert created["key"] not in _cli(project, "keys", "list").stdout
    assert _cli(project, "keys", "revoke", created["prefix"]).returncode == 0
    assert json.loads(_cli(project, "keys", "list", "--json").stdout)[0]["revoked_at"]
    missing = _cli(project, "keys", "revoke", "nope")
    assert missing.returncode == 2 and "not_found" in missing.stderr


@pytest.fixture
def server(project: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    assert _cli(project, "migrate").returncode == 0
    port = free_port()
    proc = subprocess.Popen(
        [EXE, "serve", "--dev", "--port", str(port)],
        cwd=project,
        text=True,
        env=_env(project, ELEVENFACTOR_DRAIN_SECONDS="1.5", ELEVENFACTOR_SHUTDOWN_TIMEOUT="10"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(base + "/readyz").status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        assert time.monotonic() < deadline, "server did not become ready"
        time.sleep(0.05)
    try:
        yield proc, base
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_sigterm_drains_then_finishes_streams(
    server: tuple[subprocess.Popen[str], str],
) -> None:
    proc, base = server
    body = {
        "model": "default",
        "stream": True,
        "messages": [{"role": "user", "content": "a slow stream to finish"}],
    }
    lines: list[str] = []
    with (
        httpx.Client(base_url=base, timeout=30) as streaming,
        httpx.Client(base_url=base, timeout=30) as other,
        streaming.stream("POST", "/v1/chat/completions", json=body) as resp,
    ):
        assert resp.status_code == 200
        it = resp.iter_lines()
        lines.append(next(it))
        proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        while other.get("/readyz").status_code != 503:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        refused = other.post("/v1/chat/completions", json={**body, "stream": False})
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "shutting_down"
        lines.extend(it)
    data = [ln for ln in lines if ln.startswith("data: ")]
    assert data[-1] == "data: [DONE]"
    text = "".join(json.loads(d[6:])["choices"][0]["delta"].get("content", "") for d in data[:-1])
    assert text == "echo: a slow stream to finish"
    assert proc.wait(timeout=20) == 0
    log = proc.stdout.read() if proc.stdout else ""
    events = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    calls = [e for e in events if e.get("event") == "model_call"]
    assert len(calls) == 1 and calls[0]["stream"] is True and calls[0]["status"] == "ok"
    assert {
        "trace_id",
        "route",
        "provider",
        "model",
        "tokens_in",
        "tokens_out",
        "latency_ms",
        "cost",
        "cache_hit",
        "failover_path",
        "error_class",
    } <= set(calls[0])
    assert any(e.get("event") == "draining" for e in events)
    assert any(e.get("event") == "dev_mode" for e in events)


def test_several_processes_share_the_port(project: Path) -> None:
    assert _cli(project, "migrate").returncode == 0
    port = free_port()
    proc = subprocess.Popen(
        [EXE, "serve", "--dev", "--workers", "2", "--port", str(port)],
        cwd=project,
        text=True,
        env=_env(project, ELEVENFACTOR_DRAIN_SECONDS="0"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    body = {"model": "default", "messages": [{"role": "user", "content": "x"}]}
    try:
        served = retried = 0
        deadline = time.monotonic() + 60
        while served < 40:
            assert time.monotonic() < deadline
            try:
                with httpx.Client(base_url=base) as http:  # a new connection each time
                    assert http.post("/v1/chat/completions", json=body).status_code == 200
                served += 1
            except httpx.ConnectError:  # not up yet: nothing reached a server
                time.sleep(0.05)
            except httpx.TransportError:  # e.g. a read timeout on a loaded machine: the call
                retried += 1  # may have been served and recorded all the same
                time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log = proc.stdout.read() if proc.stdout else ""
    events = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    pids = {e["pid"] for e in events if e.get("event") == "model_call"}
    assert len(pids) == 2, f"calls were served by {pids}"
    assert 40 <= sum(e.get("event") == "model_call" for e in events) <= 40 + retried
