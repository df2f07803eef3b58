"""Runtime edges over HTTP and the CLI (issue 7): cancel answers, the order of SSE events, an
unknown program refused by ``elevenfactor run``, and ``attempt``; on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from elevenfactor.cli import main
from elevenfactor.runtime import Programs, RunContext
from tests.support.serve import Server, migrated, serving, sse_events, wait_for

pytestmark = pytest.mark.integration

edge_programs = Programs()
"""Loaded by the server under test through its project file."""


async def _hold(folder: str) -> str:
    """Mark the step started, then wait (with a deadline) for the test to open the gate."""
    base = Path(folder)
    (base / "started").touch()
    deadline = time.monotonic() + 30
    while not (base / "gate").exists():
        assert time.monotonic() < deadline, "the test never opened the gate"
        await asyncio.sleep(0.02)
    return "held"


@edge_programs.workflow("gated")
async def gated(ctx: RunContext, data: dict[str, Any]) -> str:
    """A step, a step held until the test says so, a nap (a park when > 0), two more steps."""
    await ctx.step("first", lambda: "one")
    await ctx.step("hold", _hold, data["dir"])
    await ctx.sleep(data.get("nap", 0), "nap")
    await ctx.step("after", lambda: "two")
    return "done"


PROJECT = """
providers: {t: {type: test}}
models: {echo: {provider: t, model: e}}
routes: {default: {chain: [echo]}}
programs: ["tests.support.programs:programs", "tests.integration.test_runs_edges:edge_programs"]
"""


@pytest.fixture
def server(store_url: str, tmp_path: Path) -> Iterator[Server]:
    asyncio.run(migrated(store_url))
    with serving(tmp_path, store_url, PROJECT) as srv:
        yield srv


def _show(base: str, rid: str) -> dict[str, Any]:
    shown: dict[str, Any] = httpx.get(f"{base}/v1/runs/{rid}").json()
    return shown


def _start_gated(server: Server, folder: Path, nap: float = 0) -> str:
    created = httpx.post(
        server.base + "/v1/runs",
        json={"program": "gated", "input": {"dir": str(folder), "nap": nap}},
    )
    assert created.status_code == 201, created.text
    # The answer is the run as it is now: a worker woken by the submission may have started it.
    shown = created.json()
    assert (shown["status"], shown["attempt"]) in (("queued", 0), ("running", 1)), shown
    rid: str = created.json()["id"]
    wait_for(lambda: (folder / "started").exists(), "the held step to start")
    return rid


def test_cancel_answers_with_the_real_state_and_stops_at_the_next_step(
    server: Server, tmp_path: Path
) -> None:
    folder = tmp_path / "cancel"
    folder.mkdir()
    rid = _start_gated(server, folder)
    answered = httpx.post(f"{server.base}/v1/runs/{rid}/cancel", json={})
    assert answered.status_code == 200, answered.text
    body = answered.json()
    assert (body["status"], body["cancel_requested"], body["attempt"]) == ("running", True, 1)
    (folder / "gate").touch()  # the held step ends and is journaled; "nap" and "after" never run
    wait_for(lambda: _show(server.base, rid)["status"] == "cancelled", "the run to stop")
    shown = _show(server.base, rid)
    assert [s["name"] for s in shown["steps"]] == ["first", "hold"]
    assert shown["error"]["code"] == "run_cancelled" and shown["attempt"] == 1
    again = httpx.post(f"{server.base}/v1/runs/{rid}/cancel", json={})
    assert again.status_code == 409 and again.json()["error"]["code"] == "run_finished"


def test_cancelling_a_succeeded_run_is_a_conflict(server: Server) -> None:
    rid = httpx.post(
        server.base + "/v1/runs", json={"program": "greet", "input": {"name": "x"}}
    ).json()["id"]
    wait_for(lambda: _show(server.base, rid)["status"] == "succeeded", "the run to finish")
    refused = httpx.post(f"{server.base}/v1/runs/{rid}/cancel", json={})
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "run_finished"
    shown = _show(server.base, rid)
    assert shown["status"] == "succeeded" and shown["cancel_requested"] is False
    assert shown["attempt"] == 1


def test_each_execution_streams_running_before_its_steps(server: Server, tmp_path: Path) -> None:
    folder = tmp_path / "sse"
    folder.mkdir()
    rid = _start_gated(server, folder, nap=0.3)  # two executions: it parks for the nap
    events: list[tuple[str, dict[str, Any]]] = []
    with httpx.stream("GET", f"{server.base}/v1/runs/{rid}/events", timeout=30) as resp:
        for event in sse_events(resp):
            events.append(event)
            (folder / "gate").touch()  # connected while running: let the run go on
    statuses = [e["status"] for k, e in events if k == "status"]
    assert statuses[0] == "running" and statuses[-1] == "succeeded"
    assert "queued" in statuses  # it parked for the nap, and came back
    steps = [e["name"] for k, e in events if k == "step"]
    assert steps == ["first", "hold", "now", "nap", "after"]
    # The first step of each execution ("first"; "nap" after the park) follows a running status
    # shown after any earlier queued one.
    for name in ("first", "nap"):
        at = next(i for i, (k, e) in enumerate(events) if k == "step" and e["name"] == name)
        before = [e["status"] for k, e in events[:at] if k == "status"]
        assert before[-1] == "running", (name, before)
    assert events[-1][0] == "end" and events[-1][1]["result"] == "done"


def test_cli_refuses_an_unknown_program_and_shows_attempts(
    store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asyncio.run(migrated(store_url))
    (tmp_path / "elevenfactor.yaml").write_text(PROJECT)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2]))
    runner = CliRunner()

    def cli(*args: str) -> Any:
        return runner.invoke(main, list(args), env={"DATABASE_URL": store_url})

    refused = cli("run", "no_such_agent")
    assert refused.exit_code == 2, refused.output
    assert "program_not_found" in refused.output
    listed = cli("runs", "list", "--json")
    assert listed.exit_code == 0 and json.loads(listed.stdout) == []  # nothing was queued

    queued = cli("run", "greet", "--input", '{"name": "ada"}', "--queue", "idle", "--json")
    assert queued.exit_code == 0, queued.output
    assert json.loads(queued.stdout)["attempt"] == 0
    done = cli("run", "greet", "--input", '{"name": "bo"}', "--execute", "--json")
    assert done.exit_code == 0, done.output
    shown = json.loads(done.stdout)
    assert (shown["status"], shown["attempt"], shown["result"]) == ("succeeded", 1, {"hello": "BO"})

    rid = json.loads(queued.stdout)["id"]
    cancelled = cli("runs", "cancel", rid)
    assert cancelled.exit_code == 0 and f"run {rid}: cancelled" in cancelled.stdout
    again = cli("runs", "cancel", rid)
    assert again.exit_code == 2 and "run_finished" in again.output
