"""Readiness: whether this server takes requests, computed once for ``/readyz`` (which answers
it to probes) and the health page (which shows it check by check).

The checks: open, migrated and not draining; the budget backend answering (budgets fail closed:
with Redis down no call a budget covers can be admitted). Besides, the agents a circuit breaker
has paused, of every organisation and by name only: a paused agent does not make the server
unready (it serves everything else; the agent's runs are refused until an admin resets it).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from elevenfactor.governance._agent_breaker import paused_agents
from elevenfactor.server._state import Gateway

__all__ = ["Check", "Readiness", "readiness"]

logger = logging.getLogger("elevenfactor.server")

_BUDGETS_DOWN = "the budget backend (REDIS_URL) does not answer"


@dataclass(frozen=True, slots=True)
class Check:
    """One readiness check."""

    name: str
    ok: bool
    detail: str


@dataclass(frozen=True, slots=True)
class Readiness:
    """What ``/readyz`` answers, check by check."""

    status: str
    """``ready``, ``starting``, ``draining`` or ``unavailable``."""
    checks: tuple[Check, ...]
    paused: tuple[str, ...] | None
    """The paused agents' names, sorted; None if the store could not say (empty before the
    server is open: nothing is asked then)."""

    @property
    def ready(self) -> bool:
        """``/readyz`` answers 200."""
        return self.status == "ready"

    @property
    def http_status(self) -> int:
        """200 when ready, else 503 (a load balancer takes the server out of rotation)."""
        return 200 if self.ready else 503

    def body(self) -> dict[str, Any]:
        """The JSON body of ``/readyz`` (``server._responses.Readiness``): the status; when
        unavailable, each failing check and why; when agents are paused, their names (``null``
        if the store could not list them)."""
        if self.status == "unavailable":
            return {
                "status": self.status,
                "checks": {c.name: c.detail for c in self.checks if not c.ok},
            }
        if not self.ready or self.paused == ():
            return {"status": self.status}
        paused = list(self.paused) if self.paused is not None else None
        return {"status": self.status, "details": {"agents_paused": paused}}


async def readiness(gw: Gateway) -> Readiness:
    """The readiness of ``gw``'s server now (see the module doc). Never raises on a detail:
    paused agents the store cannot list are reported as unknown."""
    if not gw.ready:
        state = "draining" if gw.draining else "starting"
        return Readiness(state, (Check("server", False, f"{state}: new requests are refused"),), ())
    checks = [Check("server", True, "open, migrated, not draining")]
    status = "ready"
    if gw.meter is not None:
        up = await gw.meter.gate.ready()
        checks.append(Check("budgets", up, "answers" if up else _BUDGETS_DOWN))
        if not up:
            status = "unavailable"
    paused = await _paused(gw)
    if paused is None:
        detail = "unknown: listing them failed (see the server log)"
    else:
        detail = ("paused: " + ", ".join(paused)) if paused else "none paused"
    checks.append(Check("agents", True, detail + " (a paused agent does not make it unready)"))
    return Readiness(status, tuple(checks), paused)


async def _paused(gw: Gateway) -> tuple[str, ...] | None:
    """The names of paused agents, or None if the store cannot say right now."""
    if gw.store is None:
        return ()
    try:
        found = await paused_agents(gw.store)
    except Exception:  # a readiness probe reports; it never fails on a detail
        logger.exception("listing paused agents failed")
        return None
    return tuple(sorted({b.agent for b in found}))
