"""``memory``: list, search and forget what agents remember, and list sessions.

Every command acts as a user of the default organisation (``--as USER``, default ``local``, the
built-in administrator): a member sees its own memory and sessions, an admin its organisation's.
``--user``, ``--agent`` and ``--space`` pick the scopes (repeatable; none: the acting user's own
memory and the spaces it may read).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from elevenfactor.cli._admin import as_option, run_as
from elevenfactor.cli._common import (
    config_option,
    console,
    handle_errors,
    json_option,
    print_json,
    print_table,
    project_from,
    settings_from,
    when,
)
from elevenfactor.context._embed_registry import open_embedders
from elevenfactor.errors import NotFound
from elevenfactor.governance import Principal, get_user
from elevenfactor.memory import (
    Forgotten,
    Memory,
    MemoryActor,
    Recalled,
    Scope,
    SessionInfo,
    forget_user,
    grant,
    list_grants,
    list_memories,
    list_sessions,
    purge_expired,
    recall,
    revoke,
)
from elevenfactor.models import open_response_cache
from elevenfactor.store import Store

__all__ = ["memory"]


@click.group(name="memory")
def memory() -> None:
    """Long-term memory: list, search and forget what agents remember."""


scope_options = [
    click.option("--user", "users", multiple=True, metavar="USER", help="A user's memory."),
    click.option("--agent", "agents", multiple=True, metavar="AGENT", help="An agent's memory."),
    click.option("--space", "spaces", multiple=True, metavar="SPACE", help="A shared space."),
]


def _scoped(fn: Any) -> Any:
    for option in reversed(scope_options):
        fn = option(fn)
    return fn


async def _user_id(store: Store, actor: Principal, name: str) -> str:
    """The id of user ``name`` (a name or an id); an id that names no user is taken as is."""
    try:
        return (await get_user(store, actor, name)).id
    except NotFound:
        return name


async def _scopes(
    store: Store,
    actor: Principal,
    users: Sequence[str],
    agents: Sequence[str],
    spaces: Sequence[str],
) -> list[Scope] | None:
    scopes = [Scope.user(await _user_id(store, actor, u)) for u in users]
    scopes += [Scope.agent(a) for a in agents] + [Scope.space(s) for s in spaces]
    return scopes or None


def _short(text: str, width: int = 60) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _memory_rows(found: Sequence[Memory]) -> list[list[Any]]:
    return [
        [m.id, str(m.scope), m.kind, m.key or "", _short(m.text), f"{m.importance:.2f}",
         when(m.created_at), "" if m.superseded_by is None else "superseded"]
        for m in found
    ]  # fmt: skip


_MEMORY_COLUMNS = ["id", "scope", "kind", "key", "text", "importance", "created", "state"]


@memory.command("list")
@_scoped
@click.option("--kind", type=click.Choice(["fact", "preference"]), default=None)
@click.option("--all", "include_inactive", is_flag=True, help="Superseded and expired too.")
@click.option("--limit", type=click.IntRange(1, 10000), default=100, show_default=True)
@json_option
@as_option
@config_option
@handle_errors
def list_command(
    users: tuple[str, ...],
    agents: tuple[str, ...],
    spaces: tuple[str, ...],
    kind: str | None,
    include_inactive: bool,
    limit: int,
    as_json: bool,
    as_user: str,
    config: Path | None,
) -> None:
    """Memories, newest first.

    Example: elevenfactor memory list --user alice --space team-notes
    """

    async def main(store: Store, principal: Principal) -> list[Memory]:
        scopes = await _scopes(store, principal, users, agents, spaces)
        return await list_memories(
            store,
            MemoryActor(principal),
            scopes,
            kind=kind,
            include_inactive=include_inactive,
            limit=limit,
        )

    found = run_as(config, as_user, main)
    if as_json:
        print_json([m.to_dict() for m in found])
        return
    print_table("memories", _MEMORY_COLUMNS, _memory_rows(found))


@memory.command("search")
@click.argument("query")
@_scoped
@click.option("-k", "k", type=click.IntRange(1, 100), default=None, help="Most results.")
@click.option("--min-score", type=click.FloatRange(-1, 1), default=None)
@json_option
@as_option
@config_option
@handle_errors
def search_command(
    query: str,
    users: tuple[str, ...],
    agents: tuple[str, ...],
    spaces: tuple[str, ...],
    k: int | None,
    min_score: float | None,
    as_json: bool,
    as_user: str,
    config: Path | None,
) -> None:
    """Recall: memories ranked by similarity, recency and importance.

    Example: elevenfactor memory search "favourite colour" --user alice
    """
    project = project_from(settings_from(config))

    async def main(store: Store, principal: Principal) -> list[Recalled]:
        embedders = open_embedders(project)
        try:
            return await recall(
                store,
                embedders.get(project.memory.embedder),
                MemoryActor(principal),
                query,
                await _scopes(store, principal, users, agents, spaces),
                k,
                min_score,
                config=project.memory,
            )
        finally:
            await embedders.aclose()

    found = run_as(config, as_user, main)
    if as_json:
        print_json([r.to_dict() for r in found])
        return
    rows = _memory_rows([r.memory for r in found])
    print_table(
        "recalled",
        ["score", *_MEMORY_COLUMNS],
        [[f"{r.score:.3f}", *row] for r, row in zip(found, rows, strict=True)],
    )


@memory.command("forget")
@click.option("--user", "user", required=True, metavar="USER", help="The user (name or id).")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@json_option
@as_option
@config_option
@handle_errors
def forget_command(user: str, yes: bool, as_json: bool, as_user: str, config: Path | None) -> None:
    """Erase what memory holds of a user: its memories, those written on its behalf, its
    sessions and messages, its space grants, the semantic cache's answers to its questions and
    the response cache's answers to its calls (in the store, and in Redis when REDIS_URL is
    set; admins only; recorded in the ledger).

    Example: elevenfactor memory forget --user alice --yes
    """
    if not yes:
        click.confirm(f"Permanently delete every memory and session of user {user!r}?", abort=True)
    settings = settings_from(config)

    async def main(store: Store, principal: Principal) -> Forgotten:
        principal.require_admin("forgetting a user's memory")
        uid = await _user_id(store, principal, user)
        cache = open_response_cache(settings, store)
        try:
            return await forget_user(store, principal, uid, cache=cache)
        finally:
            await cache.aclose()

    done = run_as(config, as_user, main)
    if as_json:
        print_json(done.to_dict())
        return
    console.print(
        f"forgot user {done.user_id}: {done.memories} memories of its own,"
        f" {done.derived_memories} written on its behalf, {done.sessions} sessions"
        f" ({done.messages} messages), {done.grants} grants,"
        f" {done.cache_entries} semantic cache entries,"
        f" {done.response_cache_entries} response cache entries",
        highlight=False,
    )


@memory.command("sessions")
@click.option("--user", "user", default=None, metavar="USER", help="Only this user's (admins).")
@click.option("--limit", type=click.IntRange(1, 10000), default=100, show_default=True)
@json_option
@as_option
@config_option
@handle_errors
def sessions_command(
    user: str | None, limit: int, as_json: bool, as_user: str, config: Path | None
) -> None:
    """Sessions, most recently updated first."""

    async def main(store: Store, principal: Principal) -> list[SessionInfo]:
        uid = await _user_id(store, principal, user) if user is not None else None
        return await list_sessions(store, principal, user_id=uid, limit=limit)

    found = run_as(config, as_user, main)
    if as_json:
        print_json([s.to_dict() for s in found])
        return
    print_table(
        "sessions",
        ["id", "user", "messages", "created", "updated"],
        [[s.id, s.user_id, s.messages, when(s.created_at), when(s.updated_at)] for s in found],
    )


@memory.command("grants")
@click.option("--space", default=None, metavar="SPACE", help="Only this space's grants.")
@json_option
@as_option
@config_option
@handle_errors
def grants_command(space: str | None, as_json: bool, as_user: str, config: Path | None) -> None:
    """Who may read and write each shared space (admins only)."""
    found = run_as(config, as_user, lambda s, p: list_grants(s, p, space))
    if as_json:
        print_json([g.to_dict() for g in found])
        return
    print_table(
        "memory grants",
        ["space", "grantee", "read", "write", "source"],
        [[g.space, g.grantee, g.read, g.write, g.source] for g in found],
    )


@memory.command("grant")
@click.argument("space")
@click.argument("agent")
@click.option("--read/--no-read", default=True, show_default=True)
@click.option("--write/--no-write", default=False, show_default=True)
@json_option
@as_option
@config_option
@handle_errors
def grant_command(
    space: str,
    agent: str,
    read: bool,
    write: bool,
    as_json: bool,
    as_user: str,
    config: Path | None,
) -> None:
    """Let AGENT (or user:ID) read and/or write SPACE (admins only; recorded in the ledger).

    Example: elevenfactor memory grant team-notes writer-agent --write
    """
    done = run_as(config, as_user, lambda s, p: grant(s, p, space, agent, read, write))
    if as_json:
        print_json(done.to_dict())
        return
    console.print(
        f"{done.grantee} on {done.space}: read={done.read} write={done.write}", highlight=False
    )


@memory.command("revoke")
@click.argument("space")
@click.argument("agent")
@as_option
@config_option
@handle_errors
def revoke_command(space: str, agent: str, as_user: str, config: Path | None) -> None:
    """Take every right on SPACE from AGENT (admins only; recorded in the ledger)."""
    gone = run_as(config, as_user, lambda s, p: revoke(s, p, space, agent))
    console.print(f"revoked {agent} on {space}" if gone else f"{agent} had no grant on {space}")


@memory.command("purge")
@json_option
@as_option
@config_option
@handle_errors
def purge_command(as_json: bool, as_user: str, config: Path | None) -> None:
    """Delete every expired memory (admins only)."""

    async def main(store: Store, principal: Principal) -> int:
        principal.require_admin("purging expired memories")
        return await purge_expired(store)

    count = run_as(config, as_user, main)
    if as_json:
        print_json({"deleted": count})
        return
    console.print(f"deleted {count} expired memories", highlight=False)
