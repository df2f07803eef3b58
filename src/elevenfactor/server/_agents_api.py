"""``/v1/agents``: the agents' circuit breakers over HTTP, as ``elevenfactor agents status``
and ``agents reset`` (``governance._agent_breaker``).

Every member reads its organisation's breakers (the query is by the caller's organisation);
only an admin resets one (``403 permission_denied`` otherwise), with a reason recorded in the
ledger (``admin.agent_reset``). An agent without a breaker in the caller's organisation — one
another organisation's, or none — is ``404 agent_not_found``; one that is not paused is
``409 agent_not_paused``, as the CLI answers.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, Field
from pydantic import StringConstraints as SC
from starlette.responses import Response

from elevenfactor.governance import ID_PATTERN
from elevenfactor.governance._agent_breaker import agent_breakers, reset_agent
from elevenfactor.server._op_types import Operation, PathParam
from elevenfactor.server._runs_api import _Call, endpoint
from elevenfactor.server._schemas import Text, _Schema

__all__ = ["OPERATIONS", "ROUTES", "BreakerQuery", "BreakerReset"]


class BreakerQuery(_Schema):
    """``GET /v1/agents/breakers`` query string."""

    state: Literal["closed", "paused"] | None = Field(
        default=None, description="Only breakers in this state."
    )


class BreakerReset(_Schema):
    """``POST /v1/agents/{name}/reset``: why (recorded in the ledger). The admin who resets
    is the authenticated caller, never a field."""

    reason: Annotated[Text, SC(min_length=1, max_length=1000)] = Field(
        description="Why the agent may run again (1-1000 characters, not blank)."
    )


class BreakerWindowDoc(BaseModel):
    """The agent's runs that ended in the window (and since the last reset)."""

    seconds: float
    runs: int
    errors: int = Field(description="Runs that failed.")
    blocks: int = Field(description="Runs a guard blocked or a run breaker stopped.")
    error_rate: float
    block_rate: float


class BreakerLimitsDoc(BaseModel):
    """The policy's `breakers.agent` settings the breaker trips on."""

    min_runs: int
    max_error_rate: float | None
    max_block_rate: float | None


class AgentBreakerDoc(BaseModel):
    """An agent's circuit breaker in the caller's organisation."""

    object: Literal["agent_breaker"]
    agent: str
    state: Literal["closed", "paused"] = Field(description="`paused`: new runs are refused.")
    reason: str | None = Field(description="Why it tripped (while paused, and after).")
    tripped_at: float | None
    reset_at: float | None
    reset_by: str | None
    reset_reason: str | None
    policy: str | None = Field(description="The policies the settings came from.")
    window: BreakerWindowDoc
    limits: BreakerLimitsDoc


class AgentBreakerList(BaseModel):
    """The organisation's agents' breakers, by agent name."""

    object: Literal["list"]
    data: list[AgentBreakerDoc]


def _json(obj: object, status: int = 200) -> Response:
    return Response(orjson.dumps(obj), status_code=status, media_type="application/json")


@endpoint
async def index_breakers(call: _Call) -> Response:
    """``GET /v1/agents/breakers``: the breakers of the caller's organisation."""
    q = call.query(BreakerQuery)
    found = await agent_breakers(call.store, call.principal)
    data = [b.to_dict() for b in found if q.state is None or b.state == q.state]
    return _json({"object": "list", "data": data})


@endpoint
async def post_reset(call: _Call) -> Response:
    """``POST /v1/agents/{name}/reset``: close the agent's paused breaker (admins)."""
    name = call.path_id("name")
    call.principal.require_admin("resetting an agent's breaker")
    body = await call.body(BreakerReset)
    state = await reset_agent(call.store, call.principal, name, body.reason)
    return _json(state.to_dict())


ROUTES: list[tuple[str, Any, list[str]]] = [
    ("/v1/agents/breakers", index_breakers, ["GET"]),
    ("/v1/agents/{name}/reset", post_reset, ["POST"]),
]

OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "/v1/agents/breakers", "get", "List agents' circuit breakers", "agents",
        AgentBreakerList,
        "The breakers of the caller's organisation, by agent: closed or paused, why and when"
        " it tripped, the last reset, and the runs in the window now (error and block rates"
        " against their limits), as `elevenfactor agents status`. Any member may read them.",
        query=BreakerQuery,
    ),
    Operation(
        "/v1/agents/{name}/reset", "post", "Reset an agent's circuit breaker", "agents",
        AgentBreakerDoc,
        "Close the agent's paused breaker: new runs are accepted again and only runs that end"
        " from now on count. Admins only (403 `permission_denied` otherwise); the reason is"
        " recorded in the ledger (`admin.agent_reset`). An agent without a breaker in the"
        " caller's organisation is 404 `agent_not_found`; one that is not paused is 409"
        " `agent_not_paused`.",
        body=BreakerReset,
        params=(PathParam("name", "The agent's name.", ID_PATTERN),),
    ),
)  # fmt: skip
