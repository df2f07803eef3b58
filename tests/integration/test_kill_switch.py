"""Kill switches against a real ``serve``: pulling one stops new calls at once, cuts a stream in
flight with a ``killed`` error event, cancels the queued runs it covers while parked runs stay
parked, and is undone explicitly; the official ``openai`` client sees a proper error object.
On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest

from elevenfactor.governance import local_admin
from elevenfactor.runtime import get_run, submit_run
from elevenfactor.store import open_store
from tests.support.serve import EXE, ROOT, migrated, serving, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

PROJECT = """
providers:
  t: {type: test}
  slow: {type: test, options: {chunk_delay: 4}}
models:
  echo: {provider: t, model: e, retry: {attempts: 1}}
  paced: {provider: slow, model: e, retry: {attempts: 1}}
routes: {default: {chain: [echo]}}
programs: ["tests.support.programs:programs"]
"""
ADMIN = local_admin("cli")
WORDS = "a long answer"  # streamed in 4 pieces and a finish chunk, 4 s apart: ~20 s


def _cli(home: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ELEVENFACTOR_")}
    env.update(DATABASE_URL=url, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [EXE, *args], cwd=home, env=env, capture_output=True, text=True, timeout=60
    )


def _chat(base: str, **extra: Any) -> httpx.Response:
    body = {"model": "default", "messages": [{"role": "user", "content": "hi"}], **extra}
    return httpx.post(base + "/v1/chat/completions", json=body, timeout=30)


def test_kill_stops_calls_streams_and_runs_until_undone(tmp_path: Path, store_url: str) -> None:
    asyncio.run(migrated(store_url))
    with serving(tmp_path, store_url, PROJECT) as srv:
        assert _chat(srv.base).status_code == 200
        queued, parked = asyncio.run(_runs(store_url))

        events: list[str] = []
        opened = threading.Event()

        def stream() -> None:
            body = {
                "model": "paced",
                "stream": True,
                "messages": [{"role": "user", "content": WORDS}],
            }
            with httpx.stream(
                "POST", srv.base + "/v1/chat/completions", json=body, timeout=60
            ) as r:
                for line in r.iter_lines():
                    if line.startswith("data: "):
                        opened.set()
                        events.append(line[6:])

        reader = threading.Thread(target=stream)
        reader.start()
        assert opened.wait(15), "the stream never started"
        started = time.monotonic()
        out = _cli(tmp_path, store_url, "kill", "user:local", "--reason", "runaway agent")
        assert out.returncode == 0, out.stderr
        reader.join(30)
        assert not reader.is_alive()
        assert time.monotonic() - started < 10  # cut within seconds, not after its ~20 s
        last = orjson.loads(events[-1])
        assert last["error"]["code"] == "killed", events[-3:]
        assert len(events) < 30

        refused = _chat(srv.base)
        assert refused.status_code == 403
        err = refused.json()["error"]
        assert err["code"] == "killed"
        assert "runaway agent" in err["message"]
        assert refused.headers["x-should-retry"] == "false"
        client = openai.OpenAI(base_url=srv.base + "/v1", api_key="dev", max_retries=0)
        with pytest.raises(openai.PermissionDeniedError) as caught:
            client.chat.completions.create(
                model="default", messages=[{"role": "user", "content": "hi"}]
            )
        assert caught.value.code == "killed"

        status = asyncio.run(_statuses(store_url, queued, parked))
        assert status == {queued: "cancelled", parked: "waiting"}

        out = _cli(tmp_path, store_url, "unkill", "user:local", "--reason", "fixed")
        assert out.returncode == 0, out.stderr
        wait_for(lambda: _chat(srv.base).status_code == 200, "calls admitted again", 10)
        listed = _cli(tmp_path, store_url, "kills", "--json")
        assert listed.returncode == 0, listed.stderr


async def _runs(url: str) -> tuple[str, str]:
    """A run queued where no worker serves, and a run parked waiting for an approval."""
    store = await open_store(url)
    try:
        queued = await submit_run(store, "greet", {"name": "x"}, queue="nobody", owner=ADMIN)
        args = {"to": "acct", "amount": 5}
        parked = await submit_run(store, "transfer", args, owner=ADMIN)
        for _ in range(200):
            if (await get_run(store, parked, ADMIN)).status == "waiting":
                break
            await asyncio.sleep(0.05)
        return queued, parked
    finally:
        await store.close()


async def _statuses(url: str, *ids: str) -> dict[str, str]:
    store = await open_store(url)
    try:
        return {i: (await get_run(store, i, ADMIN)).status for i in ids}
    finally:
        await store.close()
