"""How the ``local`` provider puts a conversation and its tools into a chat template.

Small models do not know tool-call formats, so tool turns become plain text, the tools are
described in the system message, and the answer is constrained by a JSON schema: one branch per
tool (``{"tool": name, "arguments": ...}``) plus, unless a tool is required, ``{"answer": ...}``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from elevenfactor.models._messages import (
    AssistantMessage,
    Message,
    ModelSettings,
    SystemMessage,
    ToolMessage,
    UserMessage,
)

__all__ = ["render", "tool_plan"]


def render(messages: Sequence[Message], note: str | None) -> list[dict[str, str]]:
    """Messages in a form any chat template accepts: tool turns become plain text."""
    names = {
        tc.id: tc.name for m in messages if isinstance(m, AssistantMessage) for tc in m.tool_calls
    }
    out: list[dict[str, str]] = []
    for m in messages:
        if isinstance(m, SystemMessage | UserMessage):
            out.append({"role": m.role, "content": m.content})
        elif isinstance(m, AssistantMessage):
            calls = [
                f'{{"tool": {json.dumps(tc.name)}, "arguments": {tc.arguments}}}'
                for tc in m.tool_calls
            ]
            out.append(
                {
                    "role": "assistant",
                    "content": "\n".join(p for p in [m.content or "", *calls] if p),
                }
            )
        elif isinstance(m, ToolMessage):
            name = names.get(m.tool_call_id, "tool")
            out.append({"role": "user", "content": f"Tool {name} returned: {m.content}"})
    if note:
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": f"{out[0]['content']}\n\n{note}"}
        else:
            out.insert(0, {"role": "system", "content": note})
    return out


def tool_plan(settings: ModelSettings) -> tuple[dict[str, Any], str] | None:
    """The JSON schema and system note for a tool-calling turn, or None without tools."""
    if not settings.tools or settings.tool_choice == "none":
        return None
    choice = settings.tool_choice
    tools = settings.tools
    if choice not in (None, "auto", "required"):
        tools = [t for t in tools if t.name == choice] or tools
    options: list[dict[str, Any]] = [
        {
            "type": "object",
            "additionalProperties": False,
            "required": ["tool", "arguments"],
            "properties": {"tool": {"const": t.name}, "arguments": t.parameters},
        }
        for t in tools
    ]
    lines = [
        f"- {t.name}: {t.description or 'no description'} (arguments: "
        f"{', '.join(t.parameters.get('properties', {})) or 'none'})"
        for t in tools
    ]
    note = (
        "You can call these tools:\n" + "\n".join(lines) + "\nTo call a tool, reply with "
        'JSON {"tool": <name>, "arguments": {...}}.'
    )
    if choice in (None, "auto"):
        rf = settings.response_format
        answer: dict[str, Any] = {"type": "string"}
        if rf is not None and rf.type == "json_schema":
            answer = rf.json_schema or {"type": "object"}
        elif rf is not None and rf.type == "json_object":
            answer = {"type": "object"}
        options.append(
            {
                "type": "object",
                "additionalProperties": False,
                "required": ["answer"],
                "properties": {"answer": answer},
            }
        )
        note += ' To answer without a tool, reply with JSON {"answer": <your answer>}.'
    return {"anyOf": options}, note
