"""``/v1/runs`` and ``/v1/approvals`` over HTTP, and an approval that outlives a server restart."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.support.serve import Server, migrated, serving, sse_events, wait_for

pytestmark = pytest.mark.integration

PROJECT = """
providers: {t: {type: test}}
models: {echo: {provider: t, model: e}}
routes: {default: {chain: [echo]}}
programs: ["tests.support.programs:programs"]
"""


@pytest.fixture
async def server(store_url: str, tmp_path: Path) -> Iterator[Server]:
    await migrated(store_url)
    with serving(tmp_path, store_url, PROJECT) as srv:
        yield srv


def _status(base: str, rid: str) -> str:
    return str(httpx.get(f"{base}/v1/runs/{rid}").json()["status"])


def test_submit_show_stream_and_list(server: Server) -> None:
    base = server.base
    created = httpx.post(base + "/v1/runs", json={"program": "greet", "input": {"name": "ada"}})
    assert created.status_code == 201, created.text
    rid = created.json()["id"]
    with httpx.stream("GET", f"{base}/v1/runs/{rid}/events", timeout=30) as resp:
        events = list(sse_events(resp))
    assert events[-1][0] == "end" and events[-1][1]["result"] == {"hello": "ADA"}
    assert [e["name"] for k, e in events if k == "step"] == ["upper", "now"]
    shown = httpx.get(f"{base}/v1/runs/{rid}").json()
    assert shown["status"] == "succeeded" and [s["kind"] for s in shown["steps"]] == [
        "step",
        "clock",
    ]
    listed = httpx.get(base + "/v1/runs", params={"program": "greet"}).json()["data"]
    assert [r["id"] for r in listed] == [rid]


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"input": 1}, 400, "missing_required_parameter"),
        ({"program": "nope"}, 404, "program_not_found"),
        ({"program": "greet", "priority": "high"}, 400, "invalid_type"),
        ({"program": "greet", "colour": 1}, 400, "unknown_parameter"),
    ],
)
def test_bad_run_requests(server: Server, body: dict[str, Any], status: int, code: str) -> None:
    resp = httpx.post(server.base + "/v1/runs", json=body)
    assert resp.status_code == status and resp.json()["error"]["code"] == code
    missing = httpx.get(server.base + "/v1/runs/nope")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "run_not_found"


def test_approval_survives_a_restart_and_edits_the_arguments(server: Server) -> None:
    rid = httpx.post(
        server.base + "/v1/runs",
        json={"program": "transfer", "input": {"to": "mallory", "amount": 100}},
    ).json()["id"]
    wait_for(lambda: _status(server.base, rid) == "waiting", "the run to park")
    server.stop()
    server.start()
    pending = httpx.get(server.base + "/v1/approvals", params={"group": "finance"}).json()
    [item] = pending["data"]
    assert item["run_id"] == rid and item["request"]["arguments"]["to"] == "mallory"
    decided = httpx.post(
        f"{server.base}/v1/approvals/{item['id']}",
        json={
            "action": "edit",
            "reason": "payee fixed",
            "arguments": {"to": "bob", "amount": 90},
        },
    )
    assert decided.status_code == 200 and decided.json()["status"] == "edited"
    again = httpx.post(f"{server.base}/v1/approvals/{item['id']}", json={"action": "approve"})
    assert again.status_code == 409
    wait_for(lambda: _status(server.base, rid) == "succeeded", "the run to finish")
    shown = httpx.get(f"{server.base}/v1/runs/{rid}").json()
    assert shown["result"] == {"done": True, "to": "bob", "amount": 90, "by": "user:local"}
    approval_step = shown["steps"][0]
    assert approval_step["kind"] == "approval"
    assert approval_step["output"]["decided_by"] == "user:local"
    assert approval_step["output"]["decider"]["via"] == "dev"
    assert approval_step["output"]["reason"] == "payee fixed"
    effects = (server.home / "effects.log").read_text().splitlines()
    assert effects == [f"send:bob {rid}:1"]


def test_cancel_a_waiting_run(server: Server) -> None:
    rid = httpx.post(
        server.base + "/v1/runs", json={"program": "transfer", "input": {"to": "x", "amount": 1}}
    ).json()["id"]
    wait_for(lambda: _status(server.base, rid) == "waiting", "the run to park")
    cancelled = httpx.post(f"{server.base}/v1/runs/{rid}/cancel", json={})
    assert cancelled.json()["status"] == "cancelled"
    assert httpx.get(server.base + "/v1/approvals").json()["data"] == []


def test_delete_a_finished_run_is_recorded_and_audited(server: Server) -> None:
    import os
    import subprocess
    import sys

    rid = httpx.post(
        server.base + "/v1/runs", json={"program": "greet", "input": {"name": "x"}}
    ).json()["id"]
    wait_for(lambda: _status(server.base, rid) == "succeeded", "the run to finish")
    no_reason = httpx.delete(f"{server.base}/v1/runs/{rid}")
    assert no_reason.status_code == 400 and no_reason.json()["error"]["param"] == "reason"
    gone = httpx.delete(f"{server.base}/v1/runs/{rid}", params={"reason": "erasure request"})
    assert gone.status_code == 200 and gone.json()["deleted"] is True
    assert httpx.get(f"{server.base}/v1/runs/{rid}").status_code == 404
    verified = subprocess.run(
        [sys.executable, "-m", "elevenfactor", "audit", "verify", "--json"],
        cwd=server.home,
        env={**os.environ, "DATABASE_URL": server.db_url, "PYTHONPATH": str(server.home)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert orjson.loads(verified.stdout)["ok"] is True
