"""``worker``, ``run``, ``runs`` and ``audit``: thin wrappers over the runtime."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from typing import Any

import click
import orjson

from elevenfactor.cli._admin import as_option, run_as
from elevenfactor.cli._common import (
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
from elevenfactor.context import Manifest, manifest_table
from elevenfactor.errors import RequestError
from elevenfactor.governance import Principal, open_meter, principal_for_user
from elevenfactor.observe import CallRecorder
from elevenfactor.runtime import (
    RunInfo,
    build_runtime,
    build_worker,
    cancel_run,
    decide_approval,
    delete_run,
    describe_steps,
    get_run,
    list_approvals,
    list_runs,
    run_result,
    running,
    submit_run,
)
from elevenfactor.runtime._release_binding import ReleaseBinding
from elevenfactor.store import Store, require_migrated

__all__ = ["approvals", "mcp", "run_cmd", "runs", "worker"]


def _run_dict(r: RunInfo) -> dict[str, Any]:
    return {
        "id": r.id,
        "program": r.program,
        "status": r.status,
        "queue": r.queue,
        "priority": r.priority,
        "attempt": r.attempt,
        "created_at": r.created_at,
        "updated_at": r.updated_at,
        "error": r.error_dict(),
        "parent_id": r.parent_id,
        "release_id": r.release_id,
    }


@click.command()
@config_option
@click.option("--queue", "queues", multiple=True, help="Queue to serve (repeatable).")
@click.option("--concurrency", type=int, default=None, help="Runs executed at once.")
@handle_errors
def worker(config: Path | None, queues: tuple[str, ...], concurrency: int | None) -> None:
    """Execute durable runs until SIGTERM/SIGINT (then finish in-flight runs' current steps)."""
    from elevenfactor.observe import configure_logging

    settings = settings_from(config)
    project = project_from(settings)
    configure_logging(settings.log_level, scrub=settings.log_scrub)

    async def main(store: Store) -> None:
        await require_migrated(store)
        async with running(settings, project, store) as runtime:
            w = build_worker(
                store,
                settings,
                project,
                runtime.programs,
                queues=list(queues) or None,
                concurrency=concurrency,
                release=runtime.release,
            )
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, w.stop)
            await w.serve()

    run(with_store(settings, main))


@click.command("run")
@click.argument("program")
@click.option("--input", "input_json", default="null", help="The run's input, as JSON.")
@click.option("--queue", default="default", show_default=True)
@click.option("--priority", type=int, default=0, show_default=True)
@click.option("--id", "run_id", default=None, help="Run id (idempotent submission).")
@click.option(
    "--tag", "tags", multiple=True, help="A tag every model call of the run carries (repeatable)."
)
@click.option(
    "--execute",
    is_flag=True,
    help="Execute in this process until the run settles (no separate worker).",
)
@click.option("--wait", is_flag=True, help="Wait for a worker to finish the run.")
@click.option(
    "--session",
    "session_id",
    default=None,
    help="A session the run continues: an agent reads its conversation and appends its own.",
)
@as_option
@config_option
@json_option
@handle_errors
def run_cmd(
    program: str,
    input_json: str,
    queue: str,
    priority: int,
    run_id: str | None,
    tags: tuple[str, ...],
    execute: bool,
    session_id: str | None,
    wait: bool,
    as_user: str,
    config: Path | None,
    as_json: bool,
) -> None:
    """Submit a run of PROGRAM (an agent or workflow), owned by --as, and print its id or its
    result."""
    try:
        payload = orjson.loads(input_json)
    except orjson.JSONDecodeError as exc:
        raise RequestError(f"--input is not valid JSON: {exc}", param="input") from None
    settings = settings_from(config)
    project = project_from(settings)

    async def main(store: Store) -> RunInfo:
        await require_migrated(store)
        owner = await principal_for_user(store, as_user)
        # The release that applies: the files must be its (ReleaseMismatch), the run records it.
        release = await ReleaseBinding.open(store, settings, project)
        recorder = CallRecorder(store, record_payloads=settings.record_payloads)
        recorder.release_id = release.release_id
        meter = await open_meter(settings, project, store) if execute else None
        runtime = build_runtime(
            settings, project, recorder=recorder if execute else None, meter=meter
        )
        recorder.start()
        try:
            runtime.programs.get(program)  # refuse an unknown program before queuing anything
            w = (
                build_worker(
                    store, settings, project, runtime.programs, queues=[queue], release=release
                )
                if execute
                else None
            )
            rid = await submit_run(
                store, program, payload, queue=queue, priority=priority, run_id=run_id,
                owner=owner, tags=tags, session_id=session_id, release_id=release.release_id,
            )  # fmt: skip
            info = await get_run(store, rid, owner)
            with console.status(f"run {rid}: {info.status}") as status:
                while (execute or wait) and not info.finished:
                    if w is None or not await w.run_once():
                        await asyncio.sleep(0.1)
                    info = await get_run(store, rid, owner)
                    status.update(f"run {rid}: {info.status}")
        finally:
            await runtime.aclose()
            if meter is not None:
                await meter.aclose()
            await recorder.aclose()
            release.close()
        return info

    info = run(with_store(settings, main))
    result = run(with_store(settings, lambda s: run_result(s, info)))
    if as_json:
        print_json({**_run_dict(info), "result": result})
    elif info.finished:
        click.echo(f"run {info.id}: {info.status}")
        click.echo(
            orjson.dumps(
                result if info.status == "succeeded" else info.error_dict(),
                option=orjson.OPT_INDENT_2,
            ).decode()
        )
    else:
        click.echo(info.id)
    if info.status in ("failed", "cancelled"):
        sys.exit(1)


@click.group()
def runs() -> None:
    """Inspect and cancel durable runs."""


@runs.command("list")
@click.option("--status", default=None, help="Only runs in this status.")
@click.option("--program", default=None, help="Only runs of this program.")
@click.option("--limit", type=int, default=50, show_default=True)
@as_option
@config_option
@json_option
@handle_errors
def runs_list(
    status: str | None,
    program: str | None,
    limit: int,
    as_user: str,
    config: Path | None,
    as_json: bool,
) -> None:
    """List the runs --as may see, newest first."""
    found = run_as(
        config,
        as_user,
        lambda s, p: list_runs(s, status=status, program=program, limit=limit, principal=p),
    )
    if as_json:
        print_json([_run_dict(r) for r in found])
        return
    print_table(
        "runs",
        ["id", "program", "status", "queue", "attempt", "created", "updated"],
        [
            (
                r.id,
                r.program,
                r.status,
                r.queue,
                r.attempt,
                when(r.created_at),
                when(r.updated_at),
            )
            for r in found
        ],
    )


@runs.command("show")
@click.argument("run_id")
@click.option(
    "--context",
    "context_step",
    default=None,
    metavar="STEP",
    help="Show the context manifest of this step (a `context` step's id in the journal).",
)
@as_option
@config_option
@json_option
@handle_errors
def runs_show(
    run_id: str, context_step: str | None, as_user: str, config: Path | None, as_json: bool
) -> None:
    """Show a run: status, result or error, and its journal (or one context manifest)."""

    async def main(store: Store, principal: Principal) -> dict[str, Any]:
        info = await get_run(store, run_id, principal)
        steps = await describe_steps(store, info.id)
        return {**_run_dict(info), "result": await run_result(store, info), "steps": steps}

    shown = run_as(config, as_user, main)
    if context_step is not None:
        _show_context(shown, context_step, as_json)
        return
    if as_json:
        print_json(shown)
        return
    click.echo(f"run {shown['id']} ({shown['program']}): {shown['status']}")
    if shown["release_id"]:
        click.echo(f"release: {shown['release_id']}")
    tty = sys.stdout.isatty()  # a terminal gets a readable table; a pipe gets whole values
    print_table(
        "journal",
        ["step", "kind", "name", "status", "at", "output / error"],
        [
            (
                s["step_id"],
                s["kind"],
                s["name"],
                s["status"],
                when(s["created_at"]),
                orjson.dumps(s["error"] or s["output"]).decode()[: 80 if tty else None],
            )
            for s in shown["steps"]
        ],
    )
    if shown["status"] == "succeeded":
        click.echo("result: " + orjson.dumps(shown["result"]).decode())
    elif shown["error"]:
        click.echo(f"error[{shown['error']['code']}]: {shown['error']['message']}")


def _show_context(shown: dict[str, Any], step_id: str, as_json: bool) -> None:
    contexts = [s for s in shown["steps"] if s["kind"] == "context" and s["output"]]
    found = next((s for s in contexts if s["step_id"] == step_id), None)
    if found is None:
        known = ", ".join(s["step_id"] for s in contexts) or "none: it assembled no context"
        raise RequestError(
            f"run {shown['id']} has no context step {step_id!r}",
            code="step_not_found",
            hint=f"its context steps: {known}",
        )
    if as_json:
        print_json(found["output"])
        return
    console.print(manifest_table(Manifest.model_validate(found["output"])))


@runs.command("cancel")
@click.argument("run_id")
@click.option("--reason", default="cancelled from the CLI")
@as_option
@config_option
@handle_errors
def runs_cancel(run_id: str, reason: str, as_user: str, config: Path | None) -> None:
    """Cancel a run: at once if queued or waiting; if running, its worker stops it at its next
    step. A finished run is refused (run_finished)."""
    info = run_as(config, as_user, lambda s, p: cancel_run(s, run_id, reason, p))
    click.echo(
        f"run {info.id}: {info.status}"
        + (" (cancel requested)" if info.status == "running" else "")
    )


@runs.command("delete")
@click.argument("run_id")
@click.option("--reason", required=True, help="Why (recorded in the ledger).")
@as_option
@config_option
@handle_errors
def runs_delete(run_id: str, reason: str, as_user: str, config: Path | None) -> None:
    """Delete a finished run, its journal and approvals (admins; recorded in the ledger, so
    `audit verify` tells it from tampering)."""
    run_as(config, as_user, lambda s, p: delete_run(s, run_id, p, reason))
    click.echo(f"deleted run {run_id}")


@click.group()
def approvals() -> None:
    """Review pending approvals."""


@approvals.command("list")
@click.option("--status", default="pending", show_default=True, help="Or 'all'.")
@click.option("--group", default=None, help="Only this reviewer group.")
@as_option
@config_option
@json_option
@handle_errors
def approvals_list(
    status: str, group: str | None, as_user: str, config: Path | None, as_json: bool
) -> None:
    """List the approvals --as may see, oldest first."""
    found = run_as(
        config,
        as_user,
        lambda s, p: list_approvals(
            s, status=None if status == "all" else status, group=group, principal=p
        ),
    )
    if as_json:
        print_json(
            [
                {
                    "id": a.id,
                    "run_id": a.run_id,
                    "name": a.name,
                    "status": a.status,
                    "group": a.reviewer_group,
                    "request": a.request,
                    "created_at": a.created_at,
                    "timeout_at": a.timeout_at,
                    "decision": a.decision.model_dump() if a.decision else None,
                }
                for a in found
            ]
        )
        return
    print_table(
        "approvals",
        ["id", "run", "name", "group", "status", "created", "request"],
        [
            (
                a.id,
                a.run_id,
                a.name,
                a.reviewer_group,
                a.status,
                when(a.created_at),
                orjson.dumps(a.request).decode()[:60],
            )
            for a in found
        ],
    )


def _decide(
    approval_id: str,
    action: str,
    as_user: str,
    reason: str | None,
    config: Path | None,
    arguments: str | None = None,
) -> None:
    args = None
    if arguments is not None:
        try:
            args = orjson.loads(arguments)
        except orjson.JSONDecodeError as exc:
            raise RequestError(f"--arguments is not valid JSON: {exc}", param="arguments") from None
    decided = run_as(
        config,
        as_user,
        lambda s, p: decide_approval(s, approval_id, action, by=p, reason=reason, arguments=args),
    )
    click.echo(f"approval {decided.id}: {decided.status} (run {decided.run_id} resumes)")


@approvals.command("approve")
@click.argument("approval_id")
@click.option("--reason", default=None)
@click.option("--arguments", default=None, help="Edited arguments, as JSON (an edit).")
@as_option
@config_option
@handle_errors
def approvals_approve(
    approval_id: str, reason: str | None, arguments: str | None, as_user: str, config: Path | None
) -> None:
    """Approve APPROVAL_ID as --as (journaled as the decider), optionally with edited
    arguments."""
    _decide(approval_id, "edit" if arguments else "approve", as_user, reason, config, arguments)


@approvals.command("reject")
@click.argument("approval_id")
@click.option("--reason", required=True, help="Why; the agent's model sees it.")
@as_option
@config_option
@handle_errors
def approvals_reject(approval_id: str, reason: str, as_user: str, config: Path | None) -> None:
    """Reject APPROVAL_ID with a reason, as --as (journaled as the decider)."""
    _decide(approval_id, "reject", as_user, reason, config)


@click.group()
def mcp() -> None:
    """elevenfactor as an MCP server."""


@mcp.command("serve")
@config_option
@click.option(
    "--no-worker",
    is_flag=True,
    help="Do not execute runs here (a separate `elevenfactor worker` does).",
)
@as_option
@handle_errors
def mcp_serve(config: Path | None, no_worker: bool, as_user: str) -> None:
    """Serve the project's agents and selected tools over stdio (logs go to stderr), acting
    for --as: it owns the runs and approvals the calls create."""
    from mcp.server.stdio import stdio_server

    from elevenfactor.observe import configure_logging
    from elevenfactor.server._mcp import McpBridge, build_mcp_server

    settings = settings_from(config)
    project = project_from(settings)
    configure_logging(settings.log_level, stream=sys.stderr, scrub=settings.log_scrub)

    async def main(store: Store) -> None:
        await require_migrated(store)
        principal = await principal_for_user(store, as_user)
        async with running(settings, project, store) as runtime:
            w = None if no_worker else build_worker(store, settings, project, runtime.programs)
            task = asyncio.create_task(w.serve()) if w is not None else None
            server = build_mcp_server(McpBridge(store, runtime, project.mcp_server, w), principal)
            try:
                async with stdio_server() as (read, write):
                    await server.run(read, write, server.create_initialization_options())
            finally:
                if w is not None and task is not None:
                    await w.shutdown(settings.shutdown_timeout)
                    await task

    run(with_store(settings, main))
