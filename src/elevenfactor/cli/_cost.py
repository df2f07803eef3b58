"""``cost``: the cost report and the price table, as thin wrappers over governance.

``cost report`` acts as a user of the default organisation (``--as USER``, default ``local``,
the built-in administrator): a member sees its own spend, an admin its organisation's.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from elevenfactor.cli._admin import as_option, run_as
from elevenfactor.cli._common import (
    bar,
    config_option,
    console,
    handle_errors,
    json_option,
    print_json,
    print_table,
    project_from,
    run,
    settings_from,
    when,
    with_store,
)
from elevenfactor.governance import (
    BUCKETS,
    DIMENSIONS,
    CostReport,
    PriceBook,
    cost_report,
    parse_filters,
    parse_when,
)
from elevenfactor.governance._cost_rollup import HOUR, read_mark, rebuild, roll_up
from elevenfactor.store import Store

__all__ = ["cost"]

_MONEY = ("cost", "saved")
_SHORT = {
    "tokens_in": "in",
    "tokens_out": "out",
    "tokens_cached": "cached",
    "saved": "saved (cache)",
}


@click.group()
def cost() -> None:
    """Spend: what model calls cost, grouped any way, and the prices they were charged at."""


@cost.command("report")
@click.option(
    "--by",
    default="",
    metavar="DIM[,DIM...]",
    help=f"Group by these dimensions: {', '.join(DIMENSIONS)}.",
)
@click.option("--per", type=click.Choice(BUCKETS), default=None, help="Time buckets (UTC).")
@click.option("--since", default=None, metavar="WHEN", help="From: 7d, 12h, 30m, 2w or ISO.")
@click.option("--until", default=None, metavar="WHEN", help="To (exclusive), as --since.")
@click.option(
    "--where",
    "where",
    multiple=True,
    metavar="DIM=VALUE",
    help="Only calls with this value (repeatable); user, team, key, org: an id or a name.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json"]),
    default="table",
    show_default=True,
)
@json_option
@as_option
@config_option
@handle_errors
def report(
    by: str,
    per: str | None,
    since: str | None,
    until: str | None,
    where: tuple[str, ...],
    fmt: str,
    as_json: bool,
    as_user: str,
    config: Path | None,
) -> None:
    """What model calls cost, grouped by dimensions and time, with cache savings.

    Example: elevenfactor cost report --by user,model --per day --since 7d
    """
    group_by = [d.strip() for d in by.split(",") if d.strip()]
    start = parse_when(since, "--since") if since else None
    end = parse_when(until, "--until") if until else None
    filters = parse_filters(where, "--where")

    async def main(store: Store, principal: Any) -> CostReport:
        return await cost_report(
            store,
            principal,
            group_by=group_by,
            bucket=per,
            since=start,
            until=end,
            filters=filters,
        )

    found = run_as(config, as_user, main)
    if as_json or fmt == "json":
        print_json(found.to_dict())
    elif fmt == "csv":
        click.echo(found.to_csv(), nl=False)
    else:
        _print_report(found)


def _cell(column: str, value: Any) -> str:
    if value is None:
        return ""
    if column in _MONEY:  # whole cents for large sums, six decimals for a few calls' worth
        return f"{value:,.2f}" if value >= 100 else f"{value:.4f}" if value >= 1 else f"{value:.6f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _print_report(found: CostReport) -> None:
    columns = found.columns()
    rows = [[_cell(c, v) for c, v in zip(columns, r, strict=True)] for r in found.table_rows()]
    width = len(columns) - len(found.totals.to_dict())
    total = (["total"] + [""] * (width - 1) if width else []) + [
        _cell(c, v) for c, v in found.totals.to_dict().items()
    ]
    headers = [_SHORT.get(c, c) for c in columns]
    if not console.is_terminal:
        print_table("cost", headers, [*rows, total])
        return
    # Nothing is cut or folded: each column is as wide as its widest value, and a terminal
    # too narrow for the whole table wraps its lines (the table keeps its shape).
    # A bar after the cost column: each row's share of the largest row's cost.
    at = columns.index("cost") + 1
    costs = [r[columns.index("cost")] or 0.0 for r in found.table_rows()]
    top = max(costs, default=0.0) or 1.0
    for row, value in zip(rows, costs, strict=True):
        row.insert(at, bar(value / top))
    total.insert(at, "")
    headers.insert(at, "")
    widths = [max(len(r[i]) for r in [*rows, total, headers]) for i in range(len(headers))]
    table = Table(title="cost report", width=max(sum(widths) + 3 * len(widths) + 1, 20))
    for i, col in enumerate(headers):
        table.add_column(col, justify="left" if i < width or i == at else "right", no_wrap=True)
    for row in rows:
        table.add_row(*row)
    table.add_section()
    table.add_row(*total, style="bold")
    console.print(table, crop=False)
    if found.totals.unpriced:
        console.print(
            f"{found.totals.unpriced} successful call(s) on unpriced deployments are not in"
            " the cost: set `prices:` in elevenfactor.yaml"
        )


@cost.command("prices")
@json_option
@config_option
@handle_errors
def prices(as_json: bool, config: Path | None) -> None:
    """Each deployment's price, where it comes from, and its version."""
    book = PriceBook.from_project(project_from(settings_from(config)))
    rows: list[dict[str, Any]] = []
    for name in book.deployments:
        price = book.price(name)
        row: dict[str, Any] = {"deployment": name, "priced": price is not None}
        if price is not None:
            row |= {**price.fields(), "source": price.source, "version": price.version}
        rows.append(row)
    if as_json:
        print_json(rows)
        return
    keys = ("deployment", "model", "input_per_mtok", "cached_input_per_mtok", "output_per_mtok")
    print_table(
        "prices (per million tokens)",
        [*keys, "per_request", "source", "version"],
        [
            [r.get(k, "unpriced" if k == "input_per_mtok" else "") for k in keys]
            + [r.get("per_request", ""), r.get("source", ""), r.get("version", "")]
            for r in rows
        ],
    )


@cost.command("rollup")
@click.option(
    "--rebuild",
    "rebuild_since",
    default=None,
    metavar="WHEN",
    help="Sum the rolled-up hours from WHEN (7d, 12h, ISO) again from the call records.",
)
@click.option("--until", default=None, metavar="WHEN", help="With --rebuild: up to WHEN.")
@json_option
@config_option
@handle_errors
def rollup(
    rebuild_since: str | None, until: str | None, as_json: bool, config: Path | None
) -> None:
    """Bring the hourly and daily cost rollup up to date now (the housekeeper of `serve` and
    `worker` does it every ELEVENFACTOR_PURGE_INTERVAL seconds), or, with --rebuild, sum hours
    again after call records were imported or arrived more than a day late.

    Example: elevenfactor cost rollup --rebuild 30d
    """
    if until is not None and rebuild_since is None:
        raise click.UsageError("--until goes with --rebuild")
    start = parse_when(rebuild_since, "--rebuild") if rebuild_since else None
    end = parse_when(until, "--until") if until else time.time()

    async def main(store: Store) -> tuple[int, int | None]:
        if start is not None:
            written = await rebuild(store, start, end)
        else:
            written = await roll_up(store, time.time())
        return written, await read_mark(store)

    written, mark = run(with_store(settings_from(config), main))
    through = None if mark is None else (mark + 1) * HOUR
    if as_json:
        print_json({"rows_written": written, "rolled_up_through": through})
        return
    done = "nothing rolled up yet" if through is None else f"rolled up through {when(through)}"
    console.print(f"{written} rollup rows written; {done}")
