"""Online evaluation across worker processes that are SIGKILLed at random moments, on SQLite
and PostgreSQL: every sampled run is scored exactly once (one scoring run, one feedback row
per scorer), no unsampled run is scored, and every run still succeeds."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from elevenfactor.evals._online import ONLINE_EVAL, sampled, scoring_run_id
from elevenfactor.runtime import submit_run
from elevenfactor.store import Store
from tests.support.serve import EXE, ROOT

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

RUNS = 30
PROJECT = """
providers: {t: {type: test}}
models: {echo: {provider: t, model: e}}
routes: {default: {chain: [echo]}}
evals:
  online:
    - name: quality
      agent: support
      sample: 0.5
      expect:
        - {type: contains, value: "echo:"}
        - {type: regex, pattern: "run [0-9]+", name: numbered}
"""


def _start(home: Path, url: str, n: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ELEVENFACTOR_")}
    env.update(
        DATABASE_URL=url, PYTHONPATH=str(ROOT), ELEVENFACTOR_LEASE_SECONDS="1",
        ELEVENFACTOR_WORKER_POLL_INTERVAL="0.2",
    )  # fmt: skip
    with (home / f"worker{n}.log").open("wb") as log:
        return subprocess.Popen(
            [EXE, "worker", "--concurrency", "4"], cwd=home, env=env, stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip


async def _counts(store: Store) -> tuple[int, int]:
    done = await store.fetchone(
        "SELECT SUM(CASE WHEN program = 'support' AND status = 'succeeded' THEN 1 ELSE 0 END),"
        " SUM(CASE WHEN program = ? AND status = 'succeeded' THEN 1 ELSE 0 END) FROM runs",
        (ONLINE_EVAL,),
    )
    assert done is not None
    return int(done[0] or 0), int(done[1] or 0)


async def test_killed_workers_score_each_sampled_run_once(
    store: Store, tmp_path: Path, store_url: str
) -> None:
    (tmp_path / "elevenfactor.yaml").write_text(PROJECT)
    (tmp_path / "agents").mkdir()
    (tmp_path / "agents" / "support.yaml").write_text("instructions: Help.\nmodel: default\n")
    ids = [f"proc-{i}" for i in range(RUNS)]
    chosen = {r for r in ids if sampled("quality", r, 0.5)}
    for i, rid in enumerate(ids):
        await submit_run(store, "support", f"run {i}", run_id=rid)
    rng = random.Random(11)
    n, kills = 0, 0
    proc = _start(tmp_path, store_url, n)
    deadline = time.monotonic() + 180
    try:
        while await _counts(store) != (RUNS, len(chosen)):
            assert time.monotonic() < deadline, f"not done: {await _counts(store)}"
            await asyncio.sleep(rng.uniform(0.4, 1.2))
            if kills < 8 and proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=10)
                kills += 1
                n += 1
                proc = _start(tmp_path, store_url, n)
            assert proc.poll() is None, (tmp_path / f"worker{n}.log").read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=30)
    assert kills >= 1
    scoring = await store.fetchall("SELECT id FROM runs WHERE program = ?", (ONLINE_EVAL,))
    assert sorted(r[0] for r in scoring) == sorted(scoring_run_id("quality", r) for r in chosen)
    rows = await store.fetchall(
        "SELECT run_id, scorer, label, COUNT(*) FROM run_feedback WHERE source = 'online'"
        " GROUP BY run_id, scorer, label"
    )
    assert {r[0] for r in rows} == chosen
    assert {(r[1], r[2], int(r[3])) for r in rows} == {
        ("contains", "pass", 1),
        ("numbered", "pass", 1),
    }
    assert len(rows) == 2 * len(chosen)
