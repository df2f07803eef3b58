"""An agent's model call with its rate limits and budgets, as journaled steps.

Around the ``model`` step, when the runtime has them:

- ``limits.acquire``: the owner's rate limits (key, user, team, route) for the call; while they
  are spent the run parks on a durable timer (``limits.wait``) until the limiter says capacity
  frees, holding no worker meanwhile, and tries again;
- ``budget.reserve``: the call's worst case held against every budget that applies (the hold
  id is this step's key, so a reserve retried after a crash finds the hold it made); when a
  budget whose policy is ``approve:GROUP`` cannot cover it, the run waits at an approval gate
  for a reviewer of GROUP, who raises the limit or lets the call through once (the run then
  reserves again, past the limit if need be), or rejects it (the run fails with the budget's
  error);
- ``budget.commit`` (or ``budget.release`` when the model step failed): the real cost charged
  and the rest released, journaled with the cost, so a resumed or replayed run never charges
  twice and a model step re-run after a crash is committed once, against the same hold.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from elevenfactor.errors import BudgetExceeded, LimitExceeded, StepFailed
from elevenfactor.governance import DEFAULT_ORG, Hold, Meter, Principal, price_book
from elevenfactor.models import (
    Limiter,
    Message,
    ModelSettings,
    Response,
    estimate_tokens,
    limits_for,
)
from elevenfactor.observe import call_cost
from elevenfactor.runtime._agent_spec import AgentSpec
from elevenfactor.runtime._approvals import approval
from elevenfactor.runtime._context import RunContext, step_key

if TYPE_CHECKING:
    from elevenfactor.runtime._agent import AgentDeps

__all__ = ["metered_call"]

ModelStep = Callable[[list[Message], ModelSettings, str, Principal | None], Awaitable[Response]]


async def metered_call(
    ctx: RunContext,
    deps: AgentDeps,
    spec: AgentSpec,
    messages: list[Message],
    settings: ModelSettings,
    model_step: ModelStep,
) -> Response:
    """``model_step`` as the journaled ``model`` step, between the limit and budget steps the
    runtime's limiter and meter call for (see the module docstring)."""
    owner = ctx.lease.owner
    route = deps.registry.resolve(
        spec.model, settings.tags, messages=messages, settings=settings
    ).route
    if deps.limiter is not None:
        await _capacity(ctx, deps, deps.limiter, route, messages, settings, owner)
    meter = deps.meter
    if meter is None:
        return await ctx.step(
            "model", model_step, messages, settings, ctx.run_id, owner,
            kind="model", result_type=Response,
        )  # fmt: skip
    held = await ctx.step(
        "budget.reserve", _reserve, meter, spec.name, route, messages, settings, ctx.run_id,
        owner, kind="budget",
    )  # fmt: skip
    if "refused" in held:
        held = await _approve(ctx, meter, spec.name, route, messages, settings, owner, held)
    hold = Hold.from_dict(held)
    try:
        response = await ctx.step(
            "model", model_step, messages, settings, ctx.run_id, owner,
            kind="model", result_type=Response,
        )  # fmt: skip
    except StepFailed:
        if not hold.empty:
            await ctx.step("budget.release", meter.settle, hold, None, kind="budget")
        raise
    await ctx.step("budget.commit", _commit, deps, meter, hold, response, kind="budget")
    return response


async def _capacity(
    ctx: RunContext,
    deps: AgentDeps,
    limiter: Limiter,
    route: str,
    messages: list[Message],
    settings: ModelSettings,
    owner: Principal | None,
) -> None:
    while True:
        got = await ctx.step(
            "limits.acquire", _acquire, deps, limiter, route, messages, settings, owner,
            kind="limits",
        )  # fmt: skip
        if got["retry_after"] is None:
            return
        await ctx.sleep(float(got["retry_after"]), name="limits.wait")


async def _acquire(
    deps: AgentDeps,
    limiter: Limiter,
    route: str,
    messages: list[Message],
    settings: ModelSettings,
    owner: Principal | None,
) -> dict[str, Any]:
    """``{"retry_after": None}`` once the limits are taken, else how long to park."""
    keys = limits_for(
        deps.registry.project,
        key_name=owner.key_name if owner else None,
        user_name=owner.user_name if owner else None,
        team_name=owner.team_name if owner else None,
        route=route,
    )
    if not keys:
        return {"retry_after": None}
    try:
        await limiter.acquire(keys, estimate_tokens(messages, settings), deadline=time.monotonic())
    except LimitExceeded as exc:
        if exc.retry_after is None:  # can never fit: the run fails with the limit's error
            raise
        return {"retry_after": max(exc.retry_after, 0.05), "limit": exc.details}
    return {"retry_after": None}


async def _reserve(
    meter: Meter,
    agent: str,
    route: str,
    messages: list[Message],
    settings: ModelSettings,
    run_id: str,
    owner: Principal | None,
    force: bool = False,
) -> dict[str, Any]:
    """The hold as a dict, or ``{"refused": details}`` when a budget whose policy is
    ``approve:GROUP`` refuses (other refusals raise ``BudgetExceeded``)."""
    charge = meter.charge(
        owner, route, org_id=DEFAULT_ORG, agent=agent, run_id=run_id, tags=settings.tags
    )
    try:
        hold = await meter.reserve(step_key() or run_id, charge, messages, settings, force)
    except BudgetExceeded as exc:
        if not str(exc.details.get("on_exceed") or "").startswith("approve:"):
            raise
        return {"refused": {"message": exc.message, **exc.details}}
    return hold.to_dict()


async def _approve(
    ctx: RunContext,
    meter: Meter,
    agent: str,
    route: str,
    messages: list[Message],
    settings: ModelSettings,
    owner: Principal | None,
    held: dict[str, Any],
) -> dict[str, Any]:
    """The approval gate of an ``approve:GROUP`` budget; the hold reserved once approved."""
    details = dict(held["refused"])
    message = str(details.pop("message"))
    group = str(details["on_exceed"]).partition(":")[2]
    request = {"agent": agent, "route": route, "reason": message, **details}
    decision = await approval(ctx, "budget", request, group=group)
    if not decision.approved:
        why = f"; rejected by {decision.decided_by}" + (
            f": {decision.reason}" if decision.reason else ""
        )
        raise BudgetExceeded(message + why, **details)
    return await ctx.step(
        "budget.reserve", _reserve, meter, agent, route, messages, settings, ctx.run_id, owner,
        True, kind="budget",
    )  # fmt: skip


async def _commit(deps: AgentDeps, meter: Meter, hold: Hold, response: Response) -> dict[str, Any]:
    prices = price_book(deps.registry.project)
    cost = call_cost(prices, response.deployment, response.usage, cache_hit=response.cache_hit)
    await meter.settle(hold, cost)
    return {"hold": hold.id, "cost": cost}
