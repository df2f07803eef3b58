"""``Principal``: who is acting — resolved once per request, carried into the runtime.

A principal is a user or service account of one organisation, possibly in a team, holding roles
and reviewer-group memberships, and (over HTTP) the API key it authenticated with. Store queries
take it and add its scope to their ``WHERE`` clause, so ownership is checked where rows are read
and written, not only in handlers.

Roles:

- ``member`` calls models, submits runs and reads its own runs (and its team's, where the team
  shares);
- ``reviewer`` is a member that also decides approvals for the reviewer groups it belongs to;
- ``admin`` manages users, keys and teams and sees (and decides) everything in its organisation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from elevenfactor.errors import PermissionDenied

__all__ = [
    "DEFAULT_ORG",
    "LOCAL_USER",
    "ROLES",
    "SYSTEM",
    "Principal",
    "local_admin",
]

ROLES = ("member", "reviewer", "admin")
DEFAULT_ORG = "org_default"
LOCAL_USER = "user_local"


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated actor. ``via`` says how it was established: ``key``, ``dev`` (loopback
    without a key), ``cli`` (an operator with database access) or ``system`` (the runtime).
    ``key_name`` and ``team_name`` are what per-key and per-team rate limits are set by."""

    org_id: str
    user_id: str
    user_name: str
    team_id: str | None = None
    key_id: str | None = None
    roles: frozenset[str] = frozenset({"member"})
    groups: frozenset[str] = frozenset()
    team_shares: bool = False
    via: str = "key"
    unscoped: bool = field(default=False, repr=False)
    key_name: str | None = None
    team_name: str | None = None

    @property
    def is_admin(self) -> bool:
        """Administers its organisation."""
        return "admin" in self.roles

    @property
    def label(self) -> str:
        """How the principal appears in journals and the ledger: ``user:NAME``."""
        return f"user:{self.user_name}"

    def actor(self) -> dict[str, Any]:
        """The principal as journaled: ids, name and how it authenticated."""
        return {
            "org_id": self.org_id,
            "user_id": self.user_id,
            "user": self.user_name,
            "key_id": self.key_id,
            "via": self.via,
        }

    def owner(self) -> tuple[str, str | None, str, str | None]:
        """``(org_id, team_id, user_id, key_id)`` for the owner columns of what it creates."""
        return (self.org_id, self.team_id, self.user_id, self.key_id)

    def scope(self, alias: str = "") -> tuple[str, list[Any]]:
        """A SQL condition (and parameters) selecting the rows this principal may see among
        rows carrying owner columns: its organisation for admins (everything for the system),
        else its own rows and, where its team shares, its team's."""
        p = f"{alias}." if alias else ""
        if self.unscoped:
            return "1 = 1", []
        if self.is_admin:
            return f"{p}org_id = ?", [self.org_id]
        if self.team_shares and self.team_id is not None:
            return (
                f"{p}org_id = ? AND ({p}user_id = ? OR {p}team_id = ?)",
                [self.org_id, self.user_id, self.team_id],
            )
        return f"{p}org_id = ? AND {p}user_id = ?", [self.org_id, self.user_id]

    def require_admin(self, action: str) -> None:
        """Raise ``PermissionDenied`` unless this principal is an admin."""
        if not self.is_admin and not self.unscoped:
            raise PermissionDenied(
                f"{action} needs the admin role; {self.label} has {_roles(self)}",
                hint="ask an admin: `elevenfactor users update NAME --role admin`",
            )

    def may_decide(self, org_id: str | None, group: str | None) -> bool:
        """Whether this principal may decide an approval of ``org_id`` for ``group``: an admin of
        that organisation, or a reviewer in the group (any reviewer when there is no group)."""
        if self.unscoped:
            return True
        if org_id != self.org_id:
            return False
        if self.is_admin:
            return True
        if "reviewer" not in self.roles:
            return False
        return group is None or group in self.groups


def _roles(p: Principal) -> str:
    return ", ".join(sorted(p.roles)) or "no roles"


SYSTEM = Principal(
    org_id=DEFAULT_ORG,
    user_id="system",
    user_name="system",
    roles=frozenset({"admin"}),
    via="system",
    unscoped=True,
)
"""The runtime itself (workers, timers): not limited to one owner."""


def local_admin(via: str = "dev") -> Principal:
    """The built-in ``local`` administrator of the default organisation (dev mode, CLI)."""
    return Principal(
        org_id=DEFAULT_ORG,
        user_id=LOCAL_USER,
        user_name="local",
        roles=frozenset({"admin"}),
        via=via,
    )
