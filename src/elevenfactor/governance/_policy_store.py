"""Every guard policy version ever used, kept in the store (``policy_versions``, migration
m018_policies) so a verdict given under an old version can still be explained after the file
changed: its text, its file and when it was first used."""

from __future__ import annotations

import re
import time
import weakref
from dataclasses import dataclass

from elevenfactor.context._prompt_parse import content_hash
from elevenfactor.errors import ConfigError
from elevenfactor.governance._policy_load import parse_policy, policy_error
from elevenfactor.governance._policy_model import Policy
from elevenfactor.store import Store

__all__ = [
    "StoredPolicyVersion",
    "load_stored_policy",
    "record_policy_version",
    "stored_policy_ids",
    "stored_policy_versions",
]

_INSERT = (
    "INSERT INTO policy_versions (policy_id, hash, version, path, content, first_used_at)"
    " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (policy_id, hash) DO NOTHING"
)

_HEX = re.compile(r"^[0-9a-f]{0,64}$")

# Versions this process has written, per store: the gateway records the policies of every
# call, and writes a given version once. Weak keys: a dropped store takes its entries with it.
_RECORDED: weakref.WeakKeyDictionary[Store, set[tuple[str, str]]] = weakref.WeakKeyDictionary()


@dataclass(frozen=True, slots=True)
class StoredPolicyVersion:
    """A version of a policy recorded in the store."""

    policy_id: str
    full_hash: str
    version: str
    file: str
    first_used_at: float


async def record_policy_version(store: Store, policy: Policy) -> None:
    """Record that ``policy`` (this version of it) was used, once: the first use is kept, later
    ones change nothing. Each process writes a given version to a given store at most once."""
    seen = _RECORDED.setdefault(store, set())
    key = (policy.id, policy.full_hash)
    if key in seen:
        return
    await store.execute(
        _INSERT,
        (policy.id, policy.full_hash, policy.version, policy.file, policy.source, time.time()),
    )
    seen.add(key)


async def stored_policy_versions(store: Store, policy_id: str) -> list[StoredPolicyVersion]:
    """The versions of ``policy_id`` in the store, oldest first use first."""
    rows = await store.fetchall(
        "SELECT hash, version, path, first_used_at FROM policy_versions WHERE policy_id = ?"
        " ORDER BY first_used_at, hash",
        (policy_id,),
    )
    return [StoredPolicyVersion(policy_id, h, v, p, float(t)) for h, v, p, t in rows]


async def stored_policy_ids(store: Store) -> list[str]:
    """The ids of every policy with a recorded version."""
    rows = await store.fetchall("SELECT DISTINCT policy_id FROM policy_versions ORDER BY 1")
    return [str(r[0]) for r in rows]


async def load_stored_policy(store: Store, policy_id: str, prefix: str) -> list[Policy]:
    """The recorded versions of ``policy_id`` whose hash starts with ``prefix`` (lowercase hex
    digits), parsed and validated again.

    The stored text is hashed again: a row whose content does not match its hash (edited in
    the database) is a ``ConfigError``, never served. A ``prefix`` that is not hex digits
    matches nothing."""
    if not _HEX.match(prefix.lower()):
        return []
    rows = await store.fetchall(
        "SELECT hash, path, content FROM policy_versions"
        " WHERE policy_id = ? AND hash LIKE ? ORDER BY hash",
        (policy_id, prefix.lower() + "%"),
    )
    out = []
    for full_hash, file, content in rows:
        data = str(content).encode("utf-8")
        where = f"{file} (stored version {str(full_hash)[:12]})"
        if content_hash(data)[0] != full_hash:
            raise policy_error(
                where,
                None,
                "the stored text of this policy version does not match its hash",
                hint="its policy_versions row was changed after it was recorded; restore it "
                "from a backup or from the file in version control",
            )
        try:
            out.append(parse_policy(data, file=str(file), policy_id=policy_id))
        except ConfigError as exc:
            raise policy_error(
                where, None, f"this recorded version no longer loads: {exc.message}", hint=exc.hint
            ) from None
    return out
