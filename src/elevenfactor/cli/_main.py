"""The ``elevenfactor`` command: thin wrappers over library functions."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import click

from elevenfactor._version import __version__
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
    with_store,
)
from elevenfactor.config import mask_url
from elevenfactor.governance import create_key, list_keys, revoke_key
from elevenfactor.store import Store, pending
from elevenfactor.store import migrate as migrate_store

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """elevenfactor: a production runtime for AI agents.

    Configuration comes from the environment (ELEVENFACTOR_*, DATABASE_URL, REDIS_URL, PORT,
    provider keys) and the project file elevenfactor.yaml (providers, models, routes).
    """


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
    """Validate the environment and project file; print the resolved config, secrets masked."""
    settings = settings_from(config)
    project = project_from(settings)
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
    """Serve the OpenAI-compatible gateway and API on PORT."""
    from elevenfactor.errors import MigrationRequired
    from elevenfactor.observe import configure_logging
    from elevenfactor.server import serve as serve_app

    settings = settings_from(config, host=host, port=port, dev=dev, web_concurrency=web_concurrency)
    project = project_from(settings)
    configure_logging(settings.log_level)

    async def check(store: Store) -> list[str]:
        if auto_migrate:
            await migrate_store(store)
        return await pending(store)

    missing = run(with_store(settings, check))
    if missing:
        raise MigrationRequired(
            f"the database is missing migrations: {', '.join(missing)}",
            hint="run `elevenfactor migrate` (or `elevenfactor serve --migrate`)",
        )
    if settings.web_concurrency > 1:
        from elevenfactor.server._supervisor import child_argv, supervise

        sys.exit(supervise(settings, child_argv()))
    serve_app(settings, project)


@main.group()
def keys() -> None:
    """Create, list and revoke API keys (stored hashed)."""


@keys.command("create")
@click.argument("name")
@config_option
@json_option
@handle_errors
def keys_create(name: str, config: Path | None, as_json: bool) -> None:
    """Create a key called NAME and print its secret once."""
    settings = settings_from(config)
    key, secret = run(with_store(settings, lambda s: create_key(s, name)))
    if as_json:
        print_json({"id": key.id, "name": key.name, "prefix": key.prefix, "key": secret})
        return
    click.echo(secret)
    click.echo(
        f"created key {key.prefix} ({key.name}); store it now, it is not shown again", err=True
    )


def _when(ts: float | None) -> str | None:
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@keys.command("list")
@config_option
@json_option
@handle_errors
def keys_list(config: Path | None, as_json: bool) -> None:
    """List keys (never their secrets)."""
    settings = settings_from(config)
    found = run(with_store(settings, list_keys))
    if as_json:
        print_json(
            [
                {
                    "id": k.id,
                    "name": k.name,
                    "prefix": k.prefix,
                    "created_at": k.created_at,
                    "revoked_at": k.revoked_at,
                }
                for k in found
            ]
        )
        return
    print_table(
        "API keys",
        ["prefix", "name", "created", "status", "id"],
        [
            (
                k.prefix,
                k.name,
                _when(k.created_at),
                "active" if k.active else f"revoked {_when(k.revoked_at)}",
                k.id,
            )
            for k in found
        ],
    )


@keys.command("revoke")
@click.argument("key_id")
@config_option
@handle_errors
def keys_revoke(key_id: str, config: Path | None) -> None:
    """Revoke the key with id or prefix KEY_ID."""
    settings = settings_from(config)
    key = run(with_store(settings, lambda s: revoke_key(s, key_id)))
    click.echo(f"revoked {key.prefix} ({key.name})")


def _register() -> None:
    from elevenfactor.cli._audit import audit
    from elevenfactor.cli._runtime import approvals, mcp, run_cmd, runs, worker

    for command in (worker, run_cmd, runs, approvals, audit, mcp):
        main.add_command(command)


_register()
