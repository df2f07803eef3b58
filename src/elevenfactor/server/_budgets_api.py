"""``/v1/admin/budgets`` and ``/v1/admin/kills`` (admins only), and ``/v1/budgets`` (the budgets
that cover the caller, read-only, for anyone with a key).

As for the other admin endpoints, the role is checked before the request is read, objects of
another organisation are ``404`` as if absent, and every change is a ledger entry under the
authenticated user. Spent and reserved amounts come from the gateway's budget engine (Redis when
``REDIS_URL`` is set), so they are exact.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

from elevenfactor.errors import BudgetUnavailable
from elevenfactor.governance import (
    Budget,
    budget_status,
    budgets_covering,
    delete_budget,
    get_budget,
    list_budgets,
    list_kills,
    set_budget,
    unkill,
    update_budget,
)
from elevenfactor.runtime import kill_and_cancel
from elevenfactor.server._admin_api import admin
from elevenfactor.server._budget_schemas import (
    BudgetCreate,
    BudgetUpdate,
    KillCreate,
    KillLiftQuery,
    KillQuery,
)
from elevenfactor.server._runs_api import _Call, endpoint

__all__ = ["ROUTES"]


def _json(obj: object, status: int = 200) -> Response:
    return Response(orjson.dumps(obj), status_code=status, media_type="application/json")


async def _statuses(call: _Call, budgets: list[Budget]) -> list[dict[str, Any]]:
    """Each budget with its current window, from the gateway's budget engine; if Redis cannot be
    reached, from the store (committed spend only) rather than failing the request. The calls
    this process answered are settled first (their commits run after the response)."""
    meter = call.gw.meter
    usage = meter.gate.usage if meter is not None else None
    if meter is not None:
        await meter.drain()
    try:
        return [(await budget_status(call.store, b, usage=usage)).to_dict() for b in budgets]
    except BudgetUnavailable:
        return [(await budget_status(call.store, b)).to_dict() for b in budgets]


async def _one(call: _Call, budget: Budget, status: int = 200) -> Response:
    return _json((await _statuses(call, [budget]))[0], status)


# -- budgets --------------------------------------------------------------------------------


@admin("listing budgets")
async def index_budgets(call: _Call) -> Response:
    """``GET /v1/admin/budgets``: every budget of the organisation with its current window."""
    found = await list_budgets(call.store, call.principal)
    return _json({"object": "list", "data": await _statuses(call, found)})


@admin("setting a budget")
async def post_budget(call: _Call) -> Response:
    """``POST /v1/admin/budgets``: 201 when created, 200 when it updated the budget of the same
    scope and window."""
    body = await call.body(BudgetCreate)
    budget = await set_budget(
        call.store,
        call.principal,
        body.scope,
        body.limit,
        window=body.window,
        soft=body.soft,
        alerts=body.alerts,
        on_exceed=body.on_exceed,
        webhook=body.webhook,
    )
    return await _one(call, budget, 201 if budget.created_at == budget.updated_at else 200)


@admin("reading a budget")
async def show_budget(call: _Call) -> Response:
    """``GET /v1/admin/budgets/{id}`` (an id, or a scope with one window)."""
    return await _one(call, await get_budget(call.store, call.principal, call.path_id("id")))


@admin("updating a budget")
async def patch_budget(call: _Call) -> Response:
    """``PATCH /v1/admin/budgets/{id}``: only the fields given change."""
    ident = call.path_id("id")
    body = await call.body(BudgetUpdate)
    budget = await update_budget(
        call.store,
        call.principal,
        ident,
        limit=body.limit,
        soft=body.soft,
        alerts=body.alerts,
        on_exceed=body.on_exceed,
        webhook=body.webhook,
        clear_webhook="webhook" in body.model_fields_set and body.webhook is None,
    )
    return await _one(call, budget)


@admin("deleting a budget")
async def remove_budget(call: _Call) -> Response:
    """``DELETE /v1/admin/budgets/{id}``: the deleted budget."""
    budget = await delete_budget(call.store, call.principal, call.path_id("id"))
    return _json(budget.to_dict())


@endpoint
async def my_budgets(call: _Call) -> Response:
    """``GET /v1/budgets``: the budgets covering the caller (its organisation's, team's, own
    and key's), read-only."""
    found = await budgets_covering(call.store, call.principal)
    return _json({"object": "list", "data": await _statuses(call, found)})


# -- kill switches --------------------------------------------------------------------------


@admin("listing kill switches")
async def index_kills(call: _Call) -> Response:
    """``GET /v1/admin/kills``: active switches (``?all=true``: lifted ones too)."""
    q = call.query(KillQuery)
    found = await list_kills(call.store, call.principal, include_lifted=q.all == "true")
    return _json({"object": "list", "data": [k.to_dict() for k in found]})


@admin("pulling a kill switch")
async def post_kill(call: _Call) -> Response:
    """``POST /v1/admin/kills``: stop the scope's new calls at once and cancel its queued and
    running runs (parked runs stay parked); 201, or 200 if the scope was already stopped."""
    body = await call.body(KillCreate)
    result = await kill_and_cancel(call.store, call.principal, body.scope, body.reason)
    for info in result.cancelled:
        if call.gw.worker is not None and info.status == "running":
            call.gw.worker.request_cancel(info.id, f"kill switch: {body.reason}")
    return _json(result.to_dict(), 201 if result.killed.created else 200)


@admin("lifting a kill switch")
async def delete_kill(call: _Call) -> Response:
    """``DELETE /v1/admin/kills/{id}?reason=...``: lift the switch (an id or its scope)."""
    ident = call.path_id("id")
    q = call.query(KillLiftQuery)
    return _json((await unkill(call.store, call.principal, ident, q.reason)).to_dict())


ROUTES: list[tuple[str, Any, list[str]]] = [
    ("/v1/admin/budgets", index_budgets, ["GET"]),
    ("/v1/admin/budgets", post_budget, ["POST"]),
    ("/v1/admin/budgets/{id}", show_budget, ["GET"]),
    ("/v1/admin/budgets/{id}", patch_budget, ["PATCH"]),
    ("/v1/admin/budgets/{id}", remove_budget, ["DELETE"]),
    ("/v1/admin/kills", index_kills, ["GET"]),
    ("/v1/admin/kills", post_kill, ["POST"]),
    ("/v1/admin/kills/{id}", delete_kill, ["DELETE"]),
    ("/v1/budgets", my_budgets, ["GET"]),
]
"""``(path, handler, methods)`` for the Starlette routes."""
