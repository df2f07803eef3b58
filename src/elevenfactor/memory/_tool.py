"""``MemoryToolset``: long-term memory as tools an agent can be given — ``remember``,
``recall`` and ``forget_memory``.

Each call acts for the run's owner and agent (``ToolContext.owner`` and ``caller``) in the
configured scopes (``memory.tool``): ``user`` is the run's user, ``agent`` the calling agent,
``space:NAME`` a shared space (which still needs a grant). A refused or invalid call comes back
to the model as an error result with the library's error code, never as an exception.
"""

from __future__ import annotations

from typing import Any

from elevenfactor.config._memory import MemoryConfig
from elevenfactor.context import Embedder
from elevenfactor.errors import ElevenFactorError
from elevenfactor.memory._recall import recall
from elevenfactor.memory._records import KINDS, MAX_TEXT, Provenance
from elevenfactor.memory._scopes import MemoryActor, scope_for
from elevenfactor.memory._write import forget, remember
from elevenfactor.store import Store
from elevenfactor.tools import Tool, ToolContext, ToolResult

__all__ = ["MemoryToolset"]


class MemoryToolset:
    """``remember``, ``recall`` and ``forget_memory`` over ``store`` with ``embedder``."""

    def __init__(
        self, store: Store, embedder: Embedder, config: MemoryConfig | None = None
    ) -> None:
        self.store = store
        self.embedder = embedder
        self.config = config or MemoryConfig()

    def __repr__(self) -> str:
        return "MemoryToolset()"

    async def list_tools(self, ctx: ToolContext) -> list[Tool]:
        """The three memory tools; ``scope`` lists the configured write scopes."""
        writable = list(self.config.tool.write)
        return [
            Tool(
                name="remember",
                description="Store a fact or preference to recall in later conversations. Give"
                " a `key` (e.g. user.favorite_color) for a fact that replaces an older one.",
                parameters={
                    "type": "object",
                    "properties": {
                        "text": {"type": "string", "minLength": 1, "maxLength": MAX_TEXT},
                        "kind": {"type": "string", "enum": list(KINDS), "default": "fact"},
                        "key": {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9._:-]*$"},
                        "importance": {"type": "number", "minimum": 0, "maximum": 1},
                        "scope": {"type": "string", "enum": writable, "default": writable[0]},
                    },
                    "required": ["text"],
                    "additionalProperties": False,
                },
                risk="write",
            ),
            Tool(
                name="recall",
                description="Search long-term memory for what is relevant to a query.",
                parameters={
                    "type": "object",
                    "properties": {
                        "query": {"type": "string", "minLength": 1, "maxLength": 4000},
                        "k": {"type": "integer", "minimum": 1, "maximum": 50},
                    },
                    "required": ["query"],
                    "additionalProperties": False,
                },
                risk="read",
            ),
            Tool(
                name="forget_memory",
                description="Delete a memory (and its history) by the id `recall` gave.",
                parameters={
                    "type": "object",
                    "properties": {"id": {"type": "string", "minLength": 1, "maxLength": 200}},
                    "required": ["id"],
                    "additionalProperties": False,
                },
                risk="destructive",
            ),
        ]

    async def call_tool(self, name: str, args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        """Run one memory tool as the run's owner and agent."""
        handlers = {
            "remember": self._remember,
            "recall": self._recall,
            "forget_memory": self._forget,
        }
        handler = handlers.get(name)
        if handler is None:
            return ToolResult.error(f"no memory tool {name!r}", code="tool_not_found")
        if not isinstance(args, dict):
            return ToolResult.error("arguments must be an object", code="invalid_arguments")
        try:
            actor = MemoryActor.from_owner(ctx.owner, ctx.caller)
            return await handler(actor, args, ctx)
        except ElevenFactorError as exc:
            return ToolResult.error(exc.message, code=exc.code)
        except (TypeError, ValueError) as exc:
            return ToolResult.error(str(exc), code="invalid_arguments")

    async def _remember(
        self, actor: MemoryActor, args: dict[str, Any], ctx: ToolContext
    ) -> ToolResult:
        unknown = set(args) - {"text", "kind", "key", "importance", "scope"}
        if unknown:
            raise ValueError(f"unknown arguments: {', '.join(sorted(unknown))}")
        ref = args.get("scope", self.config.tool.write[0])
        if ref not in self.config.tool.write:
            raise ValueError(f"scope must be one of {', '.join(self.config.tool.write)}")
        memory = await remember(
            self.store,
            self.embedder,
            actor,
            scope_for(ref, actor),
            args.get("text", ""),
            kind=args.get("kind", "fact"),
            key=args.get("key"),
            importance=args.get("importance", 0.5),
            provenance=Provenance("tool", run_id=ctx.run_id, step_key=ctx.step_key),
            config=self.config,
        )
        return ToolResult.from_value(
            {"id": memory.id, "scope": str(memory.scope), "supersedes": memory.supersedes}
        )

    async def _recall(
        self, actor: MemoryActor, args: dict[str, Any], ctx: ToolContext
    ) -> ToolResult:
        unknown = set(args) - {"query", "k"}
        if unknown:
            raise ValueError(f"unknown arguments: {', '.join(sorted(unknown))}")
        scopes = []
        for ref in self.config.tool.read:
            if ref == "agent" and actor.agent is None:
                continue
            scopes.append(scope_for(ref, actor))
        found = await recall(
            self.store,
            self.embedder,
            actor,
            args.get("query", ""),
            scopes,
            args.get("k"),
            config=self.config,
        )
        return ToolResult.from_value(
            [
                {
                    "id": r.memory.id,
                    "text": r.memory.text,
                    "kind": r.memory.kind,
                    "key": r.memory.key,
                    "scope": str(r.memory.scope),
                    "score": round(r.score, 4),
                }
                for r in found
            ]
        )

    async def _forget(
        self, actor: MemoryActor, args: dict[str, Any], ctx: ToolContext
    ) -> ToolResult:
        ident = args.get("id")
        if not isinstance(ident, str) or set(args) != {"id"}:
            raise ValueError("forget_memory takes one argument, `id`")
        return ToolResult.from_value(
            {"id": ident, "deleted": await forget(self.store, actor, ident)}
        )
