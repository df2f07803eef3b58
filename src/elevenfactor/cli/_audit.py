"""``audit``: verify the journal, the ledger and every payload; seal; export signed heads."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

from elevenfactor.cli._common import (
    config_option,
    console,
    err_console,
    handle_errors,
    json_option,
    print_json,
    print_table,
    run,
    settings_from,
    with_store,
)
from elevenfactor.errors import ConfigError, RequestError
from elevenfactor.governance import (
    SignedHead,
    export_head,
    generate_keypair,
    seal,
    verify_head,
    write_head,
)
from elevenfactor.runtime import AuditReport, verify_one_run
from elevenfactor.runtime import audit as audit_store
from elevenfactor.store import Store, require_migrated

__all__ = ["audit"]


@click.group()
def audit() -> None:
    """Verify the tamper-evident journal and ledger; seal and sign ledger heads."""


def _print(report: AuditReport) -> None:
    rate = report.events / report.seconds if report.seconds > 0 else 0.0
    head = f"block {report.head.n}" if report.head else "no blocks yet"
    console.print(
        f"checked {report.runs} runs, {report.events} events, {report.payloads} payloads,"
        f" {report.approvals} approvals, {report.calls} call records and"
        f" {report.ledger_entries} ledger entries in {report.blocks} blocks ({head})"
        f" in {report.seconds:.2f}s ({rate:,.0f} events/s)"
    )
    if report.unsealed:
        console.print(f"{report.unsealed} ledger entries are not sealed yet (checked one by one)")
    if report.ok:
        console.print("[green]ok[/]: nothing was changed, removed or added")
        return
    print_table(
        f"{len(report.findings)} findings",
        ["kind", "object", "where", "what"],
        [(f.kind, f.subject, f.where or "", f.message) for f in report.findings],
    )


@audit.command("verify")
@click.argument("run_ids", nargs=-1)
@click.option(
    "--against",
    "against",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    default=None,
    help="A signed head file: prove nothing before it was rewritten.",
)
@click.option(
    "--public-key",
    default=None,
    help="Trusted Ed25519 public key (base64) for --against; default"
    " ELEVENFACTOR_LEDGER_VERIFY_KEY.",
)
@click.option("--no-seal", is_flag=True, help="Do not seal pending ledger entries first.")
@click.option(
    "--bundle",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Check a run bundle (`runs export`) instead, with no database and no config.",
)
@config_option
@json_option
@handle_errors
def audit_verify(
    run_ids: tuple[str, ...],
    against: Path | None,
    public_key: str | None,
    no_seal: bool,
    bundle: Path | None,
    config: Path | None,
    as_json: bool,
) -> None:
    """Check the ledger, every run (or RUN_IDS), approval and call record, re-hashing every
    payload; or, with --bundle, a run bundle alone. Exits 1 if anything was changed, removed
    or added."""
    if bundle is not None:
        _verify_bundle(bundle, run_ids, public_key, as_json)
        return
    settings = settings_from(config)
    head: SignedHead | None = None
    if against is not None:
        key = public_key or settings.ledger_verify_key
        if not key:
            raise ConfigError(
                "--against needs the trusted public key",
                key="ELEVENFACTOR_LEDGER_VERIFY_KEY",
                hint="pass --public-key or set ELEVENFACTOR_LEDGER_VERIFY_KEY",
            )
        head = verify_head(against.read_bytes(), key)

    async def main(store: Store) -> AuditReport:
        await require_migrated(store)
        if run_ids:
            total = AuditReport()
            for rid in run_ids:
                one = await verify_one_run(store, rid)
                total.runs += one.runs
                total.events += one.events
                total.payloads += one.payloads
                total.approvals += one.approvals
                total.findings += one.findings
            return total
        count = await store.fetchone("SELECT COUNT(*) FROM runs")
        with Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=err_console,
            transient=True,
            disable=as_json or not sys.stderr.isatty(),
        ) as bar:
            task = bar.add_task("verifying runs", total=int(count[0]) if count else 0)
            return await audit_store(
                store,
                seal_first=not no_seal,
                against=head,
                progress=lambda n: bar.advance(task, n),
            )

    report = run(with_store(settings, main))
    if as_json:
        print_json(report.to_dict())
    else:
        _print(report)
    if not report.ok:
        sys.exit(1)


def _verify_bundle(
    path: Path, run_ids: tuple[str, ...], public_key: str | None, as_json: bool
) -> None:
    from elevenfactor.runtime._bundle_verify import verify_bundle_file

    if run_ids:
        raise RequestError("--bundle takes no RUN_IDS", code="invalid_value", param="bundle")
    key = public_key or os.environ.get("ELEVENFACTOR_LEDGER_VERIFY_KEY") or None
    report = verify_bundle_file(path, public_key=key)
    if as_json:
        print_json(report.to_dict())
    else:
        print_table(
            f"bundle of run {report.run_id}",
            ["check", "result", "detail"],
            [(c.name, "ok" if c.ok else "FAILED", c.detail) for c in report.checks],
        )
        failed = [c.name for c in report.checks if not c.ok]
        if failed:
            err_console.print(f"[red]FAILED[/]: {', '.join(failed)}", highlight=False)
        else:
            console.print("[green]ok[/]: the bundle verifies")
    if not report.ok:
        sys.exit(1)


@audit.command("seal")
@config_option
@handle_errors
def audit_seal(config: Path | None) -> None:
    """Chain pending ledger entries into a block now."""
    settings = settings_from(config)

    async def main(store: Store) -> list[str]:
        out = []
        while (block := await seal(store)) is not None:
            out.append(f"sealed block {block.n}: {block.entries} entries, hash {block.hash}")
        return out or ["nothing to seal"]

    for line in run(with_store(settings, main)):
        click.echo(line)


@audit.command("head")
@click.option(
    "--out",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Write the signed head here (default: print it).",
)
@config_option
@handle_errors
def audit_head(out: Path | None, config: Path | None) -> None:
    """Seal, then sign the ledger head with ELEVENFACTOR_LEDGER_SIGNING_KEY; keep the file
    somewhere the database's administrators cannot write."""
    settings = settings_from(config)
    if not settings.ledger_signing_key:
        raise ConfigError(
            "no signing key",
            key="ELEVENFACTOR_LEDGER_SIGNING_KEY",
            hint="make one with `elevenfactor audit keygen`",
        )
    key = settings.ledger_signing_key
    head = run(with_store(settings, lambda s: export_head(s, key)))
    if head is None:
        raise ConfigError("the ledger is empty: there is no head to sign", key="ledger")
    if out is None:
        print_json(head.to_dict())
        return
    write_head(head, out)
    click.echo(f"signed head: block {head.n}, {head.entries} entries -> {out}")


@audit.command("keygen")
@json_option
def audit_keygen(as_json: bool) -> None:
    """Make an Ed25519 key pair for signing ledger heads."""
    private, public = generate_keypair()
    if as_json:
        print_json({"private_key": private, "public_key": public})
        return
    click.echo(f"ELEVENFACTOR_LEDGER_SIGNING_KEY={private}")
    click.echo(f"ELEVENFACTOR_LEDGER_VERIFY_KEY={public}")
    click.echo(
        "keep the signing key secret (where the server runs); give the verify key to auditors",
        err=True,
    )
