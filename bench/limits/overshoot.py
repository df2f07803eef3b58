"""Overshoot under contention: several server processes, N concurrent requests each, against a
budget that allows ``BURST_CALLS`` of them; then a second wave once everything has settled.

elevenfactor: 3 ``serve`` processes on one PostgreSQL store (budgets in the store), and the same
with Redis; an org budget of exactly ``BURST_LIMIT``; committed spend is read back with
``elevenfactor budgets show org --json``. LiteLLM: proxies sharing a deployment ``max_budget``
through Redis (3 processes), and one proxy on its own (in memory); what it let through is the
answered calls times their exact cost (the mock's usage is fixed).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.gateway.peers import LiteLLMInstall
from bench.gateway.targets import (
    REPO,
    Target,
    clean_env,
    elevenfactor_cli,
    start_elevenfactor,
    start_litellm,
)
from bench.limits.config import (
    BURST_BODY,
    BURST_CALLS,
    BURST_COST,
    BURST_LIMIT,
    BURST_OUTPUT_PER_MTOK,
    ef_project,
    litellm_config,
)
from bench.limits.stores import Services

__all__ = ["ef_burst", "litellm_burst"]

_WAVES = 2
_SETTLE_S = 3.0  # between waves: LiteLLM syncs its spend with Redis every second


def _burst(targets: list[Target], per: int, health: str) -> dict[str, Any]:
    specs = [{"url": t.url, "headers": t.headers, "health": health} for t in targets]
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.limits.burst",
            "--spec",
            json.dumps(specs),
            "--per",
            str(per),
            "--body",
            BURST_BODY,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"burst client failed: {done.stderr.strip()[-800:]}")
    out: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return out


def _waves(
    targets: list[Target], per: int, health: str, between: Callable[[], object]
) -> list[Any]:
    waves = []
    for i in range(_WAVES):
        if i:
            between()
        waves.append(_burst(targets, per, health))
    return waves


def _summary(waves: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    admitted = [w["codes"].get("ok", 0) for w in waves]
    refused = [sum(n for c, n in w["codes"].items() if c != "ok") for w in waves]
    total = sum(admitted)
    return {
        "allowed_calls": BURST_CALLS,
        "limit_usd": BURST_LIMIT,
        "cost_per_call_usd": BURST_COST,
        "admitted_per_wave": admitted,
        "refused_per_wave": refused,
        "admitted": total,
        "calls_over": total - BURST_CALLS,
        "let_through_usd": total * BURST_COST,
        "waves": waves,
        **extra,
    }


def ef_burst(
    workdir: Path,
    upstream: int,
    services: Services,
    backend: str,
    processes: int,
    per: int,
) -> dict[str, Any]:
    """``processes`` elevenfactor servers on one PostgreSQL store (``backend`` "postgres"), with
    Redis too ("redis"), or on the embedded SQLite store ("sqlite"), ``per`` concurrent requests
    each, two waves."""
    name = f"burst-ef-{backend}"
    env = {} if backend == "sqlite" else {"DATABASE_URL": services.postgres_url(name)}
    if backend == "redis":
        env |= services.redis_env(name)
    project = ef_project(limits=False, burst=True)
    limit = ["budgets", "set", "org", "--limit", repr(BURST_LIMIT), "--window", "total"]
    targets: list[Target] = []
    try:
        first = start_elevenfactor(
            workdir, upstream, name=name, project=project, env=env, setup=[limit]
        )
        targets.append(first)
        key = first.headers["Authorization"].removeprefix("Bearer ")
        for i in range(2, processes + 1):
            targets.append(
                start_elevenfactor(
                    workdir,
                    upstream,
                    name=f"{name}-{i}",
                    project=project,
                    env=env,
                    api_key=key,
                    home=workdir / name,
                )
            )
        waves = _waves(targets, per, "/readyz", lambda: _settled(workdir / name, env))
        status = _settled(workdir / name, env)
    finally:
        for t in targets:
            t.stop()
    spent = float(status["spent"])
    waves_ok = all(set(w["codes"]) <= {"ok", "budget_exceeded"} for w in waves)
    return _summary(
        waves,
        processes=processes,
        per_process=per,
        backend={"redis": "PostgreSQL + Redis", "postgres": "PostgreSQL"}.get(backend, "SQLite"),
        committed_usd=spent,
        reserved_after_usd=float(status["reserved"]),
        budget_limit_usd=float(status["limit"]),
        overshoot_usd=spent - float(status["limit"]),
        only_budget_errors=waves_ok,
        spend_matches_calls=abs(spent - sum(w["codes"].get("ok", 0) for w in waves) * BURST_COST)
        < 1e-9,
    )


def _settled(home: Path, env: dict[str, str], timeout: float = 30) -> dict[str, Any]:
    """``budgets show org --json`` once nothing is reserved any more (or at the deadline)."""
    full = clean_env() | {
        "ELEVENFACTOR_DATA_DIR": str(home / "data"),
        "ELEVENFACTOR_CONFIG_FILE": str(home / "elevenfactor.yaml"),
        **env,
    }
    deadline = time.monotonic() + timeout
    while True:
        done = subprocess.run(
            [*elevenfactor_cli(), "budgets", "show", "org", "--json"],
            env=full,
            cwd=home,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"elevenfactor budgets show failed: {done.stderr[-500:]}")
        status: dict[str, Any] = json.loads(done.stdout)
        if float(status["reserved"]) == 0 or time.monotonic() > deadline:
            return status
        time.sleep(0.2)


def litellm_burst(
    workdir: Path,
    upstream: int,
    services: Services,
    install: LiteLLMInstall,
    processes: int,
    per: int,
    redis: bool,
) -> dict[str, Any]:
    """``processes`` LiteLLM proxies sharing one deployment budget (through Redis when
    ``redis``), ``per`` concurrent requests each, two waves ``_SETTLE_S`` apart."""
    name = f"burst-litellm-{processes}p" + ("-redis" if redis else "")
    model_id = services.litellm_id(name)
    config = litellm_config(
        model_id,
        budget=BURST_LIMIT,
        price=(0.0, BURST_OUTPUT_PER_MTOK),
        redis=services.redis_host_port if redis else None,
    )
    targets: list[Target] = []
    try:
        for i in range(1, processes + 1):
            targets.append(
                start_litellm(workdir, upstream, install, name=f"{name}-{i}", config=config)
            )
        waves = _waves(targets, per, "/health/liveliness", lambda: time.sleep(_SETTLE_S))
        time.sleep(_SETTLE_S)
        counter = _litellm_spend(model_id) if redis else None
    finally:
        for t in targets:
            t.stop()
    return _summary(
        waves,
        processes=processes,
        per_process=per,
        backend="Redis (router_settings)" if redis else "in memory, 1 process",
        litellm_spend_counter_usd=counter,
        overshoot_usd=sum(w["codes"].get("ok", 0) for w in waves) * BURST_COST - BURST_LIMIT,
    )


def _litellm_spend(model_id: str) -> float | None:
    """LiteLLM's own spend counter for the deployment in Redis, if it wrote one."""
    import redis

    from bench.limits.stores import REDIS_URL

    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(match=f"deployment_spend:{model_id}:*"):
        value = client.get(key)
        if value is not None:
            return float(value)
    return None
