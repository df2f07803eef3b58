"""``retention show|apply``: the project's retention periods, and purges that erase content past
them while keeping every hash (thin over ``elevenfactor.governance._retention``); ``runs
export``: a run as a portable bundle (thin over ``elevenfactor.runtime._bundle``)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import cast

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

from elevenfactor.cli._admin import as_option, run_as
from elevenfactor.cli._common import (
    config_option,
    console,
    err_console,
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
from elevenfactor.config import RetentionConfig, RetentionRule
from elevenfactor.config._retention import RETENTION_KINDS
from elevenfactor.governance import local_admin
from elevenfactor.governance._cost_args import parse_when
from elevenfactor.governance._retention import RetentionResult, apply_retention, candidates
from elevenfactor.runtime._bundle import Redact, export_bundle
from elevenfactor.store import Store, require_migrated

__all__ = ["retention", "runs_export"]


@click.group()
def retention() -> None:
    """Erase run evidence past its retention period; hashes stay, so audits still verify."""


def _rules(cfg: RetentionConfig) -> list[tuple[str, ...]]:
    def cells(name: str, rule: RetentionRule, unset: str = "(inherits)") -> tuple[str, ...]:
        out = [name]
        for kind in RETENTION_KINDS:
            value = getattr(rule, kind)
            is_set = rule.period(kind)[0]
            out.append(unset if not is_set else "forever" if value is None else str(value))
        return tuple(out)

    rows = [cells("default", cfg.default, "forever")]
    rows += [cells(f"program {n}", r) for n, r in cfg.programs.items()]
    rows += [cells(f"tag {n}", r) for n, r in cfg.tags.items()]
    return rows


def _print_result(result: RetentionResult, title: str) -> None:
    print_table(
        title, ["what", "payloads"], [(k.replace("_", " "), v) for k, v in result.counts().items()]
    )
    span = (
        f" written {when(result.oldest)} .. {when(result.newest)}"
        if result.oldest is not None
        else ""
    )
    verb = "would erase" if result.dry_run else "erased"
    console.print(
        f"{verb} {result.erased} payloads of {result.runs} runs{span}"
        + (
            ""
            if result.dry_run
            else f"; {result.blobs_deleted} blobs deleted; ledger entries"
            f" {', '.join(map(str, result.ledger_entries)) or 'none'}"
        )
    )


@retention.command("show")
@config_option
@json_option
@handle_errors
def retention_show(config: Path | None, as_json: bool) -> None:
    """Print the retention periods and what a purge now would erase (a dry run)."""
    settings = settings_from(config)
    cfg = project_from(settings).retention

    async def main(store: Store) -> RetentionResult:
        await require_migrated(store)
        return await apply_retention(store, cfg, dry_run=True)

    result = run(with_store(settings, main))
    if as_json:
        print_json({"policy": cfg.model_dump(mode="json"), "due": result.to_dict()})
        return
    print_table("retention periods", ["rule", *RETENTION_KINDS], _rules(cfg))
    if not cfg.configured:
        console.print("no period is set: content is kept forever (set `retention:` to purge)")
        return
    _print_result(result, "due now")


@retention.command("apply")
@click.option("--dry-run", is_flag=True, help="Count what would be erased; change nothing.")
@click.option(
    "--before",
    default=None,
    metavar="WHEN",
    help="Only content older than this too (ISO date, epoch seconds, or 30d/12h back);"
    " never more than the policy allows.",
)
@config_option
@json_option
@handle_errors
def retention_apply(dry_run: bool, before: str | None, config: Path | None, as_json: bool) -> None:
    """Erase the content past its period: payload bytes go, hashes stay, and each chunk of the
    purge is one ledger entry. `audit verify` still passes afterwards."""
    settings = settings_from(config)
    cfg = project_from(settings).retention
    now = time.time()
    bound = parse_when(before, "before", now) if before is not None else None

    async def main(store: Store) -> RetentionResult:
        await require_migrated(store)
        total = await candidates(store, cfg, now)
        with Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=err_console,
            transient=True,
            disable=as_json or not sys.stderr.isatty(),
        ) as bar:
            task = bar.add_task("purging" if not dry_run else "counting", total=total)
            return await apply_retention(
                store,
                cfg,
                now=now,
                before=bound,
                dry_run=dry_run,
                actor=local_admin("cli").actor(),
                progress=lambda n: bar.advance(task, n),
            )

    result = run(with_store(settings, main))
    if as_json:
        print_json(result.to_dict())
        return
    if not cfg.configured:
        console.print("no period is set under `retention:`: nothing to erase")
        return
    _print_result(result, "dry run" if dry_run else "erased")


@click.command("export")
@click.argument("run_id")
@click.option(
    "--out",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Write the bundle here (default: RUN_ID.bundle.json in the current folder).",
)
@click.option(
    "--redact",
    type=click.Choice(["auto", "always", "never"]),
    default="auto",
    show_default=True,
    help="Mask personal data and secrets in payloads: auto = when a guard policy applied.",
)
@as_option
@config_option
@handle_errors
def runs_export(
    run_id: str, out: Path | None, redact: str, as_user: str, config: Path | None
) -> None:
    """Write a self-contained bundle of a run (journal, payloads, approvals, ledger entries
    with Merkle proofs, block headers) that `audit verify --bundle` checks with no database."""
    key = settings_from(config).ledger_signing_key
    mode = cast("Redact", redact)
    data = run_as(
        config, as_user, lambda s, p: export_bundle(s, run_id, p, redact=mode, signing_key=key)
    )
    target = out or Path(f"{run_id}.bundle.json")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    click.echo(
        f"wrote {target} ({len(data):,} bytes); check it with"
        f" `elevenfactor audit verify --bundle {target}`"
    )
