"""``elevenfactor serve`` on SQLite keeps answering while another process holds the write lock.

The server writes all the while (runs submitted over HTTP, claimed and executed by its worker;
call records of chat completions); another process takes ``BEGIN IMMEDIATE`` and holds it for
4 s. Every ``/healthz`` in that window must answer in under 50 ms (unless the machine is so busy
that the same load without the lock already took longer), and once the lock is released every
submitted run completes, with nothing lost.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.serve import Server, migrated, serving, wait_for

pytestmark = pytest.mark.integration

PROJECT = """
providers: {t: {type: test}}
models: {echo: {provider: t, model: e}}
routes: {default: {chain: [echo]}}
programs: ["tests.support.programs:programs"]
"""

HOLD_SECONDS = 4.0
LIMIT = 0.050

_HOLDER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("COMMIT")
print("released", flush=True)
"""


@pytest.fixture
async def server(tmp_path: Path) -> Iterator[Server]:
    url = f"sqlite:///{tmp_path}/serve.db"
    await migrated(url)
    with serving(tmp_path, url, PROJECT) as srv:
        yield srv


CHAT = {"model": "default", "messages": [{"role": "user", "content": "hi"}]}


class _Chatter(threading.Thread):
    """Chat completions back to back until stopped: each leaves a call record, written in the
    background."""

    def __init__(self, base: str) -> None:
        super().__init__(daemon=True)
        self.base = base
        self.ok = 0
        self.stop = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.base, timeout=60) as client:
            while not self.stop.is_set():
                self.ok += client.post("/v1/chat/completions", json=CHAT).status_code == 200
                time.sleep(0.005)


class _Submitter(threading.Thread):
    """Submits ``greet`` runs back to back until stopped; remembers each id and how long the
    slowest submission took."""

    def __init__(self, base: str) -> None:
        super().__init__(daemon=True)
        self.base = base
        self.ids: list[str] = []
        self.slowest = 0.0
        self.errors: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.base, timeout=60) as client:
            i = 0
            while not self.stop.is_set():
                t0 = time.perf_counter()
                body = {"program": "greet", "input": {"name": f"n{i}"}}
                resp = client.post("/v1/runs", json=body)
                self.slowest = max(self.slowest, time.perf_counter() - t0)
                if resp.status_code != 201:
                    self.errors.append(resp.text)
                    return
                self.ids.append(resp.json()["id"])
                i += 1
                time.sleep(0.002)


def _succeeded(client: httpx.Client, ids: list[str]) -> int:
    return sum(1 for rid in ids if client.get(f"/v1/runs/{rid}").json()["status"] == "succeeded")


def _calls(home: Path) -> int:
    with sqlite3.connect(f"file:{home / 'serve.db'}?mode=ro", uri=True) as db:
        return int(db.execute("SELECT COUNT(*) FROM model_calls").fetchone()[0])


def _healthz_for(client: httpx.Client, seconds: float) -> list[float]:
    """``/healthz`` every 10 ms for ``seconds``: each answer's latency."""
    latencies: list[float] = []
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        t0 = time.perf_counter()
        resp = client.get("/healthz")
        latencies.append(time.perf_counter() - t0)
        assert resp.status_code == 200
        time.sleep(0.01)
    return latencies


def test_healthz_answers_while_another_process_holds_the_write_lock(
    server: Server, tmp_path: Path
) -> None:
    submitter, chatter = _Submitter(server.base), _Chatter(server.base)
    submitter.start()
    chatter.start()
    with httpx.Client(base_url=server.base, timeout=10) as client:
        wait_for(lambda: len(submitter.ids) >= 20, "runs to be submitted")
        wait_for(lambda: _succeeded(client, submitter.ids[:5]) == 5, "the worker to run them")
        for _ in range(20):  # a warm connection, so the figures are the server's
            client.get("/healthz")
        control = _healthz_for(client, HOLD_SECONDS - 0.3)
        holder = subprocess.Popen(
            [sys.executable, "-c", _HOLDER, str(tmp_path / "serve.db"), str(HOLD_SECONDS)],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert holder.stdout is not None
            assert holder.stdout.readline().strip() == "locked"
            submitted_before = len(submitter.ids)
            latencies = _healthz_for(client, HOLD_SECONDS - 0.3)
            through = len(submitter.ids) - submitted_before
            assert holder.stdout.readline().strip() == "released"
            assert holder.wait(timeout=10) == 0
        finally:
            if holder.poll() is None:
                holder.kill()
                holder.wait()
        wait_for(lambda: len(submitter.ids) >= submitted_before + 10, "submissions to resume")
        submitter.stop.set()
        chatter.stop.set()
        submitter.join(timeout=60)
        chatter.join(timeout=60)
        assert not submitter.errors, submitter.errors
        assert submitter.slowest >= 1.0, "no submission ever waited for the lock"
        worst, calm = max(latencies), max(control)
        # The limit holds whenever the machine lets the server answer in time at all: if the
        # same load without the lock already took longer (a shared, busy machine), the lock
        # may not make it more than twice as slow. Blocking on the lock costs seconds.
        limit = max(LIMIT, 2 * calm)
        assert worst < limit, (
            f"/healthz took {worst * 1000:.1f} ms while the lock was held "
            f"(median {sorted(latencies)[len(latencies) // 2] * 1000:.1f} ms, n={len(latencies)};"
            f" without the lock, under the same load: at most {calm * 1000:.1f} ms)"
        )
        assert len(latencies) >= 100
        # The server really was stuck behind the lock: no submission got through meanwhile.
        assert through <= 1
        ids = submitter.ids
        wait_for(lambda: _succeeded(client, ids) == len(ids), "every run to succeed", timeout=60)
        # Nothing lost or half-written: every submitted run is in the file, succeeded, with
        # both of its events.
        with sqlite3.connect(f"file:{tmp_path / 'serve.db'}?mode=ro", uri=True) as db:
            runs = dict(db.execute("SELECT id, status FROM runs").fetchall())
            events = dict(db.execute("SELECT run_id, COUNT(*) FROM journal GROUP BY run_id"))
        assert runs == dict.fromkeys(ids, "succeeded")
        assert events == dict.fromkeys(ids, 2)
        assert chatter.ok > 0
        wait_for(lambda: _calls(tmp_path) >= chatter.ok, "the call records to be written")
        for rid in ids[:: max(1, len(ids) // 10)]:
            shown = client.get(f"/v1/runs/{rid}").json()
            assert [s["name"] for s in shown["steps"]] == ["upper", "now"]
