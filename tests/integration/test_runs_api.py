"""``/v1/runs`` and ``/v1/approvals`` over HTTP, and an approval that outlives a server restart."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from elevenfactor.store import migrate, open_store
from tests.conftest import free_port

pytestmark = pytest.mark.integration

EXE = str(Path(sys.executable).parent / "elevenfactor")
ROOT = Path(__file__).resolve().parents[2]
PROJECT = """
providers: {t: {type: test}}
models: {echo: {provider: t, model: e}}
routes: {default: {chain: [echo]}}
programs: ["tests.support.programs:programs"]
"""


class Server:
    """``elevenfactor serve`` (with its in-process worker) as a subprocess."""

    def __init__(self, home: Path, db_url: str) -> None:
        self.home, self.db_url = home, db_url
        self.proc: subprocess.Popen[bytes] | None = None
        self.base = ""

    def start(self) -> None:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("ELEVENFACTOR_")}
        env.update(
            DATABASE_URL=self.db_url,
            PYTHONPATH=str(ROOT),
            ELEVENFACTOR_IN_PROCESS_WORKER="true",
            ELEVENFACTOR_DRAIN_SECONDS="0",
            EFFECT_LOG=str(self.home / "effects.log"),
        )
        self.proc = subprocess.Popen(
            [EXE, "serve", "--dev", "--port", str(port)],
            cwd=self.home,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.base = f"http://127.0.0.1:{port}"
        wait_for(lambda: _ready(self.base), "server ready", proc=self.proc)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            assert self.proc.wait(timeout=30) == 0


def _ready(base: str) -> bool:
    try:
        return httpx.get(base + "/readyz").status_code == 200
    except httpx.TransportError:
        return False


def wait_for(
    cond: Any, what: str, timeout: float = 30, proc: subprocess.Popen[bytes] | None = None
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        assert proc is None or proc.poll() is None, f"process exited while waiting for {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture
async def server(store_url: str, tmp_path: Path) -> Iterator[Server]:
    db = await open_store(store_url)
    await migrate(db)
    await db.close()
    (tmp_path / "elevenfactor.yaml").write_text(PROJECT)
    srv = Server(tmp_path, store_url)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def _status(base: str, rid: str) -> str:
    return str(httpx.get(f"{base}/v1/runs/{rid}").json()["status"])


def test_submit_show_stream_and_list(server: Server) -> None:
    base = server.base
    created = httpx.post(base + "/v1/runs", json={"program": "greet", "input": {"name": "ada"}})
    assert created.status_code == 201, created.text
    rid = created.json()["id"]
    events: list[tuple[str, dict[str, Any]]] = []
    with httpx.stream("GET", f"{base}/v1/runs/{rid}/events", timeout=30) as resp:
        kind = ""
        for line in resp.iter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                events.append((kind, orjson.loads(line[6:])))
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
            "by": "alice",
            "reason": "payee fixed",
            "arguments": {"to": "bob", "amount": 90},
        },
    )
    assert decided.status_code == 200 and decided.json()["status"] == "edited"
    again = httpx.post(f"{server.base}/v1/approvals/{item['id']}", json={"action": "approve"})
    assert again.status_code == 409
    wait_for(lambda: _status(server.base, rid) == "succeeded", "the run to finish")
    shown = httpx.get(f"{server.base}/v1/runs/{rid}").json()
    assert shown["result"] == {"done": True, "to": "bob", "amount": 90, "by": "alice"}
    approval_step = shown["steps"][0]
    assert approval_step["kind"] == "approval"
    assert approval_step["output"]["decided_by"] == "alice"
    assert approval_step["output"]["reason"] == "payee fixed"
    effects = (server.home / "effects.log").read_text().splitlines()
    assert effects == [f"send:bob {rid}:1"]


def test_cancel_a_waiting_run(server: Server) -> None:
    rid = httpx.post(
        server.base + "/v1/runs", json={"program": "transfer", "input": {"to": "x", "amount": 1}}
    ).json()["id"]
    wait_for(lambda: _status(server.base, rid) == "waiting", "the run to park")
    cancelled = httpx.post(f"{server.base}/v1/runs/{rid}/cancel")
    assert cancelled.json()["status"] == "cancelled"
    assert httpx.get(server.base + "/v1/approvals").json()["data"] == []
