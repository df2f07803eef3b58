"""Durable programs used by the API and restart tests (loaded via the project file)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from elevenfactor.runtime import Programs, RunContext, approval, step_key
from elevenfactor.tools import FunctionToolset

programs = Programs()


def _effect_log(name: str) -> None:
    """Append the step's idempotency key to a file named by EFFECT_LOG, once per key."""
    path = os.environ.get("EFFECT_LOG")
    if path:
        key = step_key()
        with Path(path).open("a") as f:
            f.write(f"{name} {key}\n")


@programs.workflow("greet")
async def greet(ctx: RunContext, data: dict[str, Any]) -> dict[str, Any]:
    """Two steps and a clock read."""
    name = await ctx.step("upper", lambda: str(data["name"]).upper())
    await ctx.now()
    return {"hello": name}


@programs.workflow("transfer")
async def transfer(ctx: RunContext, args: dict[str, Any]) -> dict[str, Any]:
    """Gate a side effect behind a human approval that may edit the arguments."""
    decision = await approval(
        ctx, "transfer", {"tool": "transfer", "arguments": args}, group="finance"
    )
    if not decision.approved:
        return {"done": False, "reason": decision.reason}
    final = decision.arguments or args
    await ctx.step("send", _effect_log, f"send:{final['to']}")
    return {"done": True, "to": final["to"], "amount": final["amount"], "by": decision.decided_by}


calc = FunctionToolset(name="calc")


@calc.tool(risk="read")
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@calc.tool(risk="destructive")
def wipe(target: str) -> str:
    """Pretend to delete something (never exposed over MCP in the tests)."""
    return f"wiped {target}"
