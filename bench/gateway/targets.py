"""The targets: the mock upstream itself (direct), the bare relay (the floor), elevenfactor (one
process, and optionally several), and the LiteLLM proxy."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.gateway.peers import LiteLLMInstall
from bench.gateway.procs import cpu_seconds, free_port, process_tree, rss_kib, stop, wait_http

__all__ = [
    "MODEL",
    "REPO",
    "Target",
    "clean_env",
    "elevenfactor_cli",
    "start_elevenfactor",
    "start_litellm",
    "start_relay",
    "start_upstream",
]

REPO = Path(__file__).resolve().parents[2]
MODEL = "bench"  # the name clients ask for: a route in elevenfactor, a model_name in LiteLLM
_PATH = "/v1/chat/completions"


@dataclass
class Target:
    """A running server the clients talk to."""

    name: str
    port: int
    proc: subprocess.Popen[bytes]
    version: str
    headers: dict[str, str] = field(default_factory=dict)
    log: Path | None = None
    startup_s: float = 0.0
    notes: list[str] = field(default_factory=list)
    phases: frozenset[str] | None = None  # the phases it takes part in (None: all)

    @property
    def url(self) -> str:
        """The chat completions endpoint."""
        return f"http://127.0.0.1:{self.port}{_PATH}"

    def rss(self) -> dict[int, int]:
        """VmRSS in KiB of the server process and each descendant (workers), by pid."""
        out = {}
        for pid in process_tree(self.proc.pid):
            kib = rss_kib(pid)
            if kib is not None:
                out[pid] = kib
        return out

    def cpu(self) -> float:
        """CPU seconds (user + system) used so far by the server process and its descendants."""
        return sum(cpu_seconds(pid) or 0.0 for pid in process_tree(self.proc.pid))

    def takes_part(self, phase: str) -> bool:
        """Whether this target is measured in ``phase``."""
        return self.phases is None or phase in self.phases

    def alive(self) -> bool:
        """The server process is still running."""
        return self.proc.poll() is None

    def stop(self) -> None:
        """Stop the server (and its process group)."""
        stop(self.proc)


def _popen(cmd: list[str], log: Path, env: dict[str, str], cwd: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def _started(target: Target, path: str, timeout: float) -> Target:
    """``target`` once ``path`` answers (its start-up time recorded); stopped if it never does."""
    try:
        target.startup_s = wait_http(target.port, path, target.proc, timeout, target.log)
    except BaseException:
        target.stop()
        raise
    return target


def start_upstream(workdir: Path, chunks: int, chunk_delay_ms: float) -> Target:
    """The mock upstream, in its own process."""
    port = free_port()
    log = workdir / "upstream.log"
    proc = _popen(
        [
            sys.executable,
            "-m",
            "bench.gateway.upstream",
            "--port",
            str(port),
            "--chunks",
            str(chunks),
            "--chunk-delay-ms",
            str(chunk_delay_ms),
        ],
        log,
        dict(os.environ),
        REPO,
    )
    target = Target(
        "direct",
        port,
        proc,
        "(mock)",
        log=log,
        notes=[
            f"mock upstream: asyncio + httptools + uvloop, {chunks} stream chunks"
            f" {chunk_delay_ms:g} ms apart"
        ],
    )
    return _started(target, "/healthz", 30)


def start_relay(workdir: Path, upstream_port: int) -> Target:
    """The floor: a bare Starlette + aiohttp relay (``relay.py``) under elevenfactor's uvicorn
    settings, one process."""
    import starlette

    port = free_port()
    log = workdir / "relay.log"
    proc = _popen(
        [
            sys.executable,
            "-m",
            "bench.gateway.relay",
            "--port",
            str(port),
            "--upstream",
            f"http://127.0.0.1:{upstream_port}/v1",
        ],
        log,
        clean_env(),
        REPO,
    )
    target = Target(
        "relay",
        port,
        proc,
        f"starlette {starlette.__version__}",
        log=log,
        notes=[
            "the floor: bare Starlette endpoint + one shared aiohttp session, no features;"
            " uvicorn + uvloop + httptools as elevenfactor serve, 1 process"
        ],
    )
    return _started(target, "/healthz", 30)


_EF_PROJECT = """\
version: 1
providers:
  mock:
    type: openai
    base_url: http://127.0.0.1:{port}/v1
    api_key: sk-mock-upstream
models:
  mock-gpt:
    provider: mock
    model: mock-gpt
    retry:
      attempts: 1
    # breaker: defaults (5 failures, 30 s cooldown)
routes:
  {model}:
    chain: [mock-gpt]
default_route: {model}
"""


def clean_env() -> dict[str, str]:
    """This environment without the variables that would point a server elsewhere."""
    drop = ("DATABASE_URL", "REDIS_URL", "PORT")
    return {
        k: v for k, v in os.environ.items() if k not in drop and not k.startswith("ELEVENFACTOR_")
    }


def elevenfactor_cli() -> list[str]:
    """The ``elevenfactor`` command line of this venv."""
    exe = Path(sys.executable).with_name("elevenfactor")
    if exe.exists():
        return [str(exe)]
    return [sys.executable, "-c", "from elevenfactor.cli import main; main()"]


def start_elevenfactor(
    workdir: Path,
    upstream_port: int,
    processes: int = 1,
    *,
    name: str = "elevenfactor",
    phases: frozenset[str] | None = None,
    project: str | None = None,
    env: Mapping[str, str] | None = None,
    setup: Sequence[Sequence[str]] = (),
    auth: bool = True,
    api_key: str | None = None,
    home: Path | None = None,
    notes: Sequence[str] | None = None,
) -> Target:
    """``elevenfactor serve`` with a migrated SQLite store, JSON logs to a file, and auth on;
    ``processes`` server processes share the port (``WEB_CONCURRENCY``, i.e. ``--workers``).

    For other benchmarks: ``project`` replaces the project file (``{port}`` and ``{model}`` are
    filled in), ``env`` is added to the environment (e.g. ``DATABASE_URL``, ``REDIS_URL``),
    ``setup`` are CLI commands run after ``migrate`` and ``keys create`` (e.g. ``budgets
    set``), ``auth=False`` serves in dev mode and sends no key, and ``api_key`` starts one
    more server on an already prepared store (no migrate, key or setup) in ``home``.
    """
    from elevenfactor._version import __version__

    home = home or workdir / name
    home.mkdir(parents=True, exist_ok=True)
    project_file = home / "elevenfactor.yaml"
    project_file.write_text((project or _EF_PROJECT).format(port=upstream_port, model=MODEL))
    port = free_port()
    env = (
        clean_env()
        | {
            "ELEVENFACTOR_DATA_DIR": str(home / "data"),
            "ELEVENFACTOR_CONFIG_FILE": str(project_file),
            "ELEVENFACTOR_LOG_LEVEL": "info",
            "PORT": str(port),
            "WEB_CONCURRENCY": str(processes),
        }
        | dict(env or {})
        | ({} if auth else {"ELEVENFACTOR_DEV": "true"})
    )
    cli = elevenfactor_cli()
    key = api_key
    if key is None:
        key = _prepare(cli, env, home, setup)
    log = home / f"serve-{port}.log" if api_key else home / "serve.log"
    proc = _popen([*cli, "serve"], log, env, home)
    target = Target(
        name,
        port,
        proc,
        __version__,
        headers={"Authorization": f"Bearer {key}"} if auth else {},
        log=log,
        notes=list(notes)
        if notes is not None
        else [
            "SQLite store (migrated), JSON logs to a file, API key auth,"
            " retry attempts 1, breaker defaults",
            f"{processes} server process(es)"
            + (
                " (elevenfactor serve --workers N: a supervisor + N children)"
                if processes > 1
                else ""
            ),
        ],
        phases=phases,
    )
    return _started(target, "/readyz", 60)


def _prepare(
    cli: list[str], env: dict[str, str], home: Path, setup: Sequence[Sequence[str]]
) -> str:
    """``migrate``, ``keys create bench``, then the ``setup`` commands; the key's secret."""
    outputs = []
    for args in (["migrate"], ["keys", "create", "bench", "--json"], *setup):
        done = subprocess.run([*cli, *args], env=env, cwd=home, capture_output=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"elevenfactor {' '.join(args)} failed: {done.stderr.decode()}")
        outputs.append(done.stdout)
    return str(json.loads(outputs[1])["key"])


_LITELLM_CONFIG = """\
model_list:
  - model_name: {model}
    litellm_params:
      model: openai/mock-gpt
      api_base: http://127.0.0.1:{port}/v1
      api_key: sk-mock-upstream
litellm_settings:
  num_retries: 0
  request_timeout: 60
general_settings:
  master_key: {master_key}
"""


def start_litellm(
    workdir: Path,
    upstream_port: int,
    install: LiteLLMInstall,
    *,
    name: str = "litellm",
    config: str | None = None,
    notes: Sequence[str] | None = None,
    phases: frozenset[str] | None = None,
) -> Target:
    """The LiteLLM proxy, 1 worker, master-key auth, default logging to a file, no database.
    ``config`` replaces its config file (``{model}``, ``{port}`` and ``{master_key}`` are
    filled in)."""
    home = workdir / name
    home.mkdir(parents=True, exist_ok=True)
    master_key = "sk-bench-" + secrets.token_hex(16)
    config_file = home / "config.yaml"
    config_file.write_text(
        (config or _LITELLM_CONFIG).format(model=MODEL, port=upstream_port, master_key=master_key)
    )
    port = free_port()
    env = clean_env() | {
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_TELEMETRY": "False",
        "VIRTUAL_ENV": str(install.venv),
        "PATH": f"{install.venv / 'bin'}:{os.environ.get('PATH', '')}",
    }
    env.pop("PYTHONPATH", None)
    log = home / "proxy.log"
    proc = _popen(
        [
            str(install.executable),
            "--config",
            str(config_file),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--num_workers",
            "1",
            "--telemetry",
            "False",
        ],
        log,
        env,
        home,
    )
    target = Target(
        name,
        port,
        proc,
        install.version,
        headers={"Authorization": f"Bearer {master_key}"},
        log=log,
        notes=list(notes)
        if notes is not None
        else [
            "1 worker, master-key auth, default logging to a file, num_retries 0;"
            " no database (its key/spend store needs PostgreSQL + Prisma)"
        ],
        phases=phases,
    )
    return _started(target, "/health/liveliness", 180)
