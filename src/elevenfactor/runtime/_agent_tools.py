"""The tools through which an agent reaches other agents: ``delegate_to_NAME`` (ask another agent
to do a task, as a child run; its answer is the tool result) and ``handoff_to_NAME`` (hand the
whole conversation over; the run ends with the other agent's answer)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from elevenfactor.runtime._agent_spec import AgentSpec

__all__ = ["DELEGATE", "HANDOFF", "delegation_tools"]

DELEGATE, HANDOFF = "delegate_to_", "handoff_to_"


def delegation_tools(spec: AgentSpec, specs: Mapping[str, AgentSpec]) -> list[dict[str, Any]]:
    """The delegate and handoff tools ``spec`` is offered, as tool listings."""
    out: list[dict[str, Any]] = []
    for other in spec.delegates:
        desc = specs[other].description or f"the {other} agent"
        out.append(
            {
                "name": DELEGATE + other,
                "risk": "write",
                "description": f"Ask {desc} to do a task; returns its answer.",
                "parameters": {
                    "type": "object",
                    "required": ["task"],
                    "properties": {"task": {"type": "string"}},
                },
            }
        )
    for other in spec.handoffs:
        desc = specs[other].description or f"the {other} agent"
        out.append(
            {
                "name": HANDOFF + other,
                "risk": "write",
                "description": f"Hand the whole conversation over to {desc}.",
                "parameters": {"type": "object", "properties": {"reason": {"type": "string"}}},
            }
        )
    return out
