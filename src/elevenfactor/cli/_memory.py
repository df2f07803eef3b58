"""``memory``: Long-term memory: list, search and forget what agents remember."""

from __future__ import annotations

import click

__all__ = ["memory"]


@click.group(name="memory")
def memory() -> None:
    """Long-term memory: list, search and forget what agents remember."""
