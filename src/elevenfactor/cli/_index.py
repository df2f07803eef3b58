"""``index``: Retrieval indexes: build, list, query and delete them."""

from __future__ import annotations

import click

__all__ = ["index"]


@click.group(name="index")
def index() -> None:
    """Retrieval indexes: build, list, query and delete them."""
