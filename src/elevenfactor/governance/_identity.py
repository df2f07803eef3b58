"""Organisations' teams, users and service accounts, their roles and reviewer groups.

Every function takes the acting ``Principal``: it must be an admin, it acts inside its own
organisation only (the store queries say so), and each change is recorded in the ledger with who,
when and what, in the same transaction.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from elevenfactor.errors import NotFound, RequestError
from elevenfactor.governance._ledger import append_entry
from elevenfactor.governance._names import check_name
from elevenfactor.governance._principal import ROLES, Principal
from elevenfactor.store import Executor, Store

__all__ = [
    "Team",
    "User",
    "create_team",
    "create_user",
    "disable_user",
    "ensure_service_account",
    "get_user",
    "list_teams",
    "list_users",
    "update_user",
]


@dataclass(frozen=True, slots=True)
class Team:
    """A team of an organisation; ``shares`` lets members see each other's runs."""

    id: str
    org_id: str
    name: str
    shares: bool
    created_at: float

    def to_dict(self) -> dict[str, Any]:
        """The team as the API shows it."""
        return {
            "id": self.id,
            "object": "team",
            "name": self.name,
            "shares": self.shares,
            "created_at": self.created_at,
        }


@dataclass(frozen=True, slots=True)
class User:
    """A user or service account with its roles and reviewer groups."""

    id: str
    org_id: str
    team: str | None
    name: str
    kind: str
    roles: tuple[str, ...]
    groups: tuple[str, ...]
    created_at: float
    disabled_at: float | None

    def to_dict(self) -> dict[str, Any]:
        """The user as the API shows it."""
        return {
            "id": self.id,
            "object": "user",
            "name": self.name,
            "kind": self.kind,
            "team": self.team,
            "roles": list(self.roles),
            "groups": list(self.groups),
            "created_at": self.created_at,
            "disabled_at": self.disabled_at,
        }


def _check_roles(roles: Iterable[str]) -> tuple[str, ...]:
    out = tuple(dict.fromkeys(roles))
    for role in out:
        if role not in ROLES:
            raise RequestError(
                f"unknown role {role!r}", param="role", hint=f"one of {', '.join(ROLES)}"
            )
    return out or ("member",)


async def _team_id(db: Executor, org_id: str, name: str | None) -> str | None:
    if name is None:
        return None
    row = await db.fetchone("SELECT id FROM teams WHERE org_id = ? AND name = ?", (org_id, name))
    if row is None:
        raise NotFound(f"no team {name!r}", hint="create it with `elevenfactor teams create NAME`")
    return str(row[0])


async def create_team(store: Store, actor: Principal, name: str, *, shares: bool) -> Team:
    """Create a team in the actor's organisation."""
    actor.require_admin("creating a team")
    check_name(name, "name")
    team = Team("team_" + uuid.uuid4().hex[:16], actor.org_id, name, shares, time.time())
    async with store.transaction() as tx:
        if await tx.fetchone(
            "SELECT 1 FROM teams WHERE org_id = ? AND name = ?", (actor.org_id, name)
        ):
            raise RequestError(f"team {name!r} exists", code="conflict", status=409, param="name")
        await tx.execute(
            "INSERT INTO teams (id, org_id, name, shares, created_at) VALUES (?, ?, ?, ?, ?)",
            (team.id, team.org_id, name, int(shares), team.created_at),
        )
        await append_entry(tx, "admin.team.create", team.id, actor.actor(), team.to_dict())
    return team


async def list_teams(store: Store, actor: Principal) -> list[Team]:
    """The organisation's teams."""
    actor.require_admin("listing teams")
    rows = await store.fetchall(
        "SELECT id, org_id, name, shares, created_at FROM teams WHERE org_id = ? ORDER BY name",
        (actor.org_id,),
    )
    return [Team(r[0], r[1], r[2], bool(r[3]), r[4]) for r in rows]


_USER_SQL = (
    "SELECT u.id, u.org_id, t.name, u.name, u.kind, u.roles, u.created_at, u.disabled_at"
    " FROM users u LEFT JOIN teams t ON t.id = u.team_id"
)


async def _load(db: Executor, rows: Sequence[tuple[Any, ...]]) -> list[User]:
    out = []
    for r in rows:
        groups = await db.fetchall(
            "SELECT group_name FROM group_members WHERE user_id = ? ORDER BY group_name", (r[0],)
        )
        out.append(
            User(
                r[0],
                r[1],
                r[2],
                r[3],
                r[4],
                tuple(x for x in r[5].split(",") if x),
                tuple(g[0] for g in groups),
                r[6],
                r[7],
            )
        )
    return out


async def get_user(db: Executor, actor: Principal, ident: str) -> User:
    """The user of the actor's organisation whose name or id is ``ident``."""
    rows = await db.fetchall(
        f"{_USER_SQL} WHERE u.org_id = ? AND (u.name = ? OR u.id = ?)",
        (actor.org_id, ident, ident),
    )
    if not rows:
        raise NotFound(f"no user {ident!r}", hint="`elevenfactor users list` shows them")
    return (await _load(db, rows[:1]))[0]


async def list_users(store: Store, actor: Principal) -> list[User]:
    """The organisation's users and service accounts."""
    actor.require_admin("listing users")
    rows = await store.fetchall(f"{_USER_SQL} WHERE u.org_id = ? ORDER BY u.name", (actor.org_id,))
    return await _load(store, rows)


async def _set_groups(db: Executor, org_id: str, user_id: str, groups: Iterable[str]) -> None:
    await db.execute("DELETE FROM group_members WHERE user_id = ?", (user_id,))
    for group in dict.fromkeys(groups):
        check_name(group, "group")
        await db.execute(
            "INSERT INTO group_members (org_id, group_name, user_id) VALUES (?, ?, ?)",
            (org_id, group, user_id),
        )


async def create_user(
    store: Store,
    actor: Principal,
    name: str,
    *,
    team: str | None = None,
    roles: Sequence[str] = ("member",),
    groups: Sequence[str] = (),
    kind: str = "user",
) -> User:
    """Create a user (or, with ``kind="service"``, a service account)."""
    actor.require_admin("creating a user")
    check_name(name, "name")
    role_t = _check_roles(roles)
    uid = ("user_" if kind == "user" else "svc_") + uuid.uuid4().hex[:16]
    async with store.transaction() as tx:
        if await tx.fetchone(
            "SELECT 1 FROM users WHERE org_id = ? AND name = ?", (actor.org_id, name)
        ):
            raise RequestError(f"user {name!r} exists", code="conflict", status=409, param="name")
        team_id = await _team_id(tx, actor.org_id, team)
        await tx.execute(
            "INSERT INTO users (id, org_id, team_id, name, kind, roles, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (uid, actor.org_id, team_id, name, kind, ",".join(role_t), time.time()),
        )
        await _set_groups(tx, actor.org_id, uid, groups)
        user = await get_user(tx, actor, uid)
        await append_entry(tx, "admin.user.create", uid, actor.actor(), user.to_dict())
    return user


async def ensure_service_account(tx: Executor, actor: Principal, name: str) -> User:
    """The service account called ``name``, created (as a member) if there is none."""
    check_name(name, "name")
    try:
        user = await get_user(tx, actor, name)
    except NotFound:
        uid = "svc_" + uuid.uuid4().hex[:16]
        await tx.execute(
            "INSERT INTO users (id, org_id, team_id, name, kind, roles, created_at)"
            " VALUES (?, ?, NULL, ?, 'service', 'member', ?)",
            (uid, actor.org_id, name, time.time()),
        )
        user = await get_user(tx, actor, uid)
        await append_entry(tx, "admin.user.create", uid, actor.actor(), user.to_dict())
    return user


async def update_user(
    store: Store,
    actor: Principal,
    ident: str,
    *,
    team: str | None = None,
    clear_team: bool = False,
    roles: Sequence[str] | None = None,
    groups: Sequence[str] | None = None,
    enabled: bool | None = None,
) -> User:
    """Change a user's team, roles, groups, or whether it is enabled (None: unchanged)."""
    actor.require_admin("updating a user")
    async with store.transaction() as tx:
        user = await get_user(tx, actor, ident)
        changes: dict[str, Any] = {}
        if team is not None or clear_team:
            team_id = None if clear_team else await _team_id(tx, actor.org_id, team)
            await tx.execute("UPDATE users SET team_id = ? WHERE id = ?", (team_id, user.id))
            changes["team"] = None if clear_team else team
        if roles is not None:
            role_t = _check_roles(roles)
            if user.id == actor.user_id and "admin" not in role_t:
                raise RequestError(
                    "an admin cannot remove its own admin role",
                    code="conflict",
                    status=409,
                    param="role",
                    hint="let another admin do it",
                )
            await tx.execute("UPDATE users SET roles = ? WHERE id = ?", (",".join(role_t), user.id))
            changes["roles"] = list(role_t)
        if groups is not None:
            await _set_groups(tx, actor.org_id, user.id, groups)
            changes["groups"] = list(dict.fromkeys(groups))
        if enabled is False and user.id == actor.user_id:
            raise RequestError(
                "an admin cannot disable itself",
                code="conflict",
                status=409,
                param="enabled",
                hint="let another admin do it",
            )
        if enabled is not None:
            await tx.execute(
                "UPDATE users SET disabled_at = ? WHERE id = ?",
                (None if enabled else time.time(), user.id),
            )
            changes["enabled"] = enabled
        await append_entry(tx, "admin.user.update", user.id, actor.actor(), changes)
        return await get_user(tx, actor, user.id)


async def disable_user(store: Store, actor: Principal, ident: str) -> User:
    """Disable a user: its keys stop working at once (within the key cache's TTL)."""
    return await update_user(store, actor, ident, enabled=False)
