"""Shared CLI plumbing: loading config, opening the store, printing errors, tables and JSON."""

from __future__ import annotations

import asyncio
import functools
import sys
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import click
import orjson
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from elevenfactor.config import ProjectConfig, Settings, load_project, load_settings
from elevenfactor.errors import ElevenFactorError
from elevenfactor.store import Store, open_store

P = ParamSpec("P")
T = TypeVar("T")

console = Console()
err_console = Console(stderr=True)


def handle_errors(fn: Callable[P, T]) -> Callable[P, T]:
    """Print library errors as ``error[code]: message`` on stderr and exit with status 2."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return fn(*args, **kwargs)
        except ElevenFactorError as exc:
            err_console.print(
                f"[bold red]error\\[{exc.code}][/]: {escape(exc.message)}", highlight=False
            )
            if exc.hint:
                err_console.print(f"  hint: {escape(exc.hint)}", highlight=False)
            sys.exit(2)

    return wrapper


def settings_from(config: Path | None = None, **overrides: Any) -> Settings:
    """Settings from the environment, with command-line overrides."""
    return load_settings(config_file=config, **overrides)


def project_from(settings: Settings) -> ProjectConfig:
    """The project file named by the settings, or the built-in default."""
    return load_project(settings.resolved_config_file())


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion."""
    return asyncio.run(coro)


async def with_store(settings: Settings, fn: Callable[[Store], Awaitable[T]]) -> T:
    """Open the store, run ``fn``, close the store."""
    store = await open_store(settings.resolved_database_url())
    try:
        return await fn(store)
    finally:
        await store.close()


def print_json(obj: Any) -> None:
    """Print ``obj`` as indented JSON on stdout."""
    click.echo(orjson.dumps(obj, option=orjson.OPT_INDENT_2, default=str).decode())


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Print a table for people."""
    table = Table(title=title)
    for i, col in enumerate(columns):
        table.add_column(col, no_wrap=i == 0)
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    console.print(table)


config_option = click.option(
    "--config",
    "config",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Project file (default: $ELEVENFACTOR_CONFIG_FILE or ./elevenfactor.yaml).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for machines.")
