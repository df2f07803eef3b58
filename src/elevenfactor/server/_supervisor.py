"""Several server processes on one port (twelve-factor VIII: scale out with processes).

The parent binds the port once and starts ``web_concurrency`` copies of ``elevenfactor serve``
that inherit the listening socket, so the kernel spreads connections over them. It forwards
SIGTERM/SIGINT (each child drains and shuts down gracefully), restarts a child that dies
unexpectedly, and exits when all have stopped. Only the first child runs the in-process worker.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from types import FrameType

from elevenfactor.config import Settings
from elevenfactor.observe import log_event
from elevenfactor.server._runner import listening_socket

__all__ = ["child_argv", "supervise"]

logger = logging.getLogger("elevenfactor.server")


def _spawn(
    index: int, settings: Settings, argv: list[str], fd: int, metrics_dir: str | None = None
) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    if metrics_dir is not None:  # before the child imports prometheus_client
        env["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    env.update(
        ELEVENFACTOR_WEB_CONCURRENCY="1",
        WEB_CONCURRENCY="1",
        ELEVENFACTOR_LISTEN_FD=str(fd),
        ELEVENFACTOR_HOST=settings.host,
        PORT=str(settings.port),
        ELEVENFACTOR_DEV=str(settings.dev).lower(),
    )
    if index > 0:
        env["ELEVENFACTOR_IN_PROCESS_WORKER"] = "false"
    elif settings.in_process_worker is not None:
        env["ELEVENFACTOR_IN_PROCESS_WORKER"] = str(settings.in_process_worker).lower()
    return subprocess.Popen(argv, env=env, pass_fds=(fd,))


def supervise(settings: Settings, argv: list[str]) -> int:
    """Run ``argv`` (an ``elevenfactor serve`` command line) ``web_concurrency`` times."""
    sock = listening_socket(settings.host, settings.port)
    fd = sock.fileno()
    metrics_dir, own_dir = _metrics_dir(settings)
    children = {
        i: _spawn(i, settings, argv, fd, metrics_dir) for i in range(settings.web_concurrency)
    }
    log_event(
        logger,
        "supervising",
        processes=len(children),
        port=settings.port,
        pids=[p.pid for p in children.values()],
    )
    stopping = False

    def forward(sig: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for child in children.values():
            if child.poll() is None:
                child.send_signal(sig)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    restarts: list[float] = []
    while True:
        alive = False
        for i, child in list(children.items()):
            code = child.poll()
            if code is None:
                alive = True
            elif not stopping:
                now = time.monotonic()
                restarts = [t for t in restarts if now - t < 60] + [now]
                if len(restarts) > 5 * len(children):
                    log_event(logger, "crash_loop", exit_code=code)
                    forward(signal.SIGTERM, None)
                    continue
                log_event(logger, "process_restarted", index=i, exit_code=code)
                _process_dead(metrics_dir, child.pid)
                children[i] = _spawn(i, settings, argv, fd, metrics_dir)
                alive = True
        if not alive:
            sock.close()
            if own_dir and metrics_dir is not None:
                shutil.rmtree(metrics_dir, ignore_errors=True)
            codes = [c.returncode for c in children.values()]
            return 0 if stopping and all(c == 0 for c in codes) else 1
        time.sleep(0.2)


def _metrics_dir(settings: Settings) -> tuple[str | None, bool]:
    """Where the children write their metrics (``prometheus_client`` multi-process mode) and
    whether this process made it (then it removes it at the end): the user's
    ``PROMETHEUS_MULTIPROC_DIR``, else a fresh private directory; None with metrics off."""
    if not settings.metrics:
        return None, False
    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if given:
        os.makedirs(given, exist_ok=True)
        return given, False
    return tempfile.mkdtemp(prefix="elevenfactor-metrics-"), True


def _process_dead(metrics_dir: str | None, pid: int) -> None:
    """Drop a dead child's live gauges (its counters stay: totals never go back)."""
    if metrics_dir is not None:
        from prometheus_client.multiprocess import mark_process_dead

        mark_process_dead(pid, metrics_dir)  # type: ignore[no-untyped-call]


def child_argv() -> list[str]:
    """This process's command line for the children, without ``--workers``."""
    args, skip = [], False
    for arg in sys.argv[1:]:
        if skip:
            skip = False
        elif arg == "--workers":
            skip = True
        elif not arg.startswith("--workers="):
            args.append(arg)
    return [sys.executable, "-m", "elevenfactor", *args]
