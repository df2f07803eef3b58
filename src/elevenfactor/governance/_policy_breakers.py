"""The parts of a guard policy file that are not rules: who decides an ``escalate`` verdict,
and the circuit breakers of the runs and agents the policy governs (``escalate:`` and
``breakers:`` in ``policies/NAME.yaml``; the whole schema is in ``_policy_model``)."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

__all__ = ["AgentBreaker", "BreakerConfig", "EscalateConfig", "RunBreaker"]

_Name = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,99}$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EscalateConfig(_Strict):
    """Who decides an ``escalate`` verdict, and what happens when nobody does."""

    group: _Name | None = Field(default=None, description="Reviewer group; None: any reviewer.")
    timeout: float = Field(default=3600.0, gt=0, description="Seconds before `on_timeout`.")
    on_timeout: Literal["reject", "approve"] = Field(
        default="reject", description="The decision when the timeout passes."
    )


class RunBreaker(_Strict):
    """Per run: the run stops with ``breaker_tripped`` when one of these is reached (alongside the
    agent's own `limits`; the tighter one wins)."""

    max_steps: int | None = Field(default=None, ge=1, description="Model requests.")
    max_tool_calls: int | None = Field(default=None, ge=0, description="Tool calls.")
    max_cost_usd: Decimal | None = Field(default=None, ge=0, description="Spend, in USD.")
    max_wall_seconds: float | None = Field(default=None, gt=0, description="Wall time.")
    max_same_tool_call: int | None = Field(
        default=3, ge=1, description="The same tool with the same arguments, N times."
    )
    max_same_error: int | None = Field(
        default=3, ge=1, description="The same error (class and message), N times."
    )


class AgentBreaker(_Strict):
    """Per agent across runs: when the share of runs that failed or were blocked within the
    window reaches a rate (after ``min_runs``), the agent is paused until an admin resets it."""

    window_seconds: float = Field(default=900.0, gt=0, description="The sliding window.")
    min_runs: int = Field(default=10, ge=1, description="Runs in the window before it can trip.")
    max_error_rate: float | None = Field(
        default=0.5, gt=0, le=1, description="Failed runs / runs that trips it."
    )
    max_block_rate: float | None = Field(
        default=0.5, gt=0, le=1, description="Runs with a block verdict / runs that trips it."
    )


class BreakerConfig(_Strict):
    """Circuit breakers for runs and agents governed by the policy."""

    run: RunBreaker = Field(default_factory=RunBreaker)
    agent: AgentBreaker | None = Field(
        default=None, description="Per-agent breaker; None: agents are never paused."
    )
