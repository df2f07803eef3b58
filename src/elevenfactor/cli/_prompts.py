"""``prompts``: Prompts as files: list, show, render and diff their versions."""

from __future__ import annotations

import click

__all__ = ["prompts"]


@click.group(name="prompts")
def prompts() -> None:
    """Prompts as files: list, show, render and diff their versions."""
