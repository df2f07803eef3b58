"""``elevenfactor serve`` as a subprocess for integration tests, and a polling helper."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson

from elevenfactor.store import migrate, open_store
from tests.conftest import free_port

EXE = str(Path(sys.executable).parent / "elevenfactor")
ROOT = Path(__file__).resolve().parents[2]


class Server:
    """``elevenfactor serve`` (with its in-process worker) as a subprocess."""

    def __init__(
        self, home: Path, db_url: str, *, dev: bool = True, ready: str = "/readyz", **env: str
    ) -> None:
        self.home, self.db_url, self.dev, self.env = home, db_url, dev, env
        self.ready = ready  # the path that answers 200 once the server is up
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
        env.update(self.env)
        self.proc = subprocess.Popen(
            [EXE, "serve", *(["--dev"] if self.dev else []), "--port", str(port)],
            cwd=self.home,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.base = f"http://127.0.0.1:{port}"
        wait_for(lambda: _ready(self.base + self.ready), "server ready", proc=self.proc)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            assert self.proc.wait(timeout=30) == 0


async def migrated(db_url: str) -> None:
    """Apply every migration to ``db_url``."""
    db = await open_store(db_url)
    await migrate(db)
    await db.close()


@contextmanager
def serving(home: Path, db_url: str, project: str) -> Iterator[Server]:
    """``project`` written as ``home``'s project file, served in dev mode on a migrated
    ``db_url`` (see ``migrated``) until the block ends."""
    (home / "elevenfactor.yaml").write_text(project)
    srv = Server(home, db_url)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def _ready(url: str) -> bool:
    try:
        return httpx.get(url).status_code == 200
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


def sse_events(resp: httpx.Response) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(event, data)`` pairs of a streaming server-sent-events response, as they arrive."""
    kind = ""
    for line in resp.iter_lines():
        if line.startswith("event: "):
            kind = line[7:]
        elif line.startswith("data: "):
            yield kind, orjson.loads(line[6:])
