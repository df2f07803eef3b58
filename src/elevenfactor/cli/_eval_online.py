"""``eval online``: how online evaluation scores trend, per rule and scorer and per time bucket
(thin over ``elevenfactor.evals._online_summary``).

Acts as a user of the default organisation (``--as USER``, default ``local``, the built-in
administrator): a member sees its own runs' scores, an admin its organisation's.
"""

from __future__ import annotations

from pathlib import Path

import click

from elevenfactor.cli._admin import as_option, run_as
from elevenfactor.cli._common import (
    config_option,
    handle_errors,
    json_option,
    print_json,
    print_table,
)
from elevenfactor.evals._online_summary import OnlineRow, OnlineSummary, online_summary
from elevenfactor.governance import BUCKETS, parse_when

__all__ = ["online"]


def _pct(value: float | None) -> str:
    return "" if value is None else f"{value * 100:.1f}%"


def _mean(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def _cells(r: OnlineRow) -> list[object]:
    return [
        r.rule, r.scorer, r.runs, r.passed, r.failed, r.errors, _pct(r.pass_rate),
        _mean(r.mean_score),
    ]  # fmt: skip


_COLUMNS = ["rule", "scorer", "runs", "passed", "failed", "errors", "pass rate", "mean score"]


@click.command("online")
@click.option("--rule", default=None, help="Only this online rule.")
@click.option(
    "--per",
    type=click.Choice([*BUCKETS, "none"]),
    default="day",
    show_default=True,
    help="Time buckets (UTC); none: totals only.",
)
@click.option(
    "--since", default="7d", show_default=True, metavar="WHEN", help="From: 7d, 12h, 2w or ISO."
)
@click.option("--until", default=None, metavar="WHEN", help="To (exclusive), as --since.")
@as_option
@config_option
@json_option
@handle_errors
def online(
    rule: str | None,
    per: str,
    since: str,
    until: str | None,
    as_user: str,
    config: Path | None,
    as_json: bool,
) -> None:
    """Online evaluation scores per rule and scorer: runs scored, pass rate, mean score."""
    start = parse_when(since, "since")
    end = parse_when(until, "until") if until else None
    bucket = None if per == "none" else per
    summary: OnlineSummary = run_as(
        config,
        as_user,
        lambda s, p: online_summary(s, p, rule=rule, since=start, until=end, bucket=bucket),
    )
    if as_json:
        print_json(summary.to_dict())
        return
    if bucket is not None:
        print_table(
            f"online evaluation per {bucket}",
            [bucket, *_COLUMNS],
            [[r.bucket, *_cells(r)] for r in summary.data],
        )
    print_table("online evaluation, whole range", _COLUMNS, [_cells(r) for r in summary.totals])
    if not summary.totals:
        click.echo("no online scores in this range (is `evals.online` set in the project?)")
