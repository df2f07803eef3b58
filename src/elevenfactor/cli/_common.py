"""Shared CLI plumbing: loading config, opening the store, printing errors, tables and JSON."""

from __future__ import annotations

import asyncio
import datetime as dt
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
from elevenfactor.errors import ConfigError, ElevenFactorError
from elevenfactor.store import Store, open_store

P = ParamSpec("P")
T = TypeVar("T")

console = Console()
err_console = Console(stderr=True)


_CONFIG_HINT = "fix the file and key named; `elevenfactor config check` lists every error"


def print_error(exc: ElevenFactorError, *, default_hint: bool = True) -> None:
    """``error[code]: message`` on one line of stderr, then its hint (a configuration error
    gets one unless ``default_hint`` is off)."""
    err_console.print(
        f"[bold red]error\\[{exc.code}][/]: {escape(exc.message)}",
        highlight=False,
        soft_wrap=True,
    )
    hint = exc.hint or (_CONFIG_HINT if default_hint and isinstance(exc, ConfigError) else None)
    if hint:
        err_console.print(f"  hint: {escape(hint)}", highlight=False, soft_wrap=True)


def config_error_dict(exc: ConfigError) -> dict[str, Any]:
    """A configuration error for machines: code, message, hint, file and key."""
    return {**exc.to_dict(), "source": exc.source, "key": exc.key, "expected": exc.expected}


def handle_errors(fn: Callable[P, T]) -> Callable[P, T]:
    """Print library errors as ``error[code]: message`` on stderr and exit with status 2."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return fn(*args, **kwargs)
        except ElevenFactorError as exc:
            print_error(exc)
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


def bar(fraction: float, width: int = 10) -> str:
    """A text bar for tables: ``fraction`` (0..1, clamped) of ``width`` cells filled."""
    filled = max(0, min(width, round(fraction * width)))
    return "█" * filled + "·" * (width - filled)


def when(ts: float | None) -> str:
    """An epoch time as ``YYYY-MM-DD HH:MM:SS`` UTC for tables ('' for None)."""
    if ts is None:
        return ""
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def print_json(obj: Any) -> None:
    """Print ``obj`` as indented JSON on stdout."""
    click.echo(orjson.dumps(obj, option=orjson.OPT_INDENT_2, default=str).decode())


def _plain(value: Any) -> str:
    text = "" if value is None else str(value)
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Print a table for people; when stdout is not a terminal (a pipe or a file), print a
    header line and one line per row, tab-separated, every value whole (a tab, newline or
    backslash inside a value is written ``\\t``, ``\\n``, ``\\\\``) so ``cut``, ``grep``
    and ``awk`` see full values. ``--json`` is the format for machines."""
    if not console.is_terminal:
        for line in (columns, *rows):
            click.echo("\t".join(_plain(v) for v in line))
        return
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
