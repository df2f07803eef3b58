"""The ``release`` of a run bundle: the release the run was submitted under, with its manifest,
and how ``audit verify --bundle`` checks it.

In a bundle, ``release`` is null (the run was submitted under no release) or
``{"id", "name", "created_at", "manifest"}``. Verification recomputes the manifest's SHA-256
(it must be the id), and checks that the id is the run's ``release_id`` and the one its
``run.created`` ledger entry (itself proven against the ledger's blocks) names.
"""

from __future__ import annotations

from typing import Any

from elevenfactor.governance import LedgerEntry
from elevenfactor.runtime._release_manifest import manifest_id
from elevenfactor.store import Executor

__all__ = ["bundle_release", "check_release"]


async def bundle_release(db: Executor, release_id: str | None) -> dict[str, Any] | None:
    """The ``release`` part of a bundle for a run submitted under ``release_id``."""
    if release_id is None:
        return None
    row = await db.fetchone(
        "SELECT id, name, created_at, manifest FROM releases WHERE id = ?", (release_id,)
    )
    if row is None:  # deleted from the store: the bundle says so, verification fails
        return {"id": release_id, "name": None, "created_at": None, "manifest": None}
    import orjson

    return {
        "id": str(row[0]),
        "name": row[1],
        "created_at": float(row[2]),
        "manifest": orjson.loads(row[3]),
    }


def check_release(
    release: Any, run: dict[str, Any], created: LedgerEntry | None
) -> tuple[list[str], str]:
    """The problems of a bundle's ``release`` (and the detail to show when there are none)."""
    expected = run.get("release_id")
    if release is None:
        if expected is not None:
            return [f"the run was submitted under release {expected} but the bundle has none"], ""
        return [], "none"
    if not isinstance(release, dict) or not isinstance(release.get("manifest"), dict):
        return ["the release or its manifest is missing or malformed"], ""
    problems: list[str] = []
    rid = release.get("id")
    if manifest_id(release["manifest"]) != rid:
        problems.append("the release manifest does not hash to the release id (edited?)")
    if rid != expected:
        problems.append(f"the run's release is {expected}, the bundle's {rid}")
    if created is not None and created.data().get("release_id") != rid:
        problems.append("the run's ledger entry names another release")
    name = release.get("name")
    return problems, f"{name} ({str(rid)[:12]})" if name else str(rid)[:12]
