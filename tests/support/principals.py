"""Principals for library-level tests (the HTTP tests use real keys instead)."""

from __future__ import annotations

from collections.abc import Sequence

from elevenfactor.governance import (
    DEFAULT_ORG,
    Principal,
    create_key,
    create_team,
    create_user,
    local_admin,
)
from elevenfactor.store import Store


def reviewer(name: str, *groups: str, org: str = DEFAULT_ORG) -> Principal:
    """A reviewer called ``name`` in ``groups``."""
    return Principal(
        org_id=org,
        user_id=f"user_{name}",
        user_name=name,
        roles=frozenset({"member", "reviewer"}),
        groups=frozenset(groups),
    )


def member(name: str, org: str = DEFAULT_ORG) -> Principal:
    """A plain member called ``name``."""
    return Principal(org_id=org, user_id=f"user_{name}", user_name=name)


async def add_people(
    db: Store,
    teams: Sequence[tuple[str, bool]],
    users: Sequence[tuple[str, str | None, tuple[str, ...]]],
    *,
    alien: tuple[str, tuple[str, ...]] | None = ("eve", ("member",)),
) -> dict[str, str]:
    """Teams ``(name, shares)`` and users ``(name, team, roles)`` of the default organisation,
    each with a key, and (``alien``: name and roles) a user of a second organisation ``two``;
    the keys' secrets by user name."""
    admin = local_admin("cli")
    for team, shares in teams:
        await create_team(db, admin, team, shares=shares)
    keys: dict[str, str] = {}
    for name, team_name, roles in users:
        await create_user(db, admin, name, team=team_name, roles=roles)
        _, keys[name] = await create_key(db, admin, f"key-{name}", user=name)
    if alien is not None:
        name, roles = alien
        await db.execute("INSERT INTO orgs (id, name, created_at) VALUES ('org_two', 'two', 0)")
        other = Principal("org_two", "u_root2", "root2", roles=frozenset({"admin"}))
        await create_user(db, other, name, roles=roles)
        _, keys[name] = await create_key(db, other, f"key-{name}", user=name)
    return keys
