"""The command-line interface."""

from elevenfactor.cli._main import main

__all__ = ["main"]
