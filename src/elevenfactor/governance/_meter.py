"""``Meter``: kill switches and budgets around one model call, for the gateway and for agents.

Before a call: refuse it if a kill switch covers the caller; if any budget applies, estimate its
worst-case cost (a guaranteed upper bound on the prompt's tokens plus the output cap, at the
highest price among the deployments the route may reach) and hold that amount against every
budget at once. After the call: commit the real cost (the rest of the hold is released), or
release the hold when the call failed before costing anything. When no budget applies nothing
is estimated and nothing is written: the hot path costs a few dictionary lookups.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from elevenfactor.errors import CallKilled
from elevenfactor.governance._gate_open import SpendEngine, open_spend_gate
from elevenfactor.governance._pricing import (
    PriceBook,
    estimate_prompt_tokens,
    price_book,
    store_prices,
)
from elevenfactor.governance._principal import Principal
from elevenfactor.governance._spend import Charge, Hold

if TYPE_CHECKING:
    from elevenfactor.config import ProjectConfig, Settings
    from elevenfactor.models import Message, ModelSettings
    from elevenfactor.store import Store

__all__ = ["Meter", "open_meter", "reachable"]

logger = logging.getLogger("elevenfactor.budgets")


def reachable(project: ProjectConfig, name: str) -> tuple[str, ...]:
    """Every deployment a request for ``name`` (a route or a deployment) may end up on: chain
    members, weighted targets, tag-rule targets and escalation routes, recursively."""
    out: list[str] = []
    seen: set[str] = set()
    todo = [name]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        if current in project.models:
            out.append(current)
            continue
        route = project.routes.get(current)
        if route is None:
            continue
        todo.extend(route.chain or [])
        todo.extend(t.model for t in route.weights or [])
        todo.extend(r.use for r in route.rules)
        escalate = getattr(route, "escalate_to", None)
        if isinstance(escalate, str):
            todo.append(escalate)
    return tuple(sorted(out))


class Meter:
    """Checks, reserves and settles the spend of model calls through a ``SpendGate``."""

    def __init__(
        self,
        gate: SpendEngine,
        prices: PriceBook,
        project: ProjectConfig,
        hold_ttl: float = 300.0,
        sweep_interval: float = 5.0,
    ) -> None:
        self.gate = gate
        self.prices = prices
        self.project = project
        self.hold_ttl = hold_ttl
        self.sweep_interval = sweep_interval
        self._reach: dict[str, tuple[str, ...]] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._inflight: dict[str, tuple[Charge, asyncio.Task[object]]] = {}
        self._killed: dict[str, CallKilled] = {}
        self._settling: set[asyncio.Task[None]] = set()
        self.kill_interval = 1.0

    def start(self) -> None:
        """Release expired holds (of processes that died) every ``sweep_interval`` seconds, so
        reports show them released even when no call touches their budgets."""
        if self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep(), name="budget-sweeper")
        if self._watcher is None:
            self._watcher = asyncio.create_task(self._watch(), name="kill-watcher")

    # -- kill switches on calls in flight ---------------------------------------------------

    def track(self, call_id: str, charge: Charge) -> None:
        """Watch the call ``call_id`` running in the current task: if a kill switch covering
        ``charge`` is pulled while it runs, the task is cancelled within ``kill_interval``
        seconds and ``untrack`` returns the ``CallKilled`` error to answer with."""
        task = asyncio.current_task()
        if task is not None:
            self._inflight[call_id] = (charge, task)

    def untrack(self, call_id: str) -> CallKilled | None:
        """Stop watching ``call_id``; the kill that cancelled it, if one did."""
        self._inflight.pop(call_id, None)
        return self._killed.pop(call_id, None)

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.kill_interval)
            for call_id, (charge, task) in list(self._inflight.items()):
                if task.done():  # ended without settling (its response never started): the
                    self._inflight.pop(call_id, None)  # hold, if any, expires on its own
                    continue
                try:
                    await self.gate.check(charge)
                except CallKilled as exc:
                    if self._inflight.pop(call_id, None) is not None:
                        self._killed[call_id] = exc
                        task.cancel(f"killed: {exc.message}")
                except Exception:  # the backend is down: reservations fail closed meanwhile
                    logger.warning("checking kill switches failed", exc_info=True)
                    break

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_interval)
            try:
                released = await self.gate.expire_holds()
            except Exception:  # the backend may be down; calls fail closed meanwhile
                logger.warning("releasing expired budget holds failed", exc_info=True)
                continue
            if released:
                logger.info("released %d expired budget holds", released)

    async def aclose(self) -> None:
        """Finish the settlements under way (``drain``), stop the sweeper, close the gate."""
        await self.drain()
        for task in (self._sweeper, self._watcher):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._sweeper = self._watcher = None
        await self.gate.aclose()

    def deployments(self, route: str) -> tuple[str, ...]:
        """``reachable`` for ``route``, cached."""
        found = self._reach.get(route)
        if found is None:
            found = self._reach[route] = reachable(self.project, route)
        return found

    def charge(
        self,
        principal: Principal | None,
        route: str,
        *,
        org_id: str | None = None,
        agent: str | None = None,
        run_id: str | None = None,
        tags: Sequence[str] = (),
    ) -> Charge:
        """The charge of a call by ``principal`` (or, with no principal, by ``org_id``)."""
        return Charge(
            org_id=principal.org_id if principal is not None else (org_id or ""),
            team_id=principal.team_id if principal is not None else None,
            user_id=principal.user_id if principal is not None else None,
            key_id=principal.key_id if principal is not None else None,
            agent=agent,
            run_id=run_id,
            route=route,
            models=self.deployments(route),
            tags=tuple(tags),
        )

    async def reserve(
        self,
        hold_id: str,
        charge: Charge,
        messages: Sequence[Message],
        settings: ModelSettings,
        force: bool = False,
    ) -> Hold:
        """Refuse a killed caller (``CallKilled``); hold the worst case against the budgets that
        apply (``BudgetExceeded`` when one cannot cover it; with ``force`` the call goes through
        once past hard limits). An empty hold when none applies."""
        await self.gate.check(charge)
        if not self.gate.covered(charge):
            return Hold(hold_id, 0.0)
        return await self.hold(hold_id, charge, messages, settings, force)

    async def hold(
        self,
        hold_id: str,
        charge: Charge,
        messages: Sequence[Message],
        settings: ModelSettings,
        force: bool = False,
        *,
        pooled: bool = False,
    ) -> Hold:
        """``reserve`` without its kill-switch check and coverage test, for a caller that has
        just made both (the gateway's admission, which passes ``pooled``: its hold ids are
        never retried, so the gate may serve them from a lease)."""
        amount = self.prices.worst_case(
            charge.models, estimate_prompt_tokens(messages, settings), settings.max_tokens
        )
        return await self.gate.reserve(hold_id, charge, amount, self.hold_ttl, force, pooled=pooled)

    async def settle(self, hold: Hold, cost: float | None) -> None:
        """Commit ``cost`` (release everything when it is None: nothing was spent)."""
        if hold.empty:
            return
        if cost is None:
            await self.gate.release(hold)
        else:
            await self.gate.commit(hold, cost)

    def settle_later(self, hold: Hold, cost: float | None) -> None:
        """``settle`` in the background, off the caller's path (the gateway answers without
        waiting for the commit). The hold stays in place until then, so no budget can be
        overshot meanwhile; ``drain`` waits for these, and ``aclose`` drains. A settlement that
        fails is logged and its hold expires (``hold_ttl``)."""
        if hold.empty:
            return
        task = asyncio.create_task(self._settle_logged(hold, cost))
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    async def _settle_logged(self, hold: Hold, cost: float | None) -> None:
        try:
            await self.settle(hold, cost)
        except Exception:
            logger.exception("settling budget hold %s failed; it will expire", hold.id)

    async def drain(self) -> None:
        """Wait for the settlements ``settle_later`` started in this process."""
        while self._settling:
            await asyncio.gather(*list(self._settling), return_exceptions=True)


async def open_meter(settings: Settings, project: ProjectConfig, store: Store) -> Meter:
    """The meter a server or worker runs: the project's prices (every version recorded in the
    store, so old records keep the price they were charged at) and the spend gate the
    settings call for (Redis when ``REDIS_URL`` is set, else the store). Call ``start`` on
    the serving loop and ``aclose`` at shutdown."""
    prices = price_book(project)
    await store_prices(store, prices)
    return Meter(open_spend_gate(settings, store), prices, project, settings.hold_ttl)
