"""``audit``: verify the journal, the ledger and every payload; export signed ledger heads."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from elevenfactor.cli._common import (
    config_option,
    handle_errors,
    json_option,
    print_json,
    run,
    settings_from,
    with_store,
)
from elevenfactor.runtime import verify_run
from elevenfactor.store import Store

__all__ = ["audit"]


@click.group()
def audit() -> None:
    """Verify the tamper-evident journal and ledger."""


@audit.command("verify")
@click.argument("run_ids", nargs=-1)
@config_option
@json_option
@handle_errors
def audit_verify(run_ids: tuple[str, ...], config: Path | None, as_json: bool) -> None:
    """Recompute the hash chain of RUN_IDS (default: every run); report the first broken link."""
    settings = settings_from(config)

    async def main(store: Store) -> list[Any]:
        ids = list(run_ids) or [
            r[0] for r in await store.fetchall("SELECT id FROM runs ORDER BY created_at")
        ]
        reports = []
        with click.progressbar(ids, label="verifying", file=sys.stderr, show_pos=True) as bar:
            for rid in bar:
                reports.append(await verify_run(store, rid))
        return reports

    reports = run(with_store(settings, main))
    broken = [r for r in reports if not r.ok]
    if as_json:
        print_json(
            [
                {
                    "run_id": r.run_id,
                    "ok": r.ok,
                    "events": r.events,
                    "broken_at": r.broken_at,
                    "reason": r.reason,
                }
                for r in reports
            ]
        )
    else:
        click.echo(
            f"{len(reports)} runs, {sum(r.events for r in reports)} events checked; "
            f"{len(broken)} broken"
        )
        for r in broken:
            where = f"event {r.broken_at}" if r.broken_at is not None else "run row"
            click.echo(f"BROKEN run {r.run_id} at {where}: {r.reason}")
    if broken:
        sys.exit(1)
