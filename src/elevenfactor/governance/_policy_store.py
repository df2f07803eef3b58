"""Every guard policy version ever used, kept in the store (``policy_versions``, migration
m018_policies) so a verdict given under an old version can still be explained after the file
changed: its text, its file and when it was first used."""

from __future__ import annotations

from elevenfactor.errors import ConfigError
from elevenfactor.governance._policy_load import parse_policy, policy_error
from elevenfactor.governance._policy_model import Policy
from elevenfactor.store import Store
from elevenfactor.store._versions import StoredVersion, VersionTable

__all__ = [
    "StoredPolicyVersion",
    "load_stored_policy",
    "record_policy_version",
    "stored_policy_ids",
    "stored_policy_versions",
]

StoredPolicyVersion = StoredVersion
"""A version of a policy recorded in the store."""

_VERSIONS = VersionTable("policy_versions", "policy_id")


async def record_policy_version(store: Store, policy: Policy) -> None:
    """Record that ``policy`` (this version of it) was used, once: the first use is kept, later
    ones change nothing. Each process writes a given version to a given store at most once."""
    await _VERSIONS.record(
        store, policy.id, policy.full_hash, policy.version, policy.file, policy.source
    )


async def stored_policy_versions(store: Store, policy_id: str) -> list[StoredVersion]:
    """The versions of ``policy_id`` in the store, oldest first use first."""
    return await _VERSIONS.versions(store, policy_id)


async def stored_policy_ids(store: Store) -> list[str]:
    """The ids of every policy with a recorded version."""
    return await _VERSIONS.ids(store)


async def load_stored_policy(store: Store, policy_id: str, prefix: str) -> list[Policy]:
    """The recorded versions of ``policy_id`` whose hash starts with ``prefix`` (lowercase hex
    digits), parsed and validated again.

    The stored text is hashed again: a row whose content does not match its hash (edited in
    the database) is a ``ConfigError``, never served. A ``prefix`` that is not hex digits
    matches nothing."""
    out = []
    for stored in await _VERSIONS.texts(store, policy_id, prefix):
        where = f"{stored.file} (stored version {stored.full_hash[:12]})"
        if not stored.intact:
            raise policy_error(
                where,
                None,
                "the stored text of this policy version does not match its hash",
                hint="its policy_versions row was changed after it was recorded; restore it "
                "from a backup or from the file in version control",
            )
        data = stored.content.encode("utf-8")
        try:
            out.append(parse_policy(data, file=stored.file, policy_id=policy_id))
        except ConfigError as exc:
            raise policy_error(
                where, None, f"this recorded version no longer loads: {exc.message}", hint=exc.hint
            ) from None
    return out
