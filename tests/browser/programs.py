"""What the browser tests' server runs (loaded by its project file): a workflow that stays
``running`` until the test releases it, and a payment tool an agent may call only after a
reviewer approves (its JSON schema has two fields, so the approval page builds a form)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from elevenfactor.runtime import Programs, RunContext
from elevenfactor.tools import FunctionToolset

__all__ = ["bank", "programs"]

programs = Programs()
bank = FunctionToolset(name="bank")

HOLD_SECONDS = 60.0
"""The longest a ``hold`` run waits to be released before it fails."""


async def _wait_for(path: str) -> str:
    """Return once ``path`` exists (a file the test writes), polling; fail after a minute."""
    deadline = time.monotonic() + HOLD_SECONDS
    while not await asyncio.to_thread(Path(path).exists):
        if time.monotonic() > deadline:
            raise TimeoutError(f"nobody released {path}")
        await asyncio.sleep(0.05)
    return "released"


@programs.workflow("hold")
async def hold(ctx: RunContext, data: dict[str, Any]) -> dict[str, Any]:
    """One step that lasts until the file ``data["release"]`` exists: the run is ``running``
    (holding a worker) the whole time, so a page can watch it finish."""
    said = await ctx.step("wait", _wait_for, str(data["release"]))
    return {"hold": said}


@bank.tool(risk="write")
def pay(to: str, amount: int) -> str:
    """Pay someone.

    Args:
        to: Who is paid.
        amount: How much, in whole euros.
    """
    return f"paid {amount} to {to}"
