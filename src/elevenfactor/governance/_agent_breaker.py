"""Each agent's circuit breaker across runs: too many failed or blocked runs in a window pause
the agent (in one organisation) until an admin resets it.

When a run of an agent whose policies set ``breakers.agent`` ends, ``record_run_outcome`` stores
how it ended (``succeeded``, ``failed``, or ``blocked``: a guard's ``block`` verdict or a run
breaker stopped it) and counts the agent's outcomes in the window (since the last reset, if
that is later). Once at least ``min_runs`` are in it and the share of failed runs reaches
``max_error_rate`` (or that of blocked runs ``max_block_rate``), the breaker trips: the agent
is ``paused``, with a ledger entry ``agent.paused``, and new runs of it are refused with
``AgentPaused`` (``check_not_paused``, called where runs are submitted) until an admin resets
it (``reset_agent``, ledger entry ``admin.agent_reset``).

Cheap on the path every run end takes: one insert, one ranged count and one ranged delete on
the ``(org_id, agent, ended_at)`` index, no lock unless it trips. Concurrent run ends never
trip twice: only the one whose conditional update finds the breaker still ``closed`` pauses it
and writes the entry. (A run end that races others counts its own outcome and every one
committed before it; the trip may land one run later than an exact count, never twice.)
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, replace
from typing import Any, Literal

from elevenfactor.errors import AgentPaused, RequestError
from elevenfactor.governance._ledger import append_entry, canonical
from elevenfactor.governance._names import check_text
from elevenfactor.governance._policy_model import AgentBreaker
from elevenfactor.governance._principal import SYSTEM, Principal
from elevenfactor.store import Executor, Store

__all__ = [
    "OUTCOMES",
    "AgentBreakerState",
    "agent_breakers",
    "check_not_paused",
    "paused_agents",
    "record_run_outcome",
    "reset_agent",
]

Outcome = Literal["succeeded", "failed", "blocked"]
OUTCOMES: tuple[str, ...] = ("succeeded", "failed", "blocked")
"""How a run ends, as its agent's breaker counts it."""

_COLUMNS = (
    "b.org_id, b.agent, b.state, b.reason, b.tripped_at, b.reset_at, b.reset_by,"
    " b.reset_reason, b.window_seconds, b.min_runs, b.max_error_rate, b.max_block_rate,"
    " b.policy, b.updated_at"
)
_STATS = (
    "(SELECT COUNT(*) FROM agent_outcomes o WHERE {match}),"
    " (SELECT COUNT(*) FROM agent_outcomes o WHERE {match} AND o.outcome = 'failed'),"
    " (SELECT COUNT(*) FROM agent_outcomes o WHERE {match} AND o.outcome = 'blocked')"
).format(
    match="o.org_id = b.org_id AND o.agent = b.agent AND o.ended_at >= ? - b.window_seconds"
    " AND o.ended_at >= COALESCE(b.reset_at, 0)"
)


@dataclass(frozen=True, slots=True)
class AgentBreakerState:
    """An agent's breaker in one organisation, with its runs in the window now."""

    org_id: str
    agent: str
    state: str
    reason: str | None
    tripped_at: float | None
    reset_at: float | None
    reset_by: str | None
    reset_reason: str | None
    window_seconds: float
    min_runs: int
    max_error_rate: float | None
    max_block_rate: float | None
    policy: str | None
    updated_at: float
    runs: int = 0
    """Runs that ended in the window (and since the last reset)."""
    errors: int = 0
    blocks: int = 0
    tripped: bool = False
    """Set on what ``record_run_outcome`` returns when that very call paused the agent."""

    @property
    def paused(self) -> bool:
        """New runs are refused."""
        return self.state == "paused"

    @property
    def error_rate(self) -> float:
        """Failed runs / runs in the window (0 with none)."""
        return self.errors / self.runs if self.runs else 0.0

    @property
    def block_rate(self) -> float:
        """Blocked runs / runs in the window (0 with none)."""
        return self.blocks / self.runs if self.runs else 0.0

    def to_dict(self) -> dict[str, Any]:
        """The breaker as the API and ``--json`` show it."""
        return {
            "object": "agent_breaker",
            "agent": self.agent,
            "state": self.state,
            "reason": self.reason,
            "tripped_at": self.tripped_at,
            "reset_at": self.reset_at,
            "reset_by": self.reset_by,
            "reset_reason": self.reset_reason,
            "policy": self.policy,
            "window": {
                "seconds": self.window_seconds,
                "runs": self.runs,
                "errors": self.errors,
                "blocks": self.blocks,
                "error_rate": self.error_rate,
                "block_rate": self.block_rate,
            },
            "limits": {
                "min_runs": self.min_runs,
                "max_error_rate": self.max_error_rate,
                "max_block_rate": self.max_block_rate,
            },
        }


def _state(row: Any) -> AgentBreakerState:
    return AgentBreakerState(
        str(row[0]),
        str(row[1]),
        str(row[2]),
        row[3],
        row[4],
        row[5],
        row[6],
        row[7],
        float(row[8]),
        int(row[9]),
        row[10],
        row[11],
        row[12],
        float(row[13]),
        runs=int(row[14] or 0),
        errors=int(row[15] or 0),
        blocks=int(row[16] or 0),
    )


async def _read(db: Executor, org_id: str, agent: str, now: float) -> AgentBreakerState | None:
    row = await db.fetchone(
        f"SELECT {_COLUMNS}, {_STATS} FROM agent_breakers b WHERE b.org_id = ? AND b.agent = ?",
        (now, now, now, org_id, agent),
    )
    return _state(row) if row is not None else None


def _why(state: AgentBreakerState, conf: AgentBreaker) -> str | None:
    """Why the breaker trips with ``state``'s counts, or None if it does not."""
    if state.runs < conf.min_runs:
        return None
    for label, count, rate, limit in (
        ("error", state.errors, state.error_rate, conf.max_error_rate),
        ("block", state.blocks, state.block_rate, conf.max_block_rate),
    ):
        if limit is not None and rate >= limit:
            return (
                f"{label} rate {rate:.0%} ({count} of {state.runs} runs in"
                f" {conf.window_seconds:g}s) reached {limit:.0%}"
            )
    return None


async def record_run_outcome(
    store: Store,
    org_id: str,
    agent: str,
    outcome: str,
    policy_breaker: AgentBreaker,
    *,
    run_id: str | None = None,
    policy: str | None = None,
    now: float | None = None,
) -> AgentBreakerState:
    """Record that a run of ``agent`` (in ``org_id``) ended with ``outcome`` and trip the
    agent's breaker (``policy_breaker``: its settings; ``policy``: the refs they came from)
    if its rates are reached. ``run_id`` makes recording idempotent. Returns the breaker's
    state, ``tripped`` set if this call paused the agent."""
    if outcome not in OUTCOMES:
        raise ValueError(f"outcome is one of {', '.join(OUTCOMES)}, not {outcome!r}")
    at = time.time() if now is None else now
    conf = policy_breaker.model_dump(mode="json")
    config = canonical({**conf, "policy": policy})
    settings = (
        policy_breaker.window_seconds,
        policy_breaker.min_runs,
        policy_breaker.max_error_rate,
        policy_breaker.max_block_rate,
        policy,
    )
    async with store.transaction() as tx:
        await tx.execute(
            "INSERT INTO agent_outcomes (run_id, org_id, agent, outcome, ended_at)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (run_id) DO NOTHING",
            (run_id or uuid.uuid4().hex, org_id, agent, outcome, at),
        )
        await tx.execute(
            "INSERT INTO agent_breakers (org_id, agent, state, window_seconds, min_runs,"
            " max_error_rate, max_block_rate, policy, config, updated_at)"
            " VALUES (?, ?, 'closed', ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (org_id, agent) DO NOTHING",
            (org_id, agent, *settings, config, at),
        )
        # Settings changed since (a policy edited): take the new ones. No write otherwise.
        await tx.execute(
            "UPDATE agent_breakers SET window_seconds = ?, min_runs = ?, max_error_rate = ?,"
            " max_block_rate = ?, policy = ?, config = ?, updated_at = ?"
            " WHERE org_id = ? AND agent = ? AND config <> ?",
            (*settings, config, at, org_id, agent, config),
        )
        state = await _read(tx, org_id, agent, at)
        assert state is not None
        await tx.execute(
            "DELETE FROM agent_outcomes WHERE org_id = ? AND agent = ? AND ended_at < ?",
            (org_id, agent, max(at - state.window_seconds, state.reset_at or 0.0)),
        )
        reason = None if state.paused else _why(state, policy_breaker)
        if reason is None:
            return state
        tripped = await tx.fetchone(
            "UPDATE agent_breakers SET state = 'paused', reason = ?, tripped_at = ?,"
            " updated_at = ? WHERE org_id = ? AND agent = ? AND state = 'closed' RETURNING agent",
            (reason, at, at, org_id, agent),
        )
        if tripped is None:  # another run end paused it first
            return replace(state, state="paused")
        state = replace(state, state="paused", reason=reason, tripped_at=at, tripped=True)
        await append_entry(tx, "agent.paused", f"{org_id}/{agent}", SYSTEM.actor(), _body(state))
    return state


def _body(state: AgentBreakerState) -> dict[str, Any]:
    window = state.to_dict()["window"]
    return {"org_id": state.org_id, "agent": state.agent, "reason": state.reason, **window}


async def check_not_paused(db: Executor, org_id: str, agent: str) -> None:
    """Raise ``AgentPaused`` if ``agent`` is paused in ``org_id`` (one primary-key lookup)."""
    row = await db.fetchone(
        "SELECT reason, tripped_at FROM agent_breakers WHERE org_id = ? AND agent = ?"
        " AND state = 'paused'",
        (org_id, agent),
    )
    if row is not None:
        raise AgentPaused(
            f"agent {agent!r} is paused: {row[0]}",
            hint=f"an admin resets it once the cause is fixed: `elevenfactor agents reset"
            f" {agent} --reason TEXT`",
            agent=agent,
            reason=row[0],
            tripped_at=row[1],
        )


async def agent_breakers(
    db: Executor, principal: Principal, *, now: float | None = None
) -> list[AgentBreakerState]:
    """The breakers of ``principal``'s organisation (every organisation's for the system), by
    agent name, each with its runs in the window now."""
    at = time.time() if now is None else now
    where, params = ("1 = 1", []) if principal.unscoped else ("b.org_id = ?", [principal.org_id])
    rows = await db.fetchall(
        f"SELECT {_COLUMNS}, {_STATS} FROM agent_breakers b WHERE {where}"
        " ORDER BY b.agent, b.org_id",
        (at, at, at, *params),
    )
    return [_state(r) for r in rows]


async def paused_agents(db: Executor, org_id: str | None = None) -> list[AgentBreakerState]:
    """The paused agents of ``org_id`` (of every organisation when None), by name."""
    where, params = ("b.state = 'paused'", [])
    if org_id is not None:
        where, params = f"{where} AND b.org_id = ?", [org_id]
    at = time.time()
    rows = await db.fetchall(
        f"SELECT {_COLUMNS}, {_STATS} FROM agent_breakers b WHERE {where}"
        " ORDER BY b.agent, b.org_id",
        (at, at, at, *params),
    )
    return [_state(r) for r in rows]


async def reset_agent(
    store: Store, principal: Principal, agent: str, reason: str
) -> AgentBreakerState:
    """Close the paused breaker of ``agent`` in ``principal``'s organisation (admins only):
    new runs are accepted again, and outcomes before now no longer count. A ledger entry
    ``admin.agent_reset`` records who, when and why. An agent without a breaker in the
    organisation is ``agent_not_found`` (404); one that is not paused ``agent_not_paused``
    (409)."""
    principal.require_admin("resetting an agent's breaker")
    if not isinstance(reason, str) or not reason.strip():
        raise RequestError(
            "a reason is required", code="missing_required_parameter", param="reason"
        )
    check_text(reason, "reason", 1000)
    at = time.time()
    async with store.transaction() as tx:
        row = await tx.fetchone(
            "UPDATE agent_breakers SET state = 'closed', reset_at = ?, reset_by = ?,"
            " reset_reason = ?, updated_at = ? WHERE org_id = ? AND agent = ?"
            " AND state = 'paused' RETURNING reason",
            (at, principal.user_name, reason, at, principal.org_id, agent),
        )
        if row is None:
            if await _read(tx, principal.org_id, agent, at) is None:
                raise RequestError(
                    f"no agent {agent!r} has a circuit breaker in organisation"
                    f" {principal.org_id!r}",
                    code="agent_not_found",
                    status=404,
                    param="name",
                    hint="`elevenfactor agents status` lists the agents' breakers",
                )
            raise RequestError(
                f"agent {agent!r} is not paused",
                code="agent_not_paused",
                status=409,
                hint="`elevenfactor agents status` lists the agents' breakers",
            )
        await append_entry(
            tx,
            "admin.agent_reset",
            f"{principal.org_id}/{agent}",
            principal.actor(),
            {"org_id": principal.org_id, "agent": agent, "reason": reason, "was": row[0]},
        )
        state = await _read(tx, principal.org_id, agent, at)
    assert state is not None
    return state
