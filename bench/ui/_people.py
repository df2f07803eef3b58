"""The seeded store's organisations, teams, users, keys, budgets and kill switches, made with the
project's own functions (so their rows and ledger entries are what the product writes)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from bench.ui._plan import GROUPS, ORGS, TEAMS, USERS, Person
from elevenfactor.governance import (
    Principal,
    create_key,
    create_team,
    create_user,
    kill,
    local_admin,
    principal_for_key,
    set_budget,
    unkill,
)
from elevenfactor.store import Store

__all__ = ["Cast", "Member", "make_people"]


@dataclass(frozen=True, slots=True)
class Member:
    """A seeded user: its principal (as its key resolves it) and the key's secret."""

    person: Person
    principal: Principal
    secret: str

    @property
    def owner(self) -> tuple[str, str | None, str, str | None]:
        """The owner columns of what it creates."""
        return self.principal.owner()

    @property
    def actor(self) -> dict[str, Any]:
        """How it appears in the ledger."""
        return self.principal.actor()


@dataclass(slots=True)
class Cast:
    """Everyone in the seeded store, by name."""

    members: dict[str, Member] = field(default_factory=dict)

    def of_org(self, org_id: str) -> list[Member]:
        """The members of one organisation."""
        return [m for m in self.members.values() if m.principal.org_id == org_id]

    def secrets(self) -> dict[str, str]:
        """Key secrets by user name (kept in the cache's metadata: the bench signs in with
        them)."""
        return {name: m.secret for name, m in self.members.items()}


def _admin_of(org_id: str) -> Principal:
    if org_id == "org_default":
        return local_admin("cli")
    return Principal(
        org_id=org_id, user_id="system", user_name="seed", roles=frozenset({"admin"}), via="cli"
    )


async def make_people(store: Store) -> Cast:
    """Organisations, teams, users (each with a key), budgets and kill switches."""
    for org_id, name in ORGS:
        await store.execute(
            "INSERT INTO orgs (id, name, created_at) VALUES (?, ?, ?) ON CONFLICT (id) DO NOTHING",
            (org_id, name, time.time()),
        )
    for org_id, name, shares in TEAMS:
        await create_team(store, _admin_of(org_id), name, shares=shares)
    cast = Cast()
    for person in USERS:
        admin = _admin_of(person.org_id)
        roles = ("member", *person.roles) if "member" not in person.roles else person.roles
        groups = tuple(g for g in person.groups if g in GROUPS)
        await create_user(
            store, admin, person.name, team=person.team, roles=roles, groups=groups,
            kind=person.kind,
        )  # fmt: skip
        _, secret = await create_key(store, admin, f"key-{person.name}", user=person.name)
        principal = await principal_for_key(store, secret)
        assert principal is not None
        cast.members[person.name] = Member(person, principal, secret)
    await _budgets(store)
    await _kills(store)
    return cast


async def _budgets(store: Store) -> None:
    default, acme = _admin_of("org_default"), _admin_of("org_acme")
    await set_budget(store, default, "org", 5000, window="month", alerts=(0.5, 0.8))
    await set_budget(store, default, "team:support", 60, window="day", alerts=(0.9,))
    await set_budget(store, default, "user:mia", 250, window="month")
    await set_budget(store, default, "agent:research", 400, window="week", soft=True)
    await set_budget(store, default, "model:gpt-4o", 1500, window="month")
    await set_budget(store, default, "run", 2, window="run", on_exceed="approve:finance")
    await set_budget(store, acme, "org", 1200, window="month", alerts=(0.8,))
    await set_budget(store, acme, "user:svc-etl", 20, window="day")


async def _kills(store: Store) -> None:
    default, acme = _admin_of("org_default"), _admin_of("org_acme")
    await kill(store, default, "agent:legacy-bot", "retired: answers from a stale index")
    await kill(store, default, "key:key-uma", "key pasted in a public issue")
    await kill(store, default, "team:research", "runaway loop in the crawler")
    await unkill(store, default, "team:research", "loop fixed in release 42")
    await kill(store, default, "user:olga", "on leave")
    await unkill(store, default, "user:olga", "back")
    await kill(store, acme, "agent:scraper", "terms of service review")
