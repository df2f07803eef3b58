"""A crashed ``elevenfactor eval run`` resumes: the CLI process is killed (SIGKILL) in the
middle of a suite; the same command again continues the same eval run from its journal, and
the cases scored before the crash are not executed again (the scripted model counts every
question it is asked). SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path

import pytest

from elevenfactor.store import migrate, open_store
from tests.support.eval_upstream import EvalUpstream
from tests.support.serve import EXE

pytestmark = pytest.mark.integration

QUESTIONS = [f"Question number {i} about my refund?" for i in range(6)]


def project(root: Path, base_url: str) -> Path:
    (root / "evals").mkdir(parents=True, exist_ok=True)
    cases = "\n".join(
        f"  - id: q{i}\n    input: {q}\n    expect: [{{type: contains, value: refund}}]"
        for i, q in enumerate(QUESTIONS)
    )
    (root / "evals" / "slow.yaml").write_text(f"target: {{route: default}}\ncases:\n{cases}\n")
    config = root / "elevenfactor.yaml"
    config.write_text(
        f"""providers:
  up: {{type: openai, base_url: "{base_url}", api_key: sk-test}}
models:
  scripted: {{provider: up, model: s, retry: {{attempts: 1}}, breaker: null}}
routes:
  default: {{chain: [scripted]}}
"""
    )
    return config


def env(db_url: str) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith("ELEVENFACTOR_")}
    out.update(DATABASE_URL=db_url, ELEVENFACTOR_LEASE_SECONDS="2")
    return out


async def scored_cases(db_url: str) -> tuple[str, set[str]]:
    """The eval run's id and the ids of the cases its journal scored."""
    db = await open_store(db_url)
    try:
        row = await db.fetchone("SELECT id FROM runs WHERE program = 'elevenfactor.eval'")
        assert row is not None
        rows = await db.fetchall(
            "SELECT step_id FROM journal WHERE run_id = ? AND kind = 'eval' AND name = 'score'",
            (row[0],),
        )
    finally:
        await db.close()
    return str(row[0]), {f"q{int(r[0].split('.')[1])}" for r in rows}


async def test_a_killed_eval_run_resumes_without_re_executing_cases(
    tmp_path: Path, store_url: str
) -> None:
    db = await open_store(store_url)
    await migrate(db)
    await db.close()
    async with EvalUpstream(delay=0.4) as up:
        config = project(tmp_path, up.base_url)
        args = [EXE, "eval", "run", "slow", "--concurrency", "1", "--config", str(config)]
        first = await asyncio.create_subprocess_exec(
            *args, cwd=tmp_path, env=env(store_url),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while up.requests < 3:  # two cases scored, the third in flight
            assert first.returncode is None, "the eval ended before it could be killed"
            assert time.monotonic() < deadline, "the eval did not start"
            await asyncio.sleep(0.05)
        first.send_signal(signal.SIGKILL)
        await first.wait()
        run_id, before = await scored_cases(store_url)
        assert 2 <= len(before) < len(QUESTIONS)
        asked_before = dict(up.asked)

        second = await asyncio.create_subprocess_exec(
            *args, "--json", cwd=tmp_path, env=env(store_url),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(second.communicate(), 120)
        assert second.returncode == 0, err.decode()
    report = json.loads(out)
    assert report["run_id"] == run_id and report["resumed"] is True
    assert report["record"]["cases"] == len(QUESTIONS) and report["status"] == "passed"
    for i, question in enumerate(QUESTIONS):
        if f"q{i}" in before:  # scored before the crash: its model call is not made again
            assert up.asked[question] == 1, question
        else:  # at most the call in flight at the crash runs twice (steps are at-least-once)
            assert up.asked[question] == asked_before.get(question, 0) + 1, question
