"""Kill switches: an admin stops every new model call of a key, user, team, agent or run at once.

A switch is recorded with who pulled it, when and why (and a ledger entry); it stays until it is
lifted explicitly (``unkill``, again with who and why). Gates check switches from a cache
refreshed every second, and at once after a change made through the same process.

``kill`` returns the queued and running runs the switch covers; the caller (the runtime, which
governance does not import) cancels them. Parked runs (waiting for an approval or a timer) stay
parked: they make no calls while parked, and the switch refuses their calls if they resume.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from typing import Any

from elevenfactor.errors import NotFound, RequestError
from elevenfactor.governance._budgets import changed, now, parse_scope, resolve_scope
from elevenfactor.governance._ledger import append_entry
from elevenfactor.governance._names import check_text
from elevenfactor.governance._principal import Principal
from elevenfactor.governance._windows import iso
from elevenfactor.store import Executor, Store

__all__ = ["KILL_KINDS", "KillSwitch", "Killed", "kill", "list_kills", "unkill"]

KILL_KINDS = ("key", "user", "team", "agent", "run")
KILL_COLUMNS = (
    "id, org_id, scope, kind, target, reason, created_by, created_at, lifted_by, lifted_at,"
    " lift_reason"
)


@dataclass(frozen=True, slots=True)
class KillSwitch:
    """A kill switch; ``lifted_at`` is set once it is undone."""

    id: str
    org_id: str
    scope: str
    kind: str
    target: str
    reason: str
    created_by: str
    created_at: float
    lifted_by: str | None = None
    lifted_at: float | None = None
    lift_reason: str | None = None

    @property
    def active(self) -> bool:
        """Not lifted."""
        return self.lifted_at is None

    def to_dict(self) -> dict[str, Any]:
        """The switch as the API shows it."""
        return {
            "id": self.id,
            "object": "kill_switch",
            "scope": self.scope,
            "reason": self.reason,
            "created_by": self.created_by,
            "created_at": self.created_at,
            "active": self.active,
            "lifted_by": self.lifted_by,
            "lifted_at": self.lifted_at,
            "lift_reason": self.lift_reason,
        }

    def describe(self) -> str:
        """``key:laptop was stopped by user:root at 2026-12-01T10:00:00Z: leaked``."""
        return (
            f"{self.scope} was stopped by user:{self.created_by} at {iso(self.created_at)}:"
            f" {self.reason}"
        )


@dataclass(frozen=True, slots=True)
class Killed:
    """What ``kill`` did: the switch (new, or the one already active) and the ids of the queued
    and running runs it covers, for the caller to cancel."""

    switch: KillSwitch
    runs: tuple[str, ...]
    created: bool

    def to_dict(self) -> dict[str, Any]:
        """The switch with ``runs`` (the runs to cancel)."""
        return {**self.switch.to_dict(), "runs": list(self.runs)}


def kill_from_row(r: Any) -> KillSwitch:
    """A ``KillSwitch`` from a row of ``KILL_COLUMNS``."""
    return KillSwitch(*r)


async def _resolve(db: Executor, org_id: str, scope: str) -> tuple[str, str, str]:
    kind, name = parse_scope(scope, kinds=KILL_KINDS, run_ids=True)
    if kind == "run":
        row = await db.fetchone("SELECT id FROM runs WHERE id = ? AND org_id = ?", (name, org_id))
        if row is None:
            raise NotFound(f"scope run:{name}: no run {name!r} in this organisation")
        return kind, f"run:{name}", name
    canonical, target = await resolve_scope(db, org_id, kind, name)
    return kind, canonical, target


_RUN_COLUMN = {"key": "key_id", "user": "user_id", "team": "team_id", "agent": "program"}


async def _runs_covered(db: Executor, org_id: str, kind: str, target: str) -> tuple[str, ...]:
    column = "id" if kind == "run" else _RUN_COLUMN[kind]
    rows = await db.fetchall(
        f"SELECT id FROM runs WHERE org_id = ? AND {column} = ?"
        " AND status IN ('queued', 'running') ORDER BY created_at",
        (org_id, target),
    )
    return tuple(str(r[0]) for r in rows)


async def kill(db: Store, principal: Principal, scope: str, reason: str) -> Killed:
    """Stop every new call covered by ``scope`` (``key:NAME``, ``user:NAME``, ``team:NAME``,
    ``agent:NAME`` or ``run:ID``) until ``unkill``. Idempotent: a scope already stopped keeps
    its switch (and reason)."""
    principal.require_admin("pulling a kill switch")
    _check_reason(reason)
    async with db.transaction() as tx:
        kind, canonical, target = await _resolve(tx, principal.org_id, scope)
        row = await tx.fetchone(
            f"SELECT {KILL_COLUMNS} FROM kill_switches WHERE org_id = ? AND kind = ?"
            " AND target = ? AND lifted_at IS NULL",
            (principal.org_id, kind, target),
        )
        created = row is None
        if row is None:
            switch = KillSwitch(
                "kill_" + uuid.uuid4().hex[:16],
                principal.org_id,
                canonical,
                kind,
                target,
                reason,
                principal.user_name,
                now(),
            )
            await tx.execute(
                f"INSERT INTO kill_switches ({KILL_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?,"
                " NULL, NULL, NULL)",
                (
                    switch.id,
                    switch.org_id,
                    switch.scope,
                    kind,
                    target,
                    reason,
                    switch.created_by,
                    switch.created_at,
                ),
            )
            await append_entry(tx, "admin.kill", switch.id, principal.actor(), switch.to_dict())
        else:
            switch = kill_from_row(row)
        runs = await _runs_covered(tx, principal.org_id, kind, target)
    changed()
    return Killed(switch, runs, created)


async def unkill(db: Store, principal: Principal, ident: str, reason: str) -> KillSwitch:
    """Lift the active switch whose id or scope is ``ident``."""
    principal.require_admin("lifting a kill switch")
    _check_reason(reason)
    async with db.transaction() as tx:
        row = await tx.fetchone(
            f"SELECT {KILL_COLUMNS} FROM kill_switches WHERE org_id = ? AND lifted_at IS NULL"
            " AND (id = ? OR scope = ?)",
            (principal.org_id, ident, ident),
        )
        if row is None:
            raise NotFound(
                f"no active kill switch {ident!r}", hint="`elevenfactor kills` lists them"
            )
        switch = kill_from_row(row)
        ts = now()
        await tx.execute(
            "UPDATE kill_switches SET lifted_by = ?, lifted_at = ?, lift_reason = ?"
            " WHERE id = ? AND org_id = ?",
            (principal.user_name, ts, reason, switch.id, principal.org_id),
        )
        await append_entry(
            tx,
            "admin.unkill",
            switch.id,
            principal.actor(),
            {"scope": switch.scope, "reason": reason},
        )
    changed()
    return replace(switch, lifted_by=principal.user_name, lifted_at=ts, lift_reason=reason)


async def list_kills(
    db: Executor, principal: Principal, *, include_lifted: bool = False
) -> list[KillSwitch]:
    """The organisation's active switches (and lifted ones too with ``include_lifted``), newest
    first."""
    principal.require_admin("listing kill switches")
    cond = "" if include_lifted else " AND lifted_at IS NULL"
    rows = await db.fetchall(
        f"SELECT {KILL_COLUMNS} FROM kill_switches WHERE org_id = ?{cond} ORDER BY created_at DESC",
        (principal.org_id,),
    )
    return [kill_from_row(r) for r in rows]


def _check_reason(reason: str) -> None:
    if not isinstance(reason, str) or not reason.strip():
        raise RequestError(
            "a reason is required", code="missing_required_parameter", param="reason"
        )
    check_text(reason, "reason", 1000)
