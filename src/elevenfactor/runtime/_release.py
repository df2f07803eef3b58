"""Immutable releases (twelve-factor V): create, find, activate per environment, roll back, and
check the files on disk against one (migration ``m027_releases``).

A release is a frozen manifest (``_release_manifest``); its id is the manifest's SHA-256, so
creating the same manifest again returns the same release. Releases are deployment-wide (no
organisation): creating, activating and rolling back are an admin's acts, each a ledger entry.
An environment's active release is the newest of its switches; ``rollback`` goes back to the
release active before the newest activation still in force (a stack: rolling back twice goes
back two activations).

```python
manifest = await build_manifest(settings, project, store=store)
release, created = await create_release(store, admin, manifest, name="v42")
await activate(store, admin, "production", "v42")
await check_matches_disk(release, settings, project, store=store)  # ReleaseMismatch otherwise
```
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from elevenfactor.config import ProjectConfig, Settings
from elevenfactor.errors import ReleaseMismatch, ReleaseNotFound, RequestError
from elevenfactor.governance import Principal, append_entry
from elevenfactor.runtime._release_diff import Change, describe, diff_manifests
from elevenfactor.runtime._release_manifest import (
    build_manifest,
    canonical_manifest,
    files_hash,
    manifest_id,
)
from elevenfactor.store import Executor, Store

__all__ = [
    "Release",
    "Switch",
    "activate",
    "active_release",
    "applicable_release",
    "check_matches_disk",
    "create_release",
    "diff",
    "get_release",
    "history",
    "list_releases",
    "rollback",
]

NAME = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"
_NAME = re.compile(NAME)
_HEX = re.compile(r"^[0-9a-f]{8,64}$")
_COLS = "id, name, files_hash, created_at, created_by, created_by_id"
_LOCK = 27027


@dataclass(frozen=True, slots=True)
class Release:
    """A stored release; ``manifest`` is None when listed without it."""

    id: str
    name: str | None
    files_hash: str
    created_at: float
    created_by: str
    created_by_id: str | None = None
    manifest: dict[str, Any] | None = None
    environments: tuple[str, ...] = ()
    """The environments where it is active now."""

    @property
    def short(self) -> str:
        """The first 12 hex digits of the id."""
        return self.id[:12]

    @property
    def label(self) -> str:
        """``name (short id)``, or the short id."""
        return f"{self.name} ({self.short})" if self.name else self.short

    def to_dict(self, *, manifest: bool = True) -> dict[str, Any]:
        """The release for machines (with its manifest unless ``manifest`` is False)."""
        out: dict[str, Any] = {
            "id": self.id,
            "object": "release",
            "name": self.name,
            "files_hash": self.files_hash,
            "created_at": self.created_at,
            "created_by": self.created_by,
            "environments": list(self.environments),
        }
        if manifest:
            out["manifest"] = self.manifest
        return out


@dataclass(frozen=True, slots=True)
class Switch:
    """One change of an environment's active release."""

    seq: int
    environment: str
    release_id: str
    previous_id: str | None
    action: str
    """``activate`` or ``rollback``."""
    switched_at: float
    switched_by: str

    def to_dict(self) -> dict[str, Any]:
        """The switch for machines."""
        return {
            "seq": self.seq,
            "environment": self.environment,
            "release_id": self.release_id,
            "previous_id": self.previous_id,
            "action": self.action,
            "switched_at": self.switched_at,
            "switched_by": self.switched_by,
        }


def check_name(name: str, param: str = "name") -> str:
    """``name`` if it is a valid release name (not something an id could be mistaken for)."""
    if not isinstance(name, str) or not _NAME.match(name) or re.fullmatch(r"[0-9a-f]{64}", name):
        raise RequestError(
            f"{name!r} is not a release name",
            code="invalid_value",
            param=param,
            hint="1-64 characters: letters, digits, '_', '.', '-' (not first)",
        )
    return name


def check_environment(env: str) -> str:
    """``env`` if it is a valid environment name."""
    if not isinstance(env, str) or not _NAME.match(env):
        raise RequestError(
            f"{env!r} is not an environment name",
            code="invalid_value",
            param="env",
            hint="1-64 characters: letters, digits, '_', '.', '-' (not first)",
        )
    return env


async def _environments(db: Executor) -> dict[str, list[str]]:
    """Release id -> the environments where it is active."""
    rows = await db.fetchall(
        "SELECT p.environment, p.release_id FROM release_pointers p WHERE p.seq ="
        " (SELECT MAX(q.seq) FROM release_pointers q WHERE q.environment = p.environment)"
        " ORDER BY p.environment"
    )
    out: dict[str, list[str]] = {}
    for env, rid in rows:
        out.setdefault(str(rid), []).append(str(env))
    return out


def _release(row: tuple[Any, ...], envs: dict[str, list[str]], manifest: Any = None) -> Release:
    rid, name, fh, created_at, by, by_id = row[:6]
    return Release(
        str(rid),
        name,
        str(fh),
        float(created_at),
        str(by),
        by_id,
        orjson.loads(manifest) if manifest is not None else None,
        tuple(envs.get(str(rid), ())),
    )


async def get_release(db: Executor, ref: str) -> Release:
    """The release ``ref`` names — its id, its name, or an id prefix of at least 8 hex digits —
    with its manifest; ``ReleaseNotFound`` otherwise (an ambiguous prefix says so)."""
    if not isinstance(ref, str) or not ref.strip():
        raise ReleaseNotFound(
            "a release id or name is required", hint="`elevenfactor release list`"
        )
    ref = ref.strip()
    rows = await db.fetchall(
        f"SELECT {_COLS}, manifest FROM releases WHERE id = ? OR name = ?", (ref, ref)
    )
    row = next((r for r in rows if r[0] == ref), rows[0] if rows else None)
    if row is None and _HEX.match(ref):
        found = await db.fetchall(
            f"SELECT {_COLS}, manifest FROM releases WHERE id LIKE ? ORDER BY id LIMIT 2",
            (ref + "%",),
        )
        if len(found) > 1:
            raise ReleaseNotFound(
                f"{ref!r} is the prefix of several releases' ids", hint="give more hex digits"
            )
        row = found[0] if found else None
    if row is None:
        raise ReleaseNotFound(
            f"no release {ref!r}", hint="`elevenfactor release list` shows ids and names"
        )
    return _release(row, await _environments(db), row[6])


async def list_releases(db: Executor, *, limit: int = 50) -> list[Release]:
    """The newest releases first, without their manifests."""
    rows = await db.fetchall(
        f"SELECT {_COLS} FROM releases ORDER BY created_at DESC, id LIMIT ?", (limit,)
    )
    envs = await _environments(db)
    return [_release(r, envs) for r in rows]


async def create_release(
    store: Store, principal: Principal, manifest: dict[str, Any], *, name: str | None = None
) -> tuple[Release, bool]:
    """Store ``manifest`` as a release (``principal`` must be an admin) and return it, and
    whether it is new. The same manifest again is the same release: nothing is written, except
    that a release without a name takes ``name``. A name another release has, or a second name
    for a named release, is ``release_name_taken`` (409)."""
    principal.require_admin("creating a release")
    if name is not None:
        check_name(name)
    rid, fh, text = manifest_id(manifest), files_hash(manifest), canonical_manifest(manifest)
    async with store.transaction() as tx:
        if store.dialect == "postgresql":
            await tx.execute("SELECT pg_advisory_xact_lock(?)", (_LOCK,))
        existing = await tx.fetchone("SELECT name FROM releases WHERE id = ?", (rid,))
        if name is not None:
            other = await tx.fetchone("SELECT id FROM releases WHERE name = ?", (name,))
            if other is not None and other[0] != rid:
                raise RequestError(
                    f"the name {name!r} is taken by release {str(other[0])[:12]}",
                    code="release_name_taken",
                    status=409,
                    param="name",
                )
            if existing is not None and existing[0] not in (None, name):
                raise RequestError(
                    f"these files are release {existing[0]!r} ({rid[:12]}) already",
                    code="release_name_taken",
                    status=409,
                    param="name",
                    hint="a release has one name; use it",
                )
        created = existing is None
        if created:
            await tx.execute(
                "INSERT INTO releases (id, name, files_hash, manifest, created_at, created_by,"
                " created_by_id) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (rid, name, fh, text.decode(), time.time(), principal.label, principal.user_id),
            )
            await append_entry(
                tx, "release.created", rid, principal.actor(), {"name": name, "files_hash": fh}
            )
        elif name is not None and existing is not None and existing[0] is None:
            await tx.execute("UPDATE releases SET name = ? WHERE id = ?", (name, rid))
            await append_entry(tx, "release.named", rid, principal.actor(), {"name": name})
    return await get_release(store, rid), created


async def _switches(db: Executor, env: str) -> list[Switch]:
    rows = await db.fetchall(
        "SELECT seq, environment, release_id, previous_id, action, switched_at, switched_by"
        " FROM release_pointers WHERE environment = ? ORDER BY seq",
        (env,),
    )
    return [
        Switch(int(r[0]), str(r[1]), str(r[2]), r[3], str(r[4]), float(r[5]), str(r[6]))
        for r in rows
    ]


def _stack(switches: list[Switch]) -> list[str]:
    """The activations still in force, oldest first (a rollback pops the newest)."""
    stack: list[str] = []
    for s in switches:
        if s.action == "rollback":
            if stack:
                stack.pop()
        else:
            stack.append(s.release_id)
    return stack


async def active_release(db: Executor, env: str) -> Release | None:
    """The release active in ``env``, or None if none was ever activated there."""
    row = await db.fetchone(
        "SELECT release_id FROM release_pointers WHERE environment = ? ORDER BY seq DESC LIMIT 1",
        (check_environment(env),),
    )
    return None if row is None else await get_release(db, str(row[0]))


async def history(db: Executor, env: str, *, limit: int = 50) -> list[Switch]:
    """The switches of ``env``, newest first."""
    return list(reversed(await _switches(db, check_environment(env))))[:limit]


async def _switch(
    store: Store, principal: Principal, env: str, target: str | None, action: str
) -> Switch:
    async with store.transaction() as tx:
        if store.dialect == "postgresql":
            await tx.execute("SELECT pg_advisory_xact_lock(?)", (_LOCK,))
        switches = await _switches(tx, env)
        stack = _stack(switches)
        current = stack[-1] if stack else None
        if action == "rollback":
            if len(stack) < 2:
                raise RequestError(
                    f"environment {env!r} has no earlier release to roll back to",
                    code="release_no_previous",
                    status=409,
                    hint="`elevenfactor release activate ID --env " + env + "` picks one",
                )
            target = stack[-2]
        elif target == current and switches:
            return switches[-1]  # already active: nothing to switch
        assert target is not None
        now = time.time()
        row = await tx.fetchone(
            "INSERT INTO release_pointers (environment, release_id, previous_id, action,"
            " switched_at, switched_by) VALUES (?, ?, ?, ?, ?, ?) RETURNING seq",
            (env, target, current, action, now, principal.label),
        )
        assert row is not None
        kind = "release.activated" if action == "activate" else "release.rolled_back"
        await append_entry(
            tx, kind, target, principal.actor(), {"environment": env, "previous": current}
        )
    return Switch(int(row[0]), env, target, current, action, now, principal.label)


async def activate(store: Store, principal: Principal, env: str, ref: str) -> Switch:
    """Make the release ``ref`` names the active one of ``env`` (an admin's act; a ledger
    entry). Activating the active release changes nothing. Processes pick it up when they
    start (``serve``, ``worker``)."""
    principal.require_admin("activating a release")
    release = await get_release(store, ref)
    return await _switch(store, principal, check_environment(env), release.id, "activate")


async def rollback(store: Store, principal: Principal, env: str) -> Switch:
    """Make the release active before the newest activation of ``env`` active again (an
    admin's act; a ledger entry); ``release_no_previous`` (409) when there is none."""
    principal.require_admin("rolling back a release")
    return await _switch(store, principal, check_environment(env), None, "rollback")


async def applicable_release(store: Executor, settings: Settings) -> Release | None:
    """The release a process runs under: ``ELEVENFACTOR_RELEASE`` (an unknown one is
    ``ReleaseNotFound``), else the release active in ``ELEVENFACTOR_ENVIRONMENT``, else None."""
    if settings.release:
        try:
            return await get_release(store, settings.release)
        except ReleaseNotFound as exc:
            raise ReleaseNotFound(f"ELEVENFACTOR_RELEASE: {exc.message}", hint=exc.hint) from None
    return await active_release(store, settings.environment)


async def diff(db: Executor, a: str, b: str) -> tuple[Release, Release, list[Change]]:
    """The releases ``a`` and ``b`` name and what changed from ``a`` to ``b``."""
    left, right = await get_release(db, a), await get_release(db, b)
    return left, right, diff_manifests(left.manifest or {}, right.manifest or {})


def mismatch(release: Release, disk: dict[str, Any], why: str = "") -> ReleaseMismatch:
    """The ``ReleaseMismatch`` naming what differs between ``release`` and the ``disk``
    manifest (retrieval index versions aside)."""
    ours = {k: v for k, v in (release.manifest or {}).items() if k != "retrieval"}
    theirs = {k: v for k, v in disk.items() if k != "retrieval"}
    what = describe(diff_manifests(ours, theirs)) or "the manifest"
    return ReleaseMismatch(
        f"the files on disk are not those of release {release.label}{why}: {what} differ",
        hint="create a release of these files (`elevenfactor release create`) and activate it"
        " (or pin it with ELEVENFACTOR_RELEASE), or restore the release's files",
    )


async def check_matches_disk(
    release: Release,
    settings: Settings,
    project: ProjectConfig,
    base: Path | None = None,
    *,
    store: Store | None = None,
) -> dict[str, Any]:
    """Raise ``ReleaseMismatch`` naming what differs (which prompt, policy, agent or config
    key) unless the files under ``base`` (default: the project folder) and ``project`` are the
    release's; return their manifest."""
    disk = await build_manifest(settings, project, base, store=None if store is None else store)
    if files_hash(disk) != release.files_hash:
        raise mismatch(release, disk)
    return disk
