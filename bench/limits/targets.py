"""The targets of the latency runs, each started through ``bench.gateway.targets``.

elevenfactor on three backends, each with nothing configured (dev mode: no key, no budget, no
limit) and with everything on (an API key, a key budget, per-key rpm/tpm limits); on SQLite also
with the key alone, which splits auth from the budget and limit checks. LiteLLM with nothing and
with a deployment budget and rpm/tpm limits (in memory, and synced through Redis).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.gateway.peers import LiteLLMInstall
from bench.gateway.targets import Target, start_elevenfactor, start_litellm
from bench.limits.config import GENEROUS_BUDGET, RPM, TPM, ef_project, litellm_config
from bench.limits.stores import Services

__all__ = ["PAIRS", "Spec", "ef_specs", "litellm_specs"]

_LOADS = frozenset({"latency", "throughput"})
_ALL = frozenset({"latency", "throughput", "streams"})
_BUDGET = ["budgets", "set", "key:bench", "--limit", f"{GENEROUS_BUDGET:g}", "--window", "total"]


@dataclass(frozen=True, slots=True)
class Spec:
    """A target to start: its name, what it needs (``postgres``/``redis``/``litellm``), what
    it is (one line for the tables) and how to start it."""

    name: str
    needs: frozenset[str]
    what: str
    start: Callable[[], Target]


# (everything on, nothing configured, what the difference is): the "added" figures.
PAIRS = [
    ("ef-sqlite-on", "ef-sqlite-none", "SQLite store, limits in-process"),
    ("ef-sqlite-on", "ef-sqlite-auth", "SQLite: budget + limits alone (key auth in both)"),
    ("ef-pg-on", "ef-pg-none", "PostgreSQL store, limits in-process"),
    ("ef-redis-on", "ef-redis-none", "Redis (budgets and limits), PostgreSQL store"),
    ("litellm-on", "litellm-none", "LiteLLM, in memory"),
    ("litellm-redis-on", "litellm-none", "LiteLLM, synced through Redis"),
]


def _ef(
    workdir: Path,
    upstream: int,
    name: str,
    *,
    on: bool,
    auth: bool,
    env: Callable[[], dict[str, str]],
    store: str,
    streams: bool,
    needs: frozenset[str],
) -> Spec:
    what = (
        f"{store}; API key, budget key:bench ${GENEROUS_BUDGET:,.0f} total,"
        f" limits key rpm {RPM:,} tpm {TPM:,}"
        if on
        else f"{store}; " + ("API key, no budget, no limits" if auth else "dev mode, no key")
    )

    def start() -> Target:
        return start_elevenfactor(
            workdir,
            upstream,
            name=name,
            phases=_ALL if streams else _LOADS,
            project=ef_project(limits=on),
            env=env(),
            setup=[_BUDGET] if on else [],
            auth=auth,
            notes=[what + "; JSON logs to a file, call records on, priced model"],
        )

    return Spec(name, needs, what, start)


def ef_specs(workdir: Path, upstream: int, services: Services) -> list[Spec]:
    """elevenfactor: none / auth / on on SQLite, none / on on PostgreSQL and with Redis."""

    def pg(name: str) -> Callable[[], dict[str, str]]:
        return lambda: {"DATABASE_URL": services.postgres_url(name)}

    def rd(name: str) -> Callable[[], dict[str, str]]:
        return lambda: {"DATABASE_URL": services.postgres_url(name)} | services.redis_env(name)

    rows: list[tuple[str, frozenset[str], bool, bool, Callable[[], dict[str, str]], str]] = [
        ("ef-sqlite-none", frozenset(), False, False, dict, "SQLite"),
        ("ef-sqlite-auth", frozenset(), False, True, dict, "SQLite"),
        ("ef-sqlite-on", frozenset(), True, True, dict, "SQLite"),
        ("ef-pg-none", frozenset({"postgres"}), False, False, pg("pg_none"), "PostgreSQL"),
        ("ef-pg-on", frozenset({"postgres"}), True, True, pg("pg_on"), "PostgreSQL"),
        (
            "ef-redis-none",
            frozenset({"postgres", "redis"}),
            False,
            False,
            rd("redis_none"),
            "PostgreSQL + REDIS_URL",
        ),
        (
            "ef-redis-on",
            frozenset({"postgres", "redis"}),
            True,
            True,
            rd("redis_on"),
            "PostgreSQL + Redis",
        ),
    ]
    # 256 streams for the issue-2 check: the SQLite pair and everything on with Redis.
    with_streams = {"ef-sqlite-none", "ef-sqlite-on", "ef-redis-on"}
    return [
        _ef(
            workdir,
            upstream,
            name,
            on=on,
            auth=auth,
            env=env,
            store=store,
            streams=name in with_streams,
            needs=needs,
        )
        for name, needs, on, auth, env, store in rows
    ]


def litellm_specs(
    workdir: Path, upstream: int, services: Services, install: Callable[[], LiteLLMInstall]
) -> list[Spec]:
    """LiteLLM: none, and a deployment budget + rpm/tpm limits in memory and with Redis."""
    rows = [
        ("litellm-none", frozenset({"litellm"}), False, False, "master key; no budget, no limits"),
        (
            "litellm-on",
            frozenset({"litellm"}),
            True,
            False,
            f"master key; deployment max_budget ${GENEROUS_BUDGET:,.0f}/30d, rpm {RPM:,} tpm"
            f" {TPM:,} (enforce_model_rate_limits), in memory",
        ),
        (
            "litellm-redis-on",
            frozenset({"litellm", "redis"}),
            True,
            True,
            "the same as litellm-on, spend and limits synced through Redis (router_settings)",
        ),
    ]

    def starter(name: str, on: bool, redis: bool, what: str) -> Callable[[], Target]:
        def start() -> Target:
            config = litellm_config(
                services.litellm_id(name),
                budget=GENEROUS_BUDGET if on else None,
                limits=on,
                redis=services.redis_host_port if redis else None,
            )
            return start_litellm(
                workdir,
                upstream,
                install(),
                name=name,
                config=config,
                phases=_LOADS,
                notes=[what + "; 1 worker, num_retries 0, no database (see README)"],
            )

        return start

    return [
        Spec(name, needs, what, starter(name, on, redis, what))
        for name, needs, on, redis, what in rows
    ]
