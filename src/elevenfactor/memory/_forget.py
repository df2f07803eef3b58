"""``forget_user``: erase what memory holds of one user, physically, with a ledger record.

It deletes, in one transaction: every memory of the user's scope; every memory written on the
user's behalf in an agent's scope or a shared space (facts drawn from the user's conversations
are copies of the user's data); the vectors with them (they are columns of those rows); the
user's sessions and their messages; and the space grants naming the user. Nothing is flagged
or kept. Memory keeps no other copy (no cache of vectors or texts).

The admin action is a ledger entry: who (the admin), whom (the user id) and how many rows of
each kind went, never the forgotten content.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from elevenfactor.governance import Principal, append_entry, check_id
from elevenfactor.store import Store

__all__ = ["Forgotten", "forget_user"]


@dataclass(frozen=True, slots=True)
class Forgotten:
    """What ``forget_user`` removed: counts only."""

    user_id: str
    memories: int
    derived_memories: int
    sessions: int
    messages: int
    grants: int

    def to_dict(self) -> dict[str, Any]:
        """The counts as JSON."""
        return asdict(self)


async def forget_user(store: Store, admin: Principal, user_id: str) -> Forgotten:
    """Delete every memory, session, message and grant of ``user_id`` in the admin's
    organisation (see the module docstring); recorded in the ledger with the counts."""
    admin.require_admin("forgetting a user's memory")
    check_id(user_id, "user")
    org = admin.org_id
    async with store.transaction() as tx:
        own = await tx.execute(
            "DELETE FROM memories WHERE org_id = ? AND scope_kind = 'user' AND scope_id = ?",
            (org, user_id),
        )
        derived = await tx.execute(
            "DELETE FROM memories WHERE org_id = ? AND user_id = ?", (org, user_id)
        )
        messages = await tx.execute(
            "DELETE FROM session_messages WHERE org_id = ? AND session_id IN"
            " (SELECT id FROM sessions WHERE org_id = ? AND user_id = ?)",
            (org, org, user_id),
        )
        sessions = await tx.execute(
            "DELETE FROM sessions WHERE org_id = ? AND user_id = ?", (org, user_id)
        )
        grants = await tx.execute(
            "DELETE FROM memory_grants WHERE org_id = ? AND grantee = ?",
            (org, f"user:{user_id}"),
        )
        # Links from surviving versions to deleted ones would name rows that are gone.
        await tx.execute(
            "UPDATE memories SET supersedes = NULL WHERE org_id = ? AND supersedes IS NOT NULL"
            " AND supersedes NOT IN (SELECT id FROM memories WHERE org_id = ?)",
            (org, org),
        )
        done = Forgotten(user_id, own, derived, sessions, messages, grants)
        await append_entry(tx, "admin.memory.forget_user", user_id, admin.actor(), done.to_dict())
    return done
