"""The structure of a durable program beyond single steps: durable timers (``sleep_until``)
and fan-out/fan-in over branch contexts (``parallel``), behind ``RunContext``'s methods.

Parallel branches get their own step namespace ("3.0.0", "3.1.0"): positions are assigned when
a step is issued, so concurrency cannot reorder them across re-executions.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

from elevenfactor.runtime._codec import encode
from elevenfactor.runtime._steps import Park

if TYPE_CHECKING:
    from elevenfactor.runtime._context import RunContext

__all__ = ["run_parallel", "sleep_until"]

R = TypeVar("R")


async def sleep_until(ctx: RunContext, wake_at: float, name: str) -> None:
    """``ctx.sleep_until``: record the timer's end if it passed, else park until it."""
    step_id, ev = ctx.reserve("sleep", name)
    if ev is not None:
        ctx.replayed(ev)
        return
    ctx.check_live()
    if time.time() >= wake_at:
        await ctx.record(step_id, "sleep", name, "done", encode(wake_at))
        return
    raise Park(wake_at=wake_at, waiting=False, reason=f"sleeping until {wake_at:.3f}")


async def run_parallel(
    ctx: RunContext,
    branches: Sequence[Callable[[RunContext], Awaitable[R]]],
    limit: int | None,
    name: str,
) -> list[R]:
    """``ctx.parallel``: each branch on its own branch context, at most ``limit`` at once."""
    step_id, _ = ctx.reserve("parallel", name)
    if not branches:
        return []
    sem = asyncio.Semaphore(limit) if limit else None

    async def one(i: int, fn: Callable[[RunContext], Awaitable[R]]) -> R:
        branch = ctx.branch(step_id, i)
        if sem is None:
            return await fn(branch)
        async with sem:
            return await fn(branch)

    tasks = [asyncio.ensure_future(one(i, fn)) for i, fn in enumerate(branches)]
    try:
        await asyncio.wait(tasks)
    except asyncio.CancelledError:
        for t in tasks:
            t.cancel()
        raise
    parks = [e for t in tasks if isinstance(e := t.exception(), Park)]
    if parks:
        wake = [p.wake_at for p in parks if p.wake_at is not None]
        raise Park(
            wake_at=min(wake) if wake else None,
            waiting=any(p.waiting for p in parks),
            reason=f"{len(parks)} parallel branches parked",
            wake_when=[c for p in parks for c in p.wake_when],
        )
    for t in tasks:
        exc = t.exception()
        if exc is not None:
            raise exc
    return [t.result() for t in tasks]
