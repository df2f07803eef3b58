"""Who reads and writes which memories: ``Scope``, ``MemoryActor`` and the access rules.

A memory belongs to one scope of one organisation:

- ``user:ID`` — readable and writable by whatever acts for that user (its runs, its API key);
- ``agent:NAME`` — the agent's own memory, readable and writable by runs of that agent;
- ``space:NAME`` — a shared space, reachable only through a grant (``read`` and/or ``write``)
  naming the agent (or ``user:ID`` for a user acting directly, over the API).

An admin acting directly (not through an agent) may read and delete every memory of its
organisation and write any space. The rules are checked twice: ``check_access`` refuses a
scope the actor may not use (``MemoryDenied`` naming the space and the agent), and every query
adds ``readable_sql`` to its ``WHERE`` clause, so a row is never read only because Python
forgot to look.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from elevenfactor.errors import MemoryDenied, NotFound, RequestError
from elevenfactor.governance import Principal, check_id
from elevenfactor.store import Executor

__all__ = [
    "SCOPE_KINDS",
    "Access",
    "MemoryActor",
    "Scope",
    "ScopeKind",
    "check_access",
    "default_scopes",
    "readable_sql",
    "scopes_sql",
]

ScopeKind = Literal["user", "agent", "space"]
Access = Literal["read", "write", "delete"]
SCOPE_KINDS: tuple[ScopeKind, ...] = ("user", "agent", "space")


@dataclass(frozen=True, slots=True)
class Scope:
    """Where a memory lives: ``user:ID``, ``agent:NAME`` or ``space:NAME``."""

    kind: ScopeKind
    id: str

    def __post_init__(self) -> None:
        if self.kind not in SCOPE_KINDS:
            raise RequestError(
                f"scope kind {self.kind!r} is not one of user, agent, space",
                code="invalid_scope",
                param="scope",
            )
        check_id(self.id, "scope")

    @classmethod
    def user(cls, user_id: str) -> Scope:
        """The memory of user ``user_id``."""
        return cls("user", user_id)

    @classmethod
    def agent(cls, name: str) -> Scope:
        """The own memory of agent ``name``."""
        return cls("agent", name)

    @classmethod
    def space(cls, name: str) -> Scope:
        """The shared space ``name``."""
        return cls("space", name)

    @classmethod
    def parse(cls, text: str) -> Scope:
        """``user:ID``, ``agent:NAME`` or ``space:NAME``."""
        kind, sep, ident = str(text).partition(":")
        if not sep or kind not in SCOPE_KINDS:
            raise RequestError(
                f"scope {text!r:.80} must be user:ID, agent:NAME or space:NAME",
                code="invalid_scope",
                param="scope",
            )
        return cls(kind, ident)

    def __str__(self) -> str:
        return f"{self.kind}:{self.id}"


@dataclass(frozen=True, slots=True)
class MemoryActor:
    """Who reads or writes memory: a principal (the run's owner, or the API caller) and, inside
    a run, the agent acting for it."""

    principal: Principal
    agent: str | None = None

    def __post_init__(self) -> None:
        if self.agent is not None:
            check_id(self.agent, "agent")

    @classmethod
    def from_owner(cls, owner: Mapping[str, Any], agent: str | None) -> MemoryActor:
        """The actor of a run from its owner (``Principal.actor()``, as a ``ToolContext``
        carries it) and agent name. The owner's roles are not carried: a run acts as a member."""
        org_id, user_id = owner.get("org_id"), owner.get("user_id")
        if not isinstance(org_id, str) or not isinstance(user_id, str):
            raise RequestError(
                "memory needs the run's owner (organisation and user)",
                code="memory_owner_missing",
                hint="run the agent through the runtime, which passes its owner to tools",
            )
        name = owner.get("user")
        return cls(
            Principal(
                org_id=org_id,
                user_id=user_id,
                user_name=name if isinstance(name, str) else user_id,
                key_id=owner.get("key_id") if isinstance(owner.get("key_id"), str) else None,
                via="run",
            ),
            agent,
        )

    @property
    def org_id(self) -> str:
        """The organisation every row read or written belongs to."""
        return self.principal.org_id

    @property
    def user_id(self) -> str:
        """The user acted for."""
        return self.principal.user_id

    @property
    def admin(self) -> bool:
        """An admin acting directly (not through an agent): sees its whole organisation."""
        return self.agent is None and (self.principal.is_admin or self.principal.unscoped)

    @property
    def grantee(self) -> str:
        """What a space grant must name: the agent, or ``user:ID`` for a user acting directly."""
        return self.agent if self.agent is not None else f"user:{self.user_id}"

    @property
    def label(self) -> str:
        """How errors name the actor."""
        if self.agent is not None:
            return f"agent {self.agent!r}"
        return f"user {self.principal.user_name!r}"


def scope_for(ref: str, actor: MemoryActor) -> Scope:
    """The scope ``ref`` names for ``actor``: ``user`` (its user), ``agent`` (its agent; a
    ``ValueError`` without one), else ``kind:id`` (``Scope.parse``)."""
    if ref == "user":
        return Scope.user(actor.user_id)
    if ref == "agent":
        if actor.agent is None:
            raise ValueError("the agent scope needs a calling agent")
        return Scope.agent(actor.agent)
    return Scope.parse(ref)


def readable_sql(actor: MemoryActor, alias: str = "m") -> tuple[str, list[Any]]:
    """A SQL condition (and parameters) selecting the memories ``actor`` may read."""
    p = f"{alias}."
    if actor.admin:
        return f"{p}org_id = ?", [actor.org_id]
    parts = [f"({p}scope_kind = 'user' AND {p}scope_id = ?)"]
    params: list[Any] = [actor.org_id, actor.user_id]
    if actor.agent is not None:
        parts.append(f"({p}scope_kind = 'agent' AND {p}scope_id = ?)")
        params.append(actor.agent)
    parts.append(
        f"({p}scope_kind = 'space' AND EXISTS (SELECT 1 FROM memory_grants g"
        f" WHERE g.org_id = {p}org_id AND g.space = {p}scope_id AND g.grantee = ?"
        " AND g.can_read = 1))"
    )
    params.append(actor.grantee)
    return f"{p}org_id = ? AND ({' OR '.join(parts)})", params


def scopes_sql(scopes: Sequence[Scope], alias: str = "m") -> tuple[str, list[Any]]:
    """A SQL condition selecting memories in one of ``scopes`` (none: nothing)."""
    if not scopes:
        return "1 = 0", []
    p = f"{alias}."
    cond = " OR ".join(f"({p}scope_kind = ? AND {p}scope_id = ?)" for _ in scopes)
    params: list[Any] = []
    for s in scopes:
        params += [s.kind, s.id]
    return f"({cond})", params


async def _grant(db: Executor, actor: MemoryActor, space: str) -> tuple[bool, bool] | None:
    """The actor's ``(read, write)`` on ``space``; None if the space does not exist."""
    row = await db.fetchone(
        "SELECT s.name, g.can_read, g.can_write FROM memory_spaces s"
        " LEFT JOIN memory_grants g ON g.org_id = s.org_id AND g.space = s.name AND g.grantee = ?"
        " WHERE s.org_id = ? AND s.name = ?",
        (actor.grantee, actor.org_id, space),
    )
    if row is None:
        return None
    return bool(row[1]), bool(row[2])


async def check_access(db: Executor, actor: MemoryActor, scope: Scope, access: Access) -> None:
    """Raise ``MemoryDenied`` unless ``actor`` may ``access`` (read, write, delete) ``scope``
    (``NotFound`` for a space that does not exist)."""
    if scope.kind == "space":
        rights = await _grant(db, actor, scope.id)
        if rights is None:
            raise NotFound(
                f"no memory space {scope.id!r}",
                code="space_not_found",
                hint="declare it under memory.spaces in elevenfactor.yaml, or grant access to it",
            )
        if actor.admin:
            return
        can_read, can_write = rights
        allowed = can_read if access == "read" else can_write
        if not allowed:
            raise MemoryDenied(
                f"{actor.label} has no {'read' if access == 'read' else 'write'} grant on memory"
                f" space {scope.id!r}",
                hint=f"grant it: memory.spaces.{scope.id}.grants.{actor.grantee} in"
                " elevenfactor.yaml",
            )
        return
    if actor.admin and access != "write":
        return
    own = actor.user_id if scope.kind == "user" else actor.agent
    if scope.id != own:
        what = "user" if scope.kind == "user" else "agent"
        raise MemoryDenied(
            f"{actor.label} may not {access} the memory of {what} {scope.id!r}",
            hint=f"a {what}'s memory is used only by runs acting for that {what}",
        )


async def default_scopes(db: Executor, actor: MemoryActor) -> list[Scope]:
    """What ``actor`` reads when it names no scope: its user's memory, its agent's, and every
    space it may read (an admin acting directly: every space of its organisation)."""
    scopes = [Scope.user(actor.user_id)]
    if actor.agent is not None:
        scopes.append(Scope.agent(actor.agent))
    if actor.admin:
        rows = await db.fetchall(
            "SELECT name FROM memory_spaces WHERE org_id = ? ORDER BY name", (actor.org_id,)
        )
    else:
        rows = await db.fetchall(
            "SELECT space FROM memory_grants WHERE org_id = ? AND grantee = ? AND can_read = 1"
            " ORDER BY space",
            (actor.org_id, actor.grantee),
        )
    scopes += [Scope.space(r[0]) for r in rows]
    return scopes
