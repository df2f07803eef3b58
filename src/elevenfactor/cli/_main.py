"""The ``elevenfactor`` command: thin wrappers over library functions."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from elevenfactor._version import __version__
from elevenfactor.cli._common import (
    config_error_dict,
    config_option,
    console,
    err_console,
    handle_errors,
    json_option,
    print_error,
    print_json,
    project_from,
    run,
    settings_from,
    with_store,
)
from elevenfactor.config import mask_url
from elevenfactor.store import migrate as migrate_store

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.pass_context
def main(ctx: click.Context) -> None:
    """elevenfactor: a production runtime for AI agents.

    Configuration comes from the environment (ELEVENFACTOR_*, DATABASE_URL, REDIS_URL, PORT,
    provider keys) and the project file elevenfactor.yaml (providers, models, routes).
    Tracing is on when OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_TRACES_EXPORTER is set.
    """
    from elevenfactor.observe._tracing import configured

    if configured():  # runs, workers and the server export spans; flushed on exit
        from elevenfactor.cli._common import handle_errors
        from elevenfactor.observe._tracing import setup_tracing, shutdown_tracing

        if handle_errors(setup_tracing)():
            ctx.call_on_close(shutdown_tracing)


@main.command()
@config_option
@json_option
@handle_errors
def version(config: Path | None, as_json: bool) -> None:
    """Print the version and where configuration comes from."""
    settings = settings_from(config)
    source = settings.resolved_config_file()
    info = {
        "version": __version__,
        "config_source": str(source) if source else "built-in default (no elevenfactor.yaml)",
        "database": mask_url(settings.resolved_database_url()),
    }
    if as_json:
        print_json(info)
        return
    click.echo(f"elevenfactor {info['version']}")
    click.echo(f"config: {info['config_source']}")
    click.echo(f"database: {info['database']}")


@main.group()
def config() -> None:
    """Inspect and validate configuration."""


@config.command("check")
@config_option
@json_option
@handle_errors
def config_check(config: Path | None, as_json: bool) -> None:
    """Load the project as `serve` does (models, toolsets, programs, agents and every reference
    between them) without connecting anywhere; print every error, or the resolved config with
    secrets masked. Exits 2 on any error."""
    from elevenfactor.runtime._service import check_config

    settings = settings_from(config)
    project = project_from(settings)
    errors = run(check_config(settings, project))
    if errors:
        if as_json:
            print_json({"ok": False, "errors": [config_error_dict(e) for e in errors]})
            sys.exit(2)
        for error in errors:
            print_error(error, default_hint=False)
        err_console.print(f"{len(errors)} configuration error(s)", highlight=False)
        sys.exit(2)
    source = settings.resolved_config_file()
    resolved = {
        "source": str(source) if source else "built-in default",
        "settings": settings.masked(),
        "project": project.model_dump(mode="json"),
    }
    if as_json:
        print_json(resolved)
        return
    console.print(f"[green]ok[/]: configuration is valid ({resolved['source']})")
    print_json(resolved)


@config.command("reference")
@click.option(
    "--out",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Write the Markdown to this file instead of stdout.",
)
def config_reference(out: Path | None) -> None:
    """Print the reference of the project file, agent files and environment settings (Markdown,
    generated from the config models; docs/reference/project.md is its output)."""
    from elevenfactor.config._reference import reference_markdown
    from elevenfactor.runtime import AgentSpec

    text = reference_markdown(AgentSpec)
    if out is None:
        click.echo(text, nl=False)
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    click.echo(f"wrote {out}")


@main.command()
@config_option
@handle_errors
def migrate(config: Path | None) -> None:
    """Apply pending database migrations."""
    settings = settings_from(config)
    ran = run(with_store(settings, migrate_store))
    url = mask_url(settings.resolved_database_url())
    if ran:
        for name in ran:
            click.echo(f"applied {name}")
    click.echo(f"database is up to date ({url})")


@main.command()
@config_option
@click.option("--host", default=None, help="Interface to bind (env ELEVENFACTOR_HOST).")
@click.option("--port", type=int, default=None, help="Port (env PORT, default 8000).")
@click.option(
    "--dev",
    is_flag=True,
    default=None,
    help="Accept unauthenticated requests from loopback (env ELEVENFACTOR_DEV).",
)
@click.option(
    "--workers",
    "web_concurrency",
    type=int,
    default=None,
    help="Server processes sharing the port (env WEB_CONCURRENCY, default 1).",
)
@click.option(
    "--migrate", "auto_migrate", is_flag=True, help="Apply pending migrations before starting."
)
@handle_errors
def serve(
    config: Path | None,
    host: str | None,
    port: int | None,
    dev: bool | None,
    web_concurrency: int | None,
    auto_migrate: bool,
) -> None:
    """Serve the OpenAI-compatible gateway and API on PORT.

    The project is checked first (as `config check` does); a new embedded SQLite database is
    migrated on first start, any other needs `elevenfactor migrate` (or --migrate).
    """
    from elevenfactor.observe import configure_logging
    from elevenfactor.runtime._service import check_config, require_valid
    from elevenfactor.server import serve as serve_app
    from elevenfactor.server._runner import prepare_store

    settings = settings_from(config, host=host, port=port, dev=dev, web_concurrency=web_concurrency)
    project = project_from(settings)
    require_valid(run(check_config(settings, project)))
    configure_logging(settings.log_level, scrub=settings.log_scrub)
    run(prepare_store(settings.resolved_database_url(), auto_migrate=auto_migrate))
    if settings.web_concurrency > 1:
        from elevenfactor.server._supervisor import child_argv, supervise

        sys.exit(supervise(settings, child_argv()))
    serve_app(settings, project)


def _register() -> None:
    from elevenfactor.cli._admin import keys, teams, users
    from elevenfactor.cli._agents import agents
    from elevenfactor.cli._audit import audit
    from elevenfactor.cli._budgets import budgets, kill_cmd, kills, unkill_cmd
    from elevenfactor.cli._cost import cost
    from elevenfactor.cli._feedback import feedback
    from elevenfactor.cli._guard import guard
    from elevenfactor.cli._index import index
    from elevenfactor.cli._memory import memory
    from elevenfactor.cli._prompts import prompts
    from elevenfactor.cli._retention import retention, runs_export
    from elevenfactor.cli._runtime import approvals, mcp, run_cmd, runs, worker

    runs.add_command(feedback)
    runs.add_command(runs_export)
    for command in (worker, run_cmd, runs, approvals, audit, mcp, users, teams, keys, cost):
        main.add_command(command)
    for command in (budgets, kill_cmd, unkill_cmd, kills, agents):
        main.add_command(command)
    for command in (prompts, index, memory, guard, retention):
        main.add_command(command)
    from elevenfactor.cli._eval import eval_group
    from elevenfactor.cli._eval_online import online as eval_online

    eval_group.add_command(eval_online)
    main.add_command(eval_group)
    from elevenfactor.cli._release import release

    main.add_command(release)
    from elevenfactor.cli._replay import replay

    main.add_command(replay)


_register()
