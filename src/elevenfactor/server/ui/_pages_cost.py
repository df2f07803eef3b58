"""``/ui/cost``: spend over time by any dimension, budgets with their burn and reservations,
and kill switches — which admins engage and release here, as ``POST /v1/admin/kills`` and
``DELETE /v1/admin/kills/{id}`` do (the same library calls, so the same ledger entries and
the same cancellation of the runs a switch covers).

What a page shows is scoped in its queries (``_cost_view``): a member sees its own spend, the
budgets covering it and the switches that stop its calls, read-only; the forms answer it 403.
"""

from __future__ import annotations

from starlette.responses import Response

from elevenfactor.governance import check_id, unkill
from elevenfactor.runtime import kill_and_cancel
from elevenfactor.server._schemas import parse_query
from elevenfactor.server.ui._cost_view import (
    DIMENSIONS,
    METRICS,
    CostPageQuery,
    KillForm,
    ReleaseForm,
    budget_rows,
    spend_view,
    visible_kills,
)
from elevenfactor.server.ui._page import Page, ui_page
from elevenfactor.server.ui._ranges import RANGE_LABELS, resolve_range

__all__ = ["ROUTES"]

_NOTICES = {
    "engaged": "Kill switch engaged: new calls of that scope are refused, its queued and"
    " running runs cancelled.",
    "unchanged": "That scope was already stopped: its switch is unchanged.",
    "released": "Kill switch released: calls of that scope go through again.",
}


@ui_page("cost")
async def cost_page(page: Page) -> Response:
    """``GET /ui/cost``: the spend chart and totals, the budgets and the kill switches."""
    q = parse_query(CostPageQuery, page.request.query_params.multi_items())
    span = resolve_range(q)
    principal = page.user.principal
    spend = await spend_view(page.store, principal, q, span)
    budgets = await budget_rows(page.gw, page.store, principal)
    kills = await visible_kills(page.store, principal)
    return page.render(
        "cost.html",
        q=q,
        span=span,
        spend=spend,
        budgets=budgets,
        kills=kills,
        admin=principal.is_admin or principal.unscoped,
        dimensions=DIMENSIONS,
        metrics=METRICS,
        ranges=RANGE_LABELS,
        notice=_NOTICES.get(q.notice or ""),
    )


@ui_page("cost")
async def engage_kill(page: Page) -> Response:
    """``POST /ui/cost/kills``: stop every new call of a key, user, team, agent or run, and
    cancel its queued and running runs (parked runs stay parked)."""
    fields = await page.form_lists()
    principal = page.user.principal
    principal.require_admin("pulling a kill switch")
    form = parse_query(KillForm, fields)
    reason = form.reason.strip()
    result = await kill_and_cancel(page.store, principal, f"{form.kind}:{form.target}", reason)
    worker = page.gw.worker
    for info in result.cancelled:
        if worker is not None and info.status == "running":
            worker.request_cancel(info.id, f"kill switch: {reason}")
    notice = "engaged" if result.killed.created else "unchanged"
    return page.redirect(f"/ui/cost?notice={notice}#kill-switches")


@ui_page("cost")
async def release_kill(page: Page) -> Response:
    """``POST /ui/cost/kills/{id}/release``: lift a kill switch, with a reason."""
    fields = await page.form_lists()
    principal = page.user.principal
    principal.require_admin("lifting a kill switch")
    ident = check_id(page.request.path_params["id"], "id")
    form = parse_query(ReleaseForm, fields)
    await unkill(page.store, principal, ident, form.reason.strip())
    return page.redirect("/ui/cost?notice=released#kill-switches")


ROUTES: list[tuple[str, object, list[str]]] = [
    ("/ui/cost", cost_page, ["GET"]),
    ("/ui/cost/kills", engage_kill, ["POST"]),
    ("/ui/cost/kills/{id}/release", release_kill, ["POST"]),
]
