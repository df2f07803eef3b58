"""Admission of one gateway call: rate limits, kill switches, budgets, and settling afterwards.

``admit`` first takes the call's request and estimated tokens from every rate limit that applies
(key, user, team, route: waiting in the priority queue up to the call's deadline, else
``LimitExceeded`` with ``Retry-After``), then refuses a caller a kill switch covers, holds the
call's worst-case cost against every budget that applies (``BudgetExceeded`` names the one that
cannot cover it) and watches the call while it runs, so a kill switch pulled meanwhile cancels
it. ``Admission.settle`` commits the real cost (or releases everything when nothing was spent),
corrects the rate limits' token count with the real usage, both off the response path, and
stops the watch; it never fails the answer: a hold that cannot be settled expires.

``admit_charge`` is the same admission for any metered call given its ``Charge``, its token
estimate and how to hold its worst case: ``POST /v1/embeddings`` goes through it too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Container, Sequence
from dataclasses import dataclass

from starlette.types import Scope

from elevenfactor.config import ProjectConfig
from elevenfactor.errors import BudgetExceeded, CallKilled
from elevenfactor.governance import Charge, Hold, Meter, Principal
from elevenfactor.models import (
    Call,
    Limiter,
    LimitWait,
    Message,
    ModelSettings,
    Permit,
    estimate_tokens,
    limits_for,
    priority_of,
)
from elevenfactor.models._registry import Resolved
from elevenfactor.observe import _tracing
from elevenfactor.observe._trace_events import budget_event
from elevenfactor.server._auth import header
from elevenfactor.server._disconnect import client_timeout_from
from elevenfactor.server._state import Gateway
from elevenfactor.server._wire import ChatRequest

__all__ = ["Admission", "admit", "admit_call", "admit_charge", "downgrade_target", "wait_of"]

logger = logging.getLogger("elevenfactor.server")
_PRIORITY = b"x-elevenfactor-priority"  # the call's rank among those waiting for capacity
_reconciling: set[asyncio.Task[None]] = set()


@dataclass(slots=True)
class Admission:
    """What a call was admitted with: its budget hold, and the meter watching it."""

    call_id: str
    meter: Meter | None = None
    hold: Hold | None = None
    limiter: Limiter | None = None
    permit: Permit | None = None
    settled: bool = False

    def killed(self) -> CallKilled | None:
        """The kill switch that cancelled the call, if one did (checked on ``CancelledError``:
        the caller then un-cancels its task and answers with this error)."""
        if self.meter is None:
            return None
        killed = self.meter.untrack(self.call_id)
        if killed is not None:
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
        return killed

    async def settle(self, cost: float | None, tokens: int = 0) -> None:
        """Commit ``cost`` against the hold (release it all when None), correct the rate
        limits to the ``tokens`` really used, stop the watch. Once. Both writes happen in the
        background, off the response's path (``Meter.settle_later``)."""
        if self.settled:
            return
        self.settled = True
        if self.permit is not None and self.limiter is not None:
            task = asyncio.create_task(_reconcile(self.limiter, self.permit, tokens))
            _reconciling.add(task)
            task.add_done_callback(_reconciling.discard)
        if self.meter is None:
            return
        self.meter.untrack(self.call_id)
        if self.hold is not None:
            self.meter.settle_later(self.hold, cost)


async def admit(
    meter: Meter | None,
    call_id: str,
    principal: Principal,
    route: str,
    messages: Sequence[Message],
    settings: ModelSettings,
    tags: Sequence[str] = (),
    *,
    limiter: Limiter | None = None,
    project: ProjectConfig | None = None,
    wait: LimitWait | None = None,
) -> Admission:
    """Take the rate limits, check kill switches and reserve budgets for a call by
    ``principal`` through ``route``, then watch it (see the module docstring). ``wait`` is how
    long and at which priority the call may queue for capacity."""
    charge = meter.charge(principal, route, tags=tags) if meter is not None else None

    def hold(charge: Charge) -> Awaitable[Hold]:
        assert meter is not None
        return meter.hold(call_id, charge, messages, settings, pooled=True)  # checked first

    return await admit_charge(
        meter, call_id, principal, route, charge, lambda: estimate_tokens(messages, settings),
        hold, limiter=limiter, project=project, wait=wait,
    )  # fmt: skip


async def admit_charge(
    meter: Meter | None,
    call_id: str,
    principal: Principal,
    route: str | None,
    charge: Charge | None,
    tokens: Callable[[], int],
    hold: Callable[[Charge], Awaitable[Hold]],
    *,
    limiter: Limiter | None = None,
    project: ProjectConfig | None = None,
    wait: LimitWait | None = None,
) -> Admission:
    """``admit`` for any metered call: ``route`` names its ``limits.models`` entry (None: only
    the key, user and team limits apply), ``charge`` is what budgets and kill switches match
    (None without a meter), ``tokens()`` the estimate the rate limits take (asked only when one
    applies), ``hold(charge)`` reserves the worst case once the kill switches let the call
    through and a budget applies (``Meter.hold``, or ``SpendGate.reserve`` of an amount)."""
    adm = Admission(call_id, limiter=limiter)
    keys = []
    if limiter is not None and project is not None and wait is not None:
        keys = limits_for(
            project,
            key_name=principal.key_name,
            user_name=principal.user_name,
            team_name=principal.team_name,
            route=route,
        )
    if meter is not None and charge is not None:
        await meter.gate.check(charge)  # a killed caller is refused before anything is taken
    acquire = None
    if keys:
        assert limiter is not None and wait is not None
        acquire = limiter.acquire(keys, tokens(), deadline=wait.deadline, priority=wait.priority)
    reserve = None
    if meter is not None and charge is not None and meter.gate.covered(charge):
        reserve = hold(charge)
    if acquire is not None and reserve is not None:
        # Both go to the backend (Redis, or the store) together: one round trip of latency.
        # The reservation runs as a task; the limits in this one (no gather: one task fewer).
        holding = asyncio.ensure_future(reserve)
        try:
            adm.permit = await acquire
        except BaseException:
            with contextlib.suppress(BaseException):
                adm.hold = await holding  # taken meanwhile: given back below
            if adm.hold is not None:
                adm.meter = meter
            await adm.settle(None)
            raise
        try:
            adm.hold = await holding
        except BaseException:
            await adm.settle(None)  # give back the rate limits taken
            raise
        adm.meter = meter
    elif acquire is not None:
        adm.permit = await acquire
    elif reserve is not None:
        adm.hold = await reserve
    if meter is not None and charge is not None:
        adm.meter = meter
        meter.track(call_id, charge)
    return adm


def wait_of(gw: Gateway, scope: Scope) -> LimitWait:
    """How long a call may queue for rate-limit capacity (``x-elevenfactor-timeout``, else
    ``limits.max_wait``) and at which priority (``x-elevenfactor-priority``)."""
    timeout = client_timeout_from(scope)
    priority = priority_of(header(scope, _PRIORITY), param="x-elevenfactor-priority")
    wait = gw.project.limits.max_wait if timeout is None else timeout
    return LimitWait(time.monotonic() + wait, priority)


async def _reconcile(limiter: Limiter, permit: Permit, tokens: int) -> None:
    try:
        await limiter.reconcile(permit, tokens)
    except Exception:  # the limit stays charged with the estimate: never fails the call
        logger.warning("correcting a rate limit's token count failed", exc_info=True)


async def admit_call(
    gw: Gateway,
    call: Call,
    principal: Principal,
    resolved: Resolved,
    parsed: ChatRequest,
    tags: Sequence[str],
    wait: LimitWait,
    headers: dict[str, str],
) -> tuple[Resolved, Admission]:
    """``admit`` a gateway call on its route, or on the cheaper route a budget's
    ``downgrade:ROUTE`` policy names when that budget cannot cover it (a hard budget) or is
    past its limit (a soft one). A downgrade is announced in ``x-elevenfactor-route`` and
    ``x-elevenfactor-downgraded``; ``approve:GROUP`` budgets refuse gateway calls (a chat
    completion cannot wait for a reviewer; runs do)."""
    assert gw.registry is not None

    async def on(route: str, hold_id: str) -> Admission:
        return await admit(
            gw.meter, hold_id, principal, route, parsed.messages, parsed.settings, tags,
            limiter=gw.limiter, project=gw.project, wait=wait,
        )  # fmt: skip

    names = gw.registry.names()
    try:
        adm = await on(resolved.route, call.trace_id)
        target, budget = soft_downgrade(gw.meter, adm.hold, resolved.route, names)
        if target is not None:
            await adm.settle(None)
    except BudgetExceeded as exc:
        target, budget = downgrade_target(exc, resolved.route, names), exc.details.get("budget")
        if target is None:
            if _tracing.TRACER is not None:
                budget_event("refused", refused_by=str(budget or ""))
            raise
    if target is None:
        if _tracing.TRACER is not None:
            _traced_hold(adm.hold)
        return resolved, adm
    resolved = gw.registry.resolve(target, tags, messages=parsed.messages, settings=parsed.settings)
    call.route = headers["x-elevenfactor-route"] = resolved.route
    headers["x-elevenfactor-downgraded"] = f"budget {budget}"
    # A new hold id: the first may exist (a soft budget's hold, released above).
    adm = await on(resolved.route, f"{call.trace_id}:{resolved.route}")
    if _tracing.TRACER is not None:
        _traced_hold(adm.hold, resolved.route)
    return resolved, adm


def _traced_hold(hold: Hold | None, downgraded_to: str | None = None) -> None:
    """The budget decision as a span event (tracing on only)."""
    budgets = [b for b, _ in hold.windows] if hold is not None else []
    budget_event(
        "admitted",
        budgets=budgets,
        amount=hold.amount if hold is not None and budgets else None,
        soft=hold.soft if hold is not None else (),
        downgraded_to=downgraded_to,
    )


def soft_downgrade(
    meter: Meter | None, hold: Hold | None, route: str, known: Container[str]
) -> tuple[str | None, str | None]:
    """``(route, budget scope)`` when a soft budget the call went past says
    ``downgrade:ROUTE``; ``(None, None)`` otherwise."""
    if meter is None or hold is None or not hold.soft:
        return None, None
    for budget_id in hold.soft:
        budget = meter.gate.budget(budget_id)
        if budget is None or not budget.on_exceed.startswith("downgrade:"):
            continue
        target = budget.on_exceed.partition(":")[2]
        if target in known and target != route:
            return target, budget.scope
    return None, None


def downgrade_target(exc: BudgetExceeded, route: str, known: Container[str]) -> str | None:
    """The route a refused call goes to instead when the budget's policy is
    ``downgrade:ROUTE`` (None: refuse — also when the call is already on that route, or the
    route is not configured, which is logged)."""
    policy = str(exc.details.get("on_exceed") or "")
    if not policy.startswith("downgrade:"):
        return None
    target = policy.partition(":")[2]
    if target not in known:
        budget = exc.details.get("budget")
        logger.warning("budget %s downgrades to unknown route %r", budget, target)
        return None
    return target if target != route else None
