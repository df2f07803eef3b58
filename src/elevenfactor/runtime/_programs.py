"""``Programs``: the registry of durable programs (workflows and agents) a worker can run."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

from elevenfactor.errors import ProgramNotFound

__all__ = ["Program", "Programs"]

Program = Callable[[Any, Any], Awaitable[Any]]
F = TypeVar("F", bound=Program)


class Programs:
    """Name -> program. A program is ``async def program(ctx: RunContext, input) -> result``."""

    def __init__(self) -> None:
        self._programs: dict[str, Program] = {}

    def register(self, name: str, program: Program) -> None:
        """Register ``program`` under ``name`` (names are what runs refer to; keep them stable)."""
        if name in self._programs and self._programs[name] is not program:
            raise ValueError(f"a program named {name!r} is already registered")
        self._programs[name] = program

    def workflow(self, name: str | None = None) -> Callable[[F], F]:
        """Decorator: ``@programs.workflow("name")``."""

        def deco(fn: F) -> F:
            self.register(name or fn.__name__, fn)
            return fn

        return deco

    def get(self, name: str) -> Program:
        """The program called ``name``."""
        try:
            return self._programs[name]
        except KeyError:
            raise ProgramNotFound(
                f"no program named {name!r}; registered: {', '.join(sorted(self._programs))}",
                hint="register it with Programs.register or declare it in agents/*.yaml",
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._programs

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._programs))
