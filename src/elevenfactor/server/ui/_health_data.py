"""What the health page reads: readiness (``server._readiness``, the very checks ``/readyz``
answers), the deployments' circuit breakers, queue depth, workers and their leases, agent
breakers and kill switches.

Circuit breakers live in each process's memory (``models._breaker``): the page shows this
server's (with an in-process worker, also the breakers its agent runs use). Queue depth and
workers are read from the runs table (``lease_owner`` is the worker id), so they cover every
worker on the store. Counts are of the whole deployment: they carry no ids or owners. Run ids
are listed only for the viewer's own runs (an admin: its organisation's), through
``Principal.scope``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from elevenfactor.governance import Principal
from elevenfactor.governance._agent_breaker import AgentBreakerState, agent_breakers
from elevenfactor.models import CircuitBreaker, Model
from elevenfactor.server._readiness import Readiness, readiness
from elevenfactor.server._state import Gateway
from elevenfactor.store import Store

__all__ = [
    "Deployment",
    "Health",
    "Lease",
    "QueueDepth",
    "WorkerRow",
    "breakers",
    "health",
]

_ACTIVE = ("queued", "running", "waiting")
_LEASES_SHOWN = 100


@dataclass(frozen=True, slots=True)
class Deployment:
    """A deployment and its circuit breaker in this process."""

    name: str
    provider: str
    provider_type: str
    model: str
    state: str
    """``closed``, ``open``, ``half_open``, or ``none`` (no breaker configured)."""
    failures: int
    retry_in: float | None


def _breaker(model: Model) -> CircuitBreaker | None:
    node: Any = model
    for _ in range(16):  # the wrappers of one deployment: limiter, retry, breaker, deployment
        if isinstance(node, CircuitBreaker):
            return node
        node = getattr(node, "inner", None)
        if node is None:
            return None
    return None


def breakers(gw: Gateway) -> list[Deployment]:
    """Every configured deployment with its breaker's state, by name."""
    out: list[Deployment] = []
    if gw.registry is None:
        return out
    project = gw.project
    for name, model in sorted(gw.registry.deployments.items()):
        conf = project.models.get(name)
        provider = conf.provider if conf is not None else "?"
        pconf = project.providers.get(provider)
        found = _breaker(model)
        state, failures, retry_in = "none", 0, None
        if found is not None:
            state, failures = found.state, found.consecutive_failures
            if state == "open" and found.opened_at is not None:
                retry_in = max(0.0, found.config.cooldown - (found._clock() - found.opened_at))
        out.append(
            Deployment(
                name=name,
                provider=provider,
                provider_type=str(pconf.type) if pconf is not None else "?",
                model=conf.model if conf is not None else name,
                state=state,
                failures=failures,
                retry_in=retry_in,
            )
        )
    return out


@dataclass(frozen=True, slots=True)
class QueueDepth:
    """Runs of one queue in one status."""

    queue: str
    status: str
    runs: int
    oldest: float | None
    """When the oldest of them was created."""


@dataclass(frozen=True, slots=True)
class WorkerRow:
    """A worker, as the leases it holds show it."""

    worker: str
    runs: int
    next_expiry: float
    overdue: int
    """Leases past their expiry (the worker stopped renewing: another takes the run over)."""
    here: bool
    """The worker of this server process."""


@dataclass(frozen=True, slots=True)
class Lease:
    """A running run the viewer may see, and the worker holding it."""

    run_id: str
    program: str
    queue: str
    worker: str | None
    expires_at: float | None
    updated_at: float


@dataclass(frozen=True, slots=True)
class Health:
    """Everything the health page shows."""

    readiness: Readiness
    deployments: list[Deployment]
    queues: list[QueueDepth]
    workers: list[WorkerRow]
    leases: list[Lease]
    agents: list[AgentBreakerState]
    kill_switches: int
    now: float = field(default_factory=time.time)
    worker_here: dict[str, Any] | None = None


async def _queues(store: Store) -> list[QueueDepth]:
    marks = ", ".join("?" for _ in _ACTIVE)
    rows = await store.fetchall(
        f"SELECT queue, status, COUNT(*), MIN(created_at) FROM runs WHERE status IN ({marks})"
        " GROUP BY queue, status ORDER BY queue, status",
        _ACTIVE,
    )
    return [QueueDepth(r[0], r[1], int(r[2]), r[3]) for r in rows]


async def _workers(store: Store, now: float, here: str | None) -> list[WorkerRow]:
    rows = await store.fetchall(
        "SELECT lease_owner, COUNT(*), MIN(lease_expires_at),"
        " SUM(CASE WHEN lease_expires_at < ? THEN 1 ELSE 0 END)"
        " FROM runs WHERE status = 'running' AND lease_owner IS NOT NULL"
        " GROUP BY lease_owner ORDER BY lease_owner",
        (now,),
    )
    out = [WorkerRow(r[0], int(r[1]), float(r[2] or 0), int(r[3] or 0), r[0] == here) for r in rows]
    if here is not None and all(not w.here for w in out):
        out.insert(0, WorkerRow(here, 0, 0.0, 0, True))
    return out


async def _leases(store: Store, principal: Principal) -> list[Lease]:
    scope, params = principal.scope()
    rows = await store.fetchall(
        "SELECT id, program, queue, lease_owner, lease_expires_at, updated_at FROM runs"
        f" WHERE status = 'running' AND {scope} ORDER BY lease_expires_at LIMIT ?",
        (*params, _LEASES_SHOWN),
    )
    return [Lease(r[0], r[1], r[2], r[3], r[4], float(r[5])) for r in rows]


async def _kills(store: Store, principal: Principal) -> int:
    row = await store.fetchone(
        "SELECT COUNT(*) FROM kill_switches WHERE org_id = ? AND lifted_at IS NULL",
        (principal.org_id,),
    )
    return int(row[0]) if row else 0


async def health(gw: Gateway, store: Store, principal: Principal) -> Health:
    """The health page's data for ``principal``."""
    now = time.time()
    worker = gw.worker
    here = worker.id if worker is not None else None
    about = None
    if worker is not None:
        opts = worker.options
        about = {
            "id": worker.id,
            "queues": ", ".join(opts.queues),
            "concurrency": opts.concurrency,
            "lease_seconds": opts.lease_seconds,
            "completed": worker.completed,
        }
    return Health(
        readiness=await readiness(gw),
        deployments=breakers(gw),
        queues=await _queues(store),
        workers=await _workers(store, now, here),
        leases=await _leases(store, principal),
        agents=await agent_breakers(store, principal),
        kill_switches=await _kills(store, principal),
        now=now,
        worker_here=about,
    )
