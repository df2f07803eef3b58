"""A toolset for the MCP server's policy tests: every call that runs appends a line to the file
named by ``MCP_TOOL_LOG``, so a test sees which calls ran, how often and with which arguments."""

from __future__ import annotations

import os
from pathlib import Path

import orjson

from elevenfactor.tools import FunctionToolset

ops = FunctionToolset(name="ops")


def _ran(tool: str, **args: object) -> None:
    path = os.environ.get("MCP_TOOL_LOG")
    if path:
        with Path(path).open("ab") as f:
            f.write(orjson.dumps({"tool": tool, **args}) + b"\n")


def ran(path: Path) -> list[dict[str, object]]:
    """What ran, in order (the lines the tools appended)."""
    if not path.exists():
        return []
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line]


@ops.tool(risk="read")
def lookup(order: str) -> str:
    """Look an order up."""
    _ran("lookup", order=order)
    return f"order {order}: shipped"


@ops.tool(risk="write")
def refund(order: str, amount: int) -> str:
    """Refund an order."""
    _ran("refund", order=order, amount=amount)
    return f"refunded {amount} on {order}"


@ops.tool(risk="destructive")
def drop(table: str) -> str:
    """Drop a table (governed by an agent's approval rule)."""
    _ran("drop", table=table)
    return f"dropped {table}"


@ops.tool(risk="destructive")
def purge(target: str) -> str:
    """Purge everything (no approval rule governs it)."""
    _ran("purge", target=target)
    return f"purged {target}"
