"""Shared memory spaces and their grants: who (an agent, or ``user:ID``) may read or write one.

Spaces and grants live in the store, per organisation. Those declared in the project file
(``memory.spaces``) are written by ``apply_spaces`` (at start-up); ``grant`` and ``revoke`` are
the administrative changes. Every change needs an admin and is a ledger entry.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

from elevenfactor.config._memory import MemoryConfig
from elevenfactor.governance import Principal, append_entry, check_id, check_name, check_text
from elevenfactor.store import Executor, Store

__all__ = ["Grant", "apply_spaces", "grant", "list_grants", "revoke"]


@dataclass(frozen=True, slots=True)
class Grant:
    """What ``grantee`` may do in ``space``; ``source`` is ``config`` or ``admin``."""

    space: str
    grantee: str
    read: bool
    write: bool
    source: str

    def to_dict(self) -> dict[str, Any]:
        """The grant as JSON."""
        return asdict(self)


def _grantee(value: str) -> str:
    if value.startswith("user:"):
        check_id(value[5:], "agent")
        return value
    return check_name(value, "agent")


async def _ensure_space(db: Executor, org_id: str, space: str, description: str = "") -> None:
    await db.execute(
        "INSERT INTO memory_spaces (org_id, name, description, created_at) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (org_id, name) DO NOTHING",
        (org_id, space, description, time.time()),
    )


async def _upsert(
    db: Executor, org_id: str, space: str, grantee: str, read: bool, write: bool, source: str
) -> None:
    await db.execute(
        "INSERT INTO memory_grants (org_id, space, grantee, can_read, can_write, source,"
        " granted_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (org_id, space, grantee)"
        " DO UPDATE SET can_read = excluded.can_read, can_write = excluded.can_write,"
        " source = excluded.source, granted_at = excluded.granted_at",
        (org_id, space, grantee, int(read), int(write), source, time.time()),
    )


async def grant(
    store: Store,
    admin: Principal,
    space: str,
    agent: str,
    read: bool = True,
    write: bool = False,
) -> Grant:
    """Let ``agent`` (or ``user:ID``) read and/or write ``space`` (created if new); granting
    neither right is a revoke."""
    admin.require_admin("granting access to a memory space")
    check_name(space, "space")
    grantee = _grantee(agent)
    if not read and not write:
        await revoke(store, admin, space, grantee)
        return Grant(space, grantee, False, False, "admin")
    async with store.transaction() as tx:
        await _ensure_space(tx, admin.org_id, space)
        await _upsert(tx, admin.org_id, space, grantee, read, write, "admin")
        await append_entry(
            tx,
            "admin.memory.grant",
            f"{space}:{grantee}",
            admin.actor(),
            {"space": space, "grantee": grantee, "read": read, "write": write},
        )
    return Grant(space, grantee, read, write, "admin")


async def revoke(store: Store, admin: Principal, space: str, agent: str) -> bool:
    """Take every right on ``space`` from ``agent``; False if it had none."""
    admin.require_admin("revoking access to a memory space")
    check_name(space, "space")
    grantee = _grantee(agent)
    async with store.transaction() as tx:
        gone = await tx.execute(
            "DELETE FROM memory_grants WHERE org_id = ? AND space = ? AND grantee = ?",
            (admin.org_id, space, grantee),
        )
        if gone:
            await append_entry(
                tx,
                "admin.memory.revoke",
                f"{space}:{grantee}",
                admin.actor(),
                {"space": space, "grantee": grantee},
            )
    return bool(gone)


async def list_grants(db: Executor, admin: Principal, space: str | None = None) -> list[Grant]:
    """The organisation's grants (of one space), by space and grantee."""
    admin.require_admin("listing memory grants")
    sql = "SELECT space, grantee, can_read, can_write, source FROM memory_grants WHERE org_id = ?"
    params: list[Any] = [admin.org_id]
    if space is not None:
        sql += " AND space = ?"
        params.append(space)
    rows = await db.fetchall(sql + " ORDER BY space, grantee", params)
    return [Grant(r[0], r[1], bool(r[2]), bool(r[3]), r[4]) for r in rows]


async def apply_spaces(store: Store, admin: Principal, config: MemoryConfig) -> list[Grant]:
    """Make the store's spaces and ``config`` grants match the project file: declared spaces
    exist, their grants are as declared, and grants the file once declared but no longer does
    are removed (grants an admin made are left alone). Recorded in the ledger if it changed
    anything. Returns the project file's grants."""
    admin.require_admin("applying memory spaces")
    wanted: dict[tuple[str, str], tuple[bool, bool]] = {}
    for space, conf in config.spaces.items():
        check_text(conf.description, "description", 500)
        for agent, rights in conf.grants.items():
            wanted[(space, _grantee(agent))] = ("read" in rights, "write" in rights)
    async with store.transaction() as tx:
        rows = await tx.fetchall(
            "SELECT space, grantee, can_read, can_write FROM memory_grants"
            " WHERE org_id = ? AND source = 'config'",
            (admin.org_id,),
        )
        have = {(r[0], r[1]): (bool(r[2]), bool(r[3])) for r in rows}
        for space, conf in config.spaces.items():
            await _ensure_space(tx, admin.org_id, space, conf.description)
        changes: list[dict[str, Any]] = []
        for (space, grantee), (read, write) in wanted.items():
            if have.get((space, grantee)) != (read, write):
                await _upsert(tx, admin.org_id, space, grantee, read, write, "config")
                changes.append({"space": space, "grantee": grantee, "read": read, "write": write})
        for space, grantee in have.keys() - wanted.keys():
            await tx.execute(
                "DELETE FROM memory_grants WHERE org_id = ? AND space = ? AND grantee = ?"
                " AND source = 'config'",
                (admin.org_id, space, grantee),
            )
            changes.append({"space": space, "grantee": grantee, "read": False, "write": False})
        if changes:
            await append_entry(
                tx, "admin.memory.spaces", "memory.spaces", admin.actor(), {"changes": changes}
            )
    return [Grant(s, g, r, w, "config") for (s, g), (r, w) in wanted.items()]
