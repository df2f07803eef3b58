"""The budgets and kill switches a gate matches calls against, cached in process.

Both gates (the store's and Redis') read definitions from the store, at most every ``refresh``
seconds and at once after a change made through this process (``_budgets.changed``). They are
indexed by ``(organisation, kind, target)``, so matching a call is a handful of dict lookups and
a call no budget covers costs no I/O at all: the gateway's hot path.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from collections.abc import Iterator

from elevenfactor.errors import BudgetExceeded, BudgetUnavailable, CallKilled
from elevenfactor.governance._budgets import BUDGET_COLUMNS, Budget, budget_from_row, generation
from elevenfactor.governance._kills import KILL_COLUMNS, KillSwitch, kill_from_row
from elevenfactor.governance._spend import Charge
from elevenfactor.governance._windows import iso, resets_at, usd, window_key
from elevenfactor.store import Store

__all__ = ["EPSILON", "Definitions", "check_money", "exceeded", "plan"]

EPSILON = 1e-9
"""Slack in limit checks, so float rounding never refuses a call that fits exactly."""

_Index = dict[str, dict[tuple[str, str], list[Budget]]]


class Definitions:
    """Budgets and active kill switches of every organisation, refreshed lazily."""

    def __init__(self, store: Store, *, refresh: float = 1.0) -> None:
        self.store = store
        self.refresh = refresh
        self._budgets: _Index = {}
        self._by_id: dict[str, Budget] = {}
        self._kills: dict[str, dict[tuple[str, str], KillSwitch]] = {}
        self._loaded_at = -float("inf")
        self._generation = -1
        self._lock: asyncio.Lock | None = None

    def fresh(self) -> bool:
        """Loaded less than ``refresh`` seconds ago, and nothing changed here since."""
        return (
            self._generation == generation() and time.monotonic() - self._loaded_at < self.refresh
        )

    async def ensure(self) -> None:
        """Reload if stale (one load at a time; the others wait for it)."""
        if self.fresh():
            return
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if not self.fresh():
                await self.load()

    async def load(self) -> None:
        """Read every budget and active kill switch."""
        gen = generation()
        try:
            brows = await self.store.fetchall(f"SELECT {BUDGET_COLUMNS} FROM budgets")
            krows = await self.store.fetchall(
                f"SELECT {KILL_COLUMNS} FROM kill_switches WHERE lifted_at IS NULL"
            )
        except Exception as exc:
            raise BudgetUnavailable(
                f"cannot read budgets and kill switches from the store: {exc}",
                hint="check that the database is reachable and migrated",
            ) from exc
        budgets: _Index = {}
        by_id: dict[str, Budget] = {}
        for row in brows:
            b = budget_from_row(row)
            budgets.setdefault(b.org_id, {}).setdefault((b.kind, b.target), []).append(b)
            by_id[b.id] = b
        kills: dict[str, dict[tuple[str, str], KillSwitch]] = {}
        for row in krows:
            k = kill_from_row(row)
            kills.setdefault(k.org_id, {})[(k.kind, k.target)] = k
        self._budgets, self._by_id, self._kills = budgets, by_id, kills
        self._generation = gen
        self._loaded_at = time.monotonic()

    def budget(self, budget_id: str) -> Budget | None:
        """The budget with this id, if it still exists."""
        return self._by_id.get(budget_id)

    def budgets(self, charge: Charge) -> list[Budget]:
        """Every budget that applies to ``charge`` (call ``ensure`` first)."""
        index = self._budgets.get(charge.org_id)
        if not index:
            return []
        found: dict[str, Budget] = {}
        for key in _keys(charge):
            for b in index.get(key, ()):
                found[b.id] = b
        return list(found.values())

    def covered(self, charge: Charge) -> bool:
        """Whether a budget may apply to ``charge``, without I/O: True while the cache is stale
        (the caller reserves, which refreshes it)."""
        if not self.fresh():
            return True
        index = self._budgets.get(charge.org_id)
        if not index:
            return False
        return any(k in index for k in _keys(charge))

    def check(self, charge: Charge) -> None:
        """Raise ``CallKilled`` if an active switch covers ``charge`` (call ``ensure`` first)."""
        index = self._kills.get(charge.org_id)
        if not index:
            return
        for kind, target in (
            ("key", charge.key_id),
            ("user", charge.user_id),
            ("team", charge.team_id),
            ("agent", charge.agent),
            ("run", charge.run_id),
        ):
            if target is None:
                continue
            switch = index.get((kind, target))
            if switch is not None:
                raise CallKilled(
                    f"calls are stopped: {switch.describe()}",
                    hint=f"an admin lifts it with `elevenfactor unkill {switch.id} --reason ...`",
                    kill_switch=switch.id,
                    scope=switch.scope,
                    created_by=switch.created_by,
                    created_at=switch.created_at,
                    reason=switch.reason,
                )


def _keys(charge: Charge) -> Iterator[tuple[str, str]]:
    yield ("org", "")
    if charge.team_id is not None:
        yield ("team", charge.team_id)
    if charge.user_id is not None:
        yield ("user", charge.user_id)
    if charge.key_id is not None:
        yield ("key", charge.key_id)
    if charge.agent is not None:
        yield ("agent", charge.agent)
    if charge.run_id is not None:
        yield ("run", "")
    if charge.route is not None:
        yield ("model", charge.route)
    for model in charge.models:
        yield ("model", model)


def plan(budgets: list[Budget], charge: Charge, at: float) -> list[tuple[Budget, str]]:
    """``(budget, window key)`` for each budget a charge at ``at`` is held against, in a fixed
    order (by budget id, then window), the order rows are locked in so two holds never
    deadlock. Run-window budgets are skipped outside a run."""
    out = []
    for b in budgets:
        key = window_key(b.window, at, charge.run_id)
        if key is not None:
            out.append((b, key))
    out.sort(key=lambda p: (p[0].id, p[1]))
    return out


def exceeded(
    budget: Budget, key: str, spent: float, reserved: float, amount: float
) -> BudgetExceeded:
    """The error for a hard budget that cannot cover ``amount``."""
    reset = resets_at(key)
    when = f"; it resets at {iso(reset)}" if reset is not None else ""
    if budget.window == "total":
        when = "; it does not reset"
    elif budget.window == "run":
        when = "; it covers this run"
    raise_hint = (
        f"raise it with `elevenfactor budgets set {budget.scope} --limit USD"
        f" --window {budget.window}`"
    )
    return BudgetExceeded(
        f"budget {budget.scope} ({budget.window}) cannot cover this call: limit"
        f" {usd(budget.limit)}, spent {usd(spent)}, reserved {usd(reserved)}, this call needs"
        f" up to {usd(amount)}{when}",
        hint=raise_hint + (", or wait for the reset" if reset is not None else ""),
        budget=budget.scope,
        budget_id=budget.id,
        limit=budget.limit,
        spent=spent,
        reserved=reserved,
        requested=amount,
        window=budget.window,
        resets_at=reset,
        on_exceed=budget.on_exceed,
    )


def check_money(value: float, what: str) -> float:
    """A finite amount >= 0 (NaN would pass every limit check)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{what} must be a number of USD; got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{what} must be a finite amount of USD >= 0; got {value!r}")
    return float(value)


class CachedGate:
    """What both gates share: kill switches and budget matching from the cached
    ``Definitions`` (``self.defs``), and the checks before a reservation touches a backend."""

    defs: Definitions

    async def check(self, charge: Charge) -> None:
        """Raise ``CallKilled`` if a kill switch covers ``charge``."""
        if not self.defs.fresh():
            await self.defs.ensure()
        self.defs.check(charge)

    def covered(self, charge: Charge) -> bool:
        """Whether a budget may apply to ``charge`` (no I/O; True while the cache is stale)."""
        return self.defs.covered(charge)

    def budget(self, budget_id: str) -> Budget | None:
        """The cached definition of a budget (its scope and ``on_exceed`` policy)."""
        return self.defs.budget(budget_id)

    async def targets(
        self, charge: Charge, amount: float, ttl: float, force: bool = False
    ) -> tuple[float, list[tuple[Budget, str]]]:
        """``(now, [(budget, window key), ...])``: the windows a reservation of ``amount``
        for ``charge`` must be held in (empty: no budget applies, nothing to write). With
        ``force`` every budget counts as soft: the call goes through once, past hard limits."""
        check_money(amount, "amount")
        if not self.defs.fresh():
            await self.defs.ensure()
        budgets = self.defs.budgets(charge)
        if not budgets:
            return 0.0, []
        at = time.time()
        found = plan(budgets, charge, at)
        if found and not (ttl > 0 and math.isfinite(ttl)):
            raise ValueError(f"ttl must be a finite number of seconds > 0; got {ttl!r}")
        if force:
            found = [(dataclasses.replace(b, soft=True), k) for b, k in found]
        return at, found
