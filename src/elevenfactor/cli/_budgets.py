"""``budgets``, ``kill``, ``unkill`` and ``kills``: spending limits and kill switches, as thin
wrappers over governance (admins only; every change is recorded in the ledger).

Spent and reserved amounts come from the deployment's budget engine: Redis when ``REDIS_URL``
is set, else the store.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.markup import escape

from elevenfactor.cli._admin import as_option
from elevenfactor.cli._common import (
    bar,
    config_option,
    err_console,
    handle_errors,
    json_option,
    print_json,
    print_table,
    run,
    settings_from,
    when,
    with_store,
)
from elevenfactor.errors import BudgetUnavailable
from elevenfactor.governance import (
    WINDOWS,
    BudgetStatus,
    KillSwitch,
    Principal,
    SpendEngine,
    budget_status,
    delete_budget,
    get_budget,
    list_budgets,
    list_kills,
    open_spend_gate,
    principal_for_user,
    set_budget,
    unkill,
)
from elevenfactor.governance._windows import usd
from elevenfactor.runtime import kill_and_cancel
from elevenfactor.store import Store, require_migrated

__all__ = ["budgets", "kill_cmd", "kills", "unkill_cmd"]

T = TypeVar("T")

window_option = click.option(
    "--window",
    type=click.Choice(WINDOWS),
    default=None,
    help="Which window's budget, when the scope has several.",
)


def _acting(
    config: Path | None, as_user: str, fn: Callable[[Store, Principal, SpendEngine], Awaitable[T]]
) -> T:
    """Open the store and the budget engine, resolve ``as_user``, and run ``fn``."""
    settings = settings_from(config)

    async def main(store: Store) -> T:
        await require_migrated(store)
        principal = await principal_for_user(store, as_user)
        gate = open_spend_gate(settings, store)
        try:
            return await fn(store, principal, gate)
        finally:
            await gate.aclose()

    return run(with_store(settings, main))


async def _status(store: Store, gate: SpendEngine, budgets: list[Any]) -> list[BudgetStatus]:
    """Each budget's current window, from the budget engine (or, if Redis cannot be reached,
    from the store, with a warning)."""
    try:
        return [await budget_status(store, b, usage=gate.usage) for b in budgets]
    except BudgetUnavailable as exc:
        err_console.print(
            f"[yellow]warning[/]: {escape(exc.message)}; showing the store's figures"
            " (committed spend only)",
            highlight=False,
            soft_wrap=True,
        )
        return [await budget_status(store, b) for b in budgets]


def _show(found: list[BudgetStatus], as_json: bool, title: str = "budgets") -> None:
    if as_json:
        print_json([s.to_dict() for s in found])
        return
    print_table(
        title,
        ["scope", "window", "spent", "reserved", "limit", "used", "", "kind", "resets", "id"],
        [
            (
                s.budget.scope,
                s.budget.window,
                usd(s.spent),
                usd(s.reserved),
                usd(s.budget.limit),
                f"{s.used:.0%}",
                bar(s.used),
                ("soft" if s.budget.soft else "hard")
                + ("" if s.budget.on_exceed == "refuse" else f", {s.budget.on_exceed}"),
                when(s.resets_at),
                s.budget.id,
            )
            for s in found
        ],
    )


@click.group()
def budgets() -> None:
    """Set, list, show and delete spending limits (USD per window; admins only)."""


@budgets.command("set")
@click.argument("scope")
@click.option("--limit", "limit", type=float, required=True, help="The limit, in USD (> 0).")
@click.option("--window", type=click.Choice(WINDOWS), default="month", show_default=True)
@click.option("--soft", is_flag=True, help="Let calls through past the limit, but alert.")
@click.option(
    "--alert",
    "alerts",
    type=float,
    multiple=True,
    metavar="FRACTION",
    help="Alert when spend passes this fraction of the limit, e.g. 0.8 (repeatable).",
)
@click.option(
    "--on-exceed",
    default="refuse",
    show_default=True,
    metavar="POLICY",
    help="refuse, downgrade:ROUTE or approve:GROUP.",
)
@click.option("--webhook", default=None, metavar="URL", help="POST alerts here (JSON).")
@as_option
@config_option
@json_option
@handle_errors
def budgets_set(
    scope: str,
    limit: float,
    window: str,
    soft: bool,
    alerts: tuple[float, ...],
    on_exceed: str,
    webhook: str | None,
    as_user: str,
    config: Path | None,
    as_json: bool,
) -> None:
    """Set the budget of SCOPE: org, team:NAME, user:NAME, key:NAME, agent:NAME, model:NAME (a
    route or deployment) or run. Setting it again (same scope and window) updates it."""

    async def go(store: Store, p: Principal, gate: SpendEngine) -> BudgetStatus:
        budget = await set_budget(
            store,
            p,
            scope,
            limit,
            window=window,
            soft=soft,
            alerts=alerts,
            on_exceed=on_exceed,
            webhook=webhook,
        )
        return (await _status(store, gate, [budget]))[0]

    status = _acting(config, as_user, go)
    if as_json:
        print_json(status.to_dict())
        return
    b = status.budget
    click.echo(f"budget {b.scope} ({b.window}): {usd(b.limit)}, {'soft' if b.soft else 'hard'}")


@budgets.command("list")
@as_option
@config_option
@json_option
@handle_errors
def budgets_list(as_user: str, config: Path | None, as_json: bool) -> None:
    """List the organisation's budgets with what each window has spent and holds."""

    async def go(store: Store, p: Principal, gate: SpendEngine) -> list[BudgetStatus]:
        return await _status(store, gate, await list_budgets(store, p))

    _show(_acting(config, as_user, go), as_json)


@budgets.command("show")
@click.argument("ident", metavar="ID|SCOPE")
@window_option
@as_option
@config_option
@json_option
@handle_errors
def budgets_show(
    ident: str, window: str | None, as_user: str, config: Path | None, as_json: bool
) -> None:
    """Show one budget and its current window."""

    async def go(store: Store, p: Principal, gate: SpendEngine) -> BudgetStatus:
        budget = await get_budget(store, p, ident, window=window)
        return (await _status(store, gate, [budget]))[0]

    status = _acting(config, as_user, go)
    if as_json:
        print_json(status.to_dict())
        return
    _show([status], False, title=f"budget {status.budget.scope}")


@budgets.command("delete")
@click.argument("ident", metavar="ID|SCOPE")
@window_option
@as_option
@config_option
@handle_errors
def budgets_delete(ident: str, window: str | None, as_user: str, config: Path | None) -> None:
    """Delete a budget (calls stop being limited by it at once on this machine, within a
    second elsewhere)."""

    async def go(store: Store, p: Principal, gate: SpendEngine) -> Any:
        return await delete_budget(store, p, ident, window=window)

    budget = _acting(config, as_user, go)
    click.echo(f"deleted budget {budget.scope} ({budget.window}, {budget.id})")


# -- kill switches --------------------------------------------------------------------------


def _show_kills(found: list[KillSwitch], as_json: bool) -> None:
    if as_json:
        print_json([k.to_dict() for k in found])
        return
    print_table(
        "kill switches",
        ["scope", "reason", "by", "at", "status", "id"],
        [
            (
                k.scope,
                k.reason,
                k.created_by,
                when(k.created_at),
                "active" if k.active else f"lifted by {k.lifted_by} {when(k.lifted_at)}",
                k.id,
            )
            for k in found
        ],
    )


@click.command("kill")
@click.argument("scope")
@click.option("--reason", required=True, help="Why (recorded with the switch and the ledger).")
@as_option
@config_option
@json_option
@handle_errors
def kill_cmd(scope: str, reason: str, as_user: str, config: Path | None, as_json: bool) -> None:
    """Stop every new model call of SCOPE at once: key:NAME, user:NAME, team:NAME, agent:NAME
    or run:ID; queued and running runs it covers are cancelled (parked runs stay parked).
    Undo with `elevenfactor unkill`."""

    async def go(store: Store, p: Principal, gate: SpendEngine) -> dict[str, Any]:
        return (await kill_and_cancel(store, p, scope, reason)).to_dict()

    out = _acting(config, as_user, go)
    if as_json:
        print_json(out)
        return
    click.echo(f"killed {out['scope']} ({out['id']}); runs cancelled: {len(out['runs'])}")


@click.command("unkill")
@click.argument("ident", metavar="SCOPE|ID")
@click.option("--reason", required=True, help="Why (recorded with the switch and the ledger).")
@as_option
@config_option
@json_option
@handle_errors
def unkill_cmd(ident: str, reason: str, as_user: str, config: Path | None, as_json: bool) -> None:
    """Lift the kill switch of SCOPE (or with id ID)."""

    async def go(store: Store, p: Principal, gate: SpendEngine) -> KillSwitch:
        return await unkill(store, p, ident, reason)

    switch = _acting(config, as_user, go)
    if as_json:
        print_json(switch.to_dict())
        return
    click.echo(f"lifted {switch.scope} ({switch.id})")


@click.command("kills")
@click.option("--all", "include_lifted", is_flag=True, help="Lifted switches too.")
@as_option
@config_option
@json_option
@handle_errors
def kills(include_lifted: bool, as_user: str, config: Path | None, as_json: bool) -> None:
    """List the organisation's kill switches (active ones unless --all)."""

    async def go(store: Store, p: Principal, gate: SpendEngine) -> list[KillSwitch]:
        return await list_kills(store, p, include_lifted=include_lifted)

    _show_kills(_acting(config, as_user, go), as_json)
