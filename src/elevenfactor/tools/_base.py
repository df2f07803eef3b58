"""Factor 4's vocabulary: ``Tool``, ``ToolResult``, ``ToolContext`` and the ``Toolset`` protocol.

A toolset answers two questions: which tools exist (``list_tools``) and what happened when one was
called (``call_tool``). Everything else — function tools, MCP servers, filtering, prefixing,
timeouts — is a toolset or a wrapper of one.

A tool's failure is data, not an exception: a ``ToolResult`` with ``is_error=True`` and a stable
``error_code`` goes back to the model, which can correct its arguments or try something else.
Exceptions are kept for failures the model cannot fix (a server that cannot be reached, a
configuration mistake).
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import orjson

from elevenfactor.models._messages import ToolDefinition, ToolMessage

__all__ = [
    "ERROR_CODES",
    "Risk",
    "Tool",
    "ToolContext",
    "ToolResult",
    "Toolset",
    "aclose_toolset",
]

Risk = Literal["read", "write", "destructive"]
"""What a tool may do to the world: only read it, change it additively, or destroy something.
Approval policies and guards decide on this."""

ERROR_CODES: Mapping[str, str] = {
    "invalid_arguments": "the arguments do not match the tool's schema",
    "tool_not_found": "no tool by that name in this toolset",
    "tool_error": "the tool ran and failed",
    "tool_timeout": "the tool did not finish within its timeout",
    "tool_connection_lost": "the tool's server connection broke while the call was in flight",
    "tool_server_error": "the tool's server answered with a protocol error",
}
"""The stable ``ToolResult.error_code`` values and what each means."""


@dataclass(frozen=True, slots=True)
class ToolContext:
    """Who is calling, and from where: passed to every ``list_tools`` and ``call_tool``.

    ``step_key`` is the journal step's key (``<run id>:<seq>``, see
    ``elevenfactor.runtime.step_key``): the same on every re-execution, so a side-effecting tool
    can use it as an idempotency key. MCP toolsets send it to the server in the request ``_meta``.
    """

    run_id: str | None = None
    step_key: str | None = None
    caller: str | None = None
    """Who asked: an agent name, a user id, a service."""
    metadata: Mapping[str, Any] = field(default_factory=dict)
    owner: Mapping[str, Any] = field(default_factory=dict)
    """On whose behalf: the run owner's organisation, user and key ids (``Principal.actor()``);
    a tool that touches per-user data scopes it by these."""


@dataclass(frozen=True, slots=True)
class Tool:
    """A tool a model may call: its definition plus what the runtime needs to govern it."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})
    """A JSON schema (an object) for the arguments."""
    risk: Risk = "destructive"
    """Defaults to the most cautious level: a tool that says nothing may do anything."""
    timeout: float | None = None
    """Seconds one call may take; ``None`` means the toolset's (or wrapper's) default."""
    output_schema: dict[str, Any] | None = None
    """A JSON schema of ``ToolResult.structured``, when the tool declares one."""

    def definition(self) -> ToolDefinition:
        """What the model sees: name, description and the JSON schema of the arguments."""
        return ToolDefinition(
            name=self.name, description=self.description, parameters=self.parameters
        )

    def renamed(self, name: str) -> Tool:
        """The same tool under another name."""
        return dataclasses.replace(self, name=name)


@dataclass(frozen=True, slots=True)
class ToolResult:
    """What a call produced. ``content`` is text for the model; ``structured`` is the JSON value
    when the tool returned one. On failure ``is_error`` is true and ``error_code`` is one of
    ``ERROR_CODES`` (or a tool's own code)."""

    content: str
    structured: Any = None
    is_error: bool = False
    error_code: str | None = None

    @classmethod
    def error(cls, message: str, *, code: str = "tool_error") -> ToolResult:
        """A failed call the model can read and act on."""
        return cls(content=message, is_error=True, error_code=code)

    @classmethod
    def from_value(cls, value: Any) -> ToolResult:
        """A result from a Python value: text stays text, anything else becomes JSON."""
        if isinstance(value, ToolResult):
            return value
        if isinstance(value, str):
            return cls(content=value)
        structured = orjson.loads(orjson.dumps(value, default=_to_jsonable))
        return cls(content=orjson.dumps(structured).decode(), structured=structured)

    def to_message(self, tool_call_id: str) -> ToolMessage:
        """The message that carries this result back to the model."""
        return ToolMessage(content=self.content, tool_call_id=tool_call_id)


def _to_jsonable(value: Any) -> Any:
    from pydantic_core import to_jsonable_python

    return to_jsonable_python(value)


@runtime_checkable
class Toolset(Protocol):
    """A set of tools: list them, call one by name.

    ``call_tool`` reports every failure the model can act on (bad arguments, unknown name, the
    tool's own error, a timeout) as a ``ToolResult`` with ``is_error=True``; it raises only when
    the toolset itself cannot work (e.g. ``ToolServerUnavailable``).
    """

    async def list_tools(self, ctx: ToolContext) -> list[Tool]:
        """The tools available to this caller now."""
        ...

    async def call_tool(self, name: str, args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        """Call the tool ``name`` with ``args`` (a JSON object)."""
        ...


async def aclose_toolset(toolset: Toolset) -> None:
    """Release what a toolset holds (connections, server processes), if it holds anything."""
    close = getattr(toolset, "aclose", None)
    if close is None:
        return
    result = close()
    if inspect.isawaitable(result):
        await result
