"""Two processes append to one session at the same time, on SQLite and PostgreSQL: every message
is kept, sequence numbers are 0..N-1 without gaps, and each append's messages stay together."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import pytest

from elevenfactor.memory import Session, load_session
from elevenfactor.store import migrate, open_store
from tests.support.principals import member

pytestmark = pytest.mark.integration

WRITER = """
import asyncio, sys, time
from pathlib import Path
from elevenfactor.memory import append_messages
from elevenfactor.models import UserMessage
from elevenfactor.store import open_store
from tests.support.principals import member

async def main(url: str, who: str, go: str, batches: int) -> None:
    store = await open_store(url)
    Path(go + "." + who).touch()  # ready
    deadline = time.monotonic() + 30
    while not Path(go).exists():
        assert time.monotonic() < deadline, "never told to go"
        await asyncio.sleep(0.001)
    print("start", time.time(), flush=True)
    try:
        for i in range(batches):
            msgs = [UserMessage(content=f"{who}-{i}-{j}") for j in range(3)]
            seqs = await append_messages(store, member("alice"), "shared", msgs, run_id=who)
            assert seqs == list(range(seqs[0], seqs[0] + 3)), seqs
        print("end", time.time(), flush=True)
    finally:
        await store.close()

asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
"""

BATCHES = 40


def _wait(cond: object, what: str, procs: list[subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + 60
    while not cond():  # type: ignore[operator]
        for p in procs:
            if p.poll() not in (None, 0):
                _, err = p.communicate()
                pytest.fail(f"a writer failed while waiting for {what}: {err.decode()}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


async def _migrate(url: str) -> None:
    db = await open_store(url)
    try:
        await migrate(db)
    finally:
        await db.close()


async def _load(url: str) -> Session:
    db = await open_store(url)
    try:
        return await load_session(db, member("alice"), "shared")
    finally:
        await db.close()


def test_two_processes_append_to_one_session(store_url: str, tmp_path: Path) -> None:
    asyncio.run(_migrate(store_url))
    go = tmp_path / "go"
    root = Path(__file__).resolve().parents[2]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, store_url, who, str(go), str(BATCHES)],
            cwd=root,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for who in ("p1", "p2")
    ]
    try:
        _wait(lambda: all(Path(f"{go}.{w}").exists() for w in ("p1", "p2")), "ready", procs)
        go.touch()
        _wait(lambda: all(p.poll() is not None for p in procs), "the writers", procs)
        spans = []
        for p in procs:
            out, err = p.communicate()
            assert p.returncode == 0, err.decode()
            times = dict(line.split() for line in out.decode().splitlines())
            spans.append((float(times["start"]), float(times["end"])))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    session = asyncio.run(_load(store_url))
    total = 2 * BATCHES * 3
    assert session.seqs == list(range(total))
    texts = [str(m.content) for m in session.messages]
    assert sorted(texts) == sorted(
        f"{w}-{i}-{j}" for w in ("p1", "p2") for i in range(BATCHES) for j in range(3)
    )
    for start in range(0, total, 3):
        who, i, _ = texts[start].split("-")
        assert texts[start : start + 3] == [f"{who}-{i}-{j}" for j in range(3)]
        assert session.runs[start : start + 3] == [who] * 3
    # The writers really ran at the same time: each began before the other had finished (how
    # their appends alternate is up to the database's locks: SQLite's are not fair).
    assert max(s for s, _ in spans) < min(e for _, e in spans)
