"""Compensation on failure (the saga pattern) over durable steps.

```python
async with Saga(ctx) as saga:
    booking = await ctx.step("book_hotel", book, trip)
    saga.compensate("cancel_hotel", cancel, booking)
    await ctx.step("charge", charge, trip)      # fails -> cancel_hotel runs, then the error
```

Compensations run in reverse order of registration, each as a journaled step, so a crash
during compensation resumes it without undoing anything twice. The original error is raised
again afterwards.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Any

from elevenfactor.runtime._context import Park, RunContext

__all__ = ["Saga"]


class Saga:
    """Registers compensating steps and runs them if the block fails."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self._undo: list[tuple[str, Callable[..., Any], tuple[Any, ...], dict[str, Any]]] = []

    def compensate(self, name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """On failure of the block, run ``fn(*args, **kwargs)`` as step ``name``."""
        self._undo.append((name, fn, args, kwargs))

    async def __aenter__(self) -> Saga:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None or not isinstance(exc, Exception) or isinstance(exc, Park):
            return  # success, a park, or a cancellation: nothing to undo
        for name, fn, args, kwargs in reversed(self._undo):
            await self.ctx.step(name, fn, *args, kind="compensate", **kwargs)
