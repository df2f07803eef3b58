"""The guard vault: a durable run's placeholder map, encrypted and expiring (factor 10).

A guard rule that redacts in ``placeholder`` mode inside an agent run replaces a value with a
placeholder (``[EMAIL_1]``) that the run's final answer must get back after any restart, so the
map (placeholder → value) cannot live only in memory. ``GuardVault`` keeps it in the
``guard_vault`` table, one row per organisation and run, encrypted with AES-256-GCM under
``ELEVENFACTOR_GUARD_VAULT_KEY`` (base64 of 32 bytes); the organisation and run are the
associated data, so a row copied to another run does not decrypt. Every read and write is
scoped by organisation *and* run in SQL: another organisation's run never reads a map, even
knowing the run id.

An entry lives while its run does (``expires_at`` NULL); ``finish`` sets it to the run's end
plus ``ELEVENFACTOR_GUARD_VAULT_TTL`` seconds (default a day). Reads ignore expired entries,
and the housekeeper's ``purge_guard_vault`` deletes them, together with entries of runs that
ended more than their TTL ago without ``finish`` (failed or cancelled runs) or that no longer
exist. Without a key there is no vault: runs mask instead of issuing placeholders.

Values never appear in logs, errors or ``repr``; the map itself is a ``PlaceholderMap``.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import time

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from elevenfactor.errors import ConfigError
from elevenfactor.governance._guard_redact import PlaceholderMap
from elevenfactor.store import Store

__all__ = [
    "DEFAULT_TTL",
    "KEY_VARIABLE",
    "GuardVault",
    "dump_map",
    "load_map",
    "parse_vault_key",
    "purge_guard_vault",
]

KEY_VARIABLE = "ELEVENFACTOR_GUARD_VAULT_KEY"
DEFAULT_TTL = 86400.0
_NONCE = 12
_PLACEHOLDER = re.compile(r"^\[([A-Z][A-Z0-9]*)_([1-9][0-9]*)\]$")
_FINAL = "('succeeded', 'failed', 'cancelled')"


def parse_vault_key(text: str | None) -> bytes | None:
    """The 32-byte key from its base64 text (None when unset or blank). ``ConfigError``
    naming the variable, never the value, when it is not base64 of 32 bytes."""
    if text is None or not text.strip():
        return None
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != 32:
        raise ConfigError(
            "the guard vault key is not base64 of 32 bytes",
            source="environment",
            key=KEY_VARIABLE,
            expected="an AES-256 key: base64 of 32 random bytes",
            hint='make one with `python -c "import base64, os; '
            'print(base64.b64encode(os.urandom(32)).decode())"`',
        )
    return key


def dump_map(mapping: PlaceholderMap) -> bytes:
    """The map as JSON ``[[placeholder, value], ...]`` (to be encrypted, never stored so)."""
    pairs = [[p, mapping.value_of(p)] for p in mapping.placeholders]
    return json.dumps(pairs, ensure_ascii=False, separators=(",", ":")).encode()


def load_map(data: bytes, into: PlaceholderMap | None = None) -> PlaceholderMap:
    """A map with exactly the placeholders ``dump_map`` wrote (same labels and numbers, so
    new values continue the numbering), added to ``into`` when given."""
    mapping = PlaceholderMap() if into is None else into
    parsed: list[tuple[str, int, str]] = []
    for placeholder, value in json.loads(data):
        found = _PLACEHOLDER.match(str(placeholder))
        if found is not None and isinstance(value, str):
            parsed.append((found.group(1), int(found.group(2)), value))
    counters: dict[str, int] = {}
    for label, n, value in sorted(parsed):
        if f"[{label}_{n}]" in mapping:
            continue
        start = counters.get(label, 0)
        # placeholder_for takes the next number not in ``avoid``: skip to exactly ``n``.
        avoid = "".join(f"[{label}_{i}]" for i in range(start + 1, n))
        mapping.placeholder_for(label, value, avoid)
        counters[label] = n
    return mapping


class GuardVault:
    """Encrypted, expiring placeholder maps of runs (see the module docstring)."""

    def __init__(self, key: bytes, ttl: float = DEFAULT_TTL) -> None:
        if len(key) != 32:
            raise ConfigError("the guard vault key must be 32 bytes", key=KEY_VARIABLE)
        if ttl <= 0:
            raise ConfigError("the guard vault TTL must be positive", key="guard_vault_ttl")
        self._aead = AESGCM(key)
        self.ttl = float(ttl)

    def __repr__(self) -> str:
        return f"GuardVault(ttl={self.ttl:g})"

    @classmethod
    def from_settings(cls, key: str | None, ttl: float = DEFAULT_TTL) -> GuardVault | None:
        """The vault for ``ELEVENFACTOR_GUARD_VAULT_KEY`` (None without one)."""
        raw = parse_vault_key(key)
        return None if raw is None else cls(raw, ttl)

    @staticmethod
    def _aad(org_id: str, run_id: str) -> bytes:
        return f"elevenfactor.guard_vault\x00{org_id}\x00{run_id}".encode()

    async def load(
        self,
        store: Store,
        org_id: str,
        run_id: str,
        *,
        into: PlaceholderMap | None = None,
        now: float | None = None,
    ) -> PlaceholderMap:
        """The run's map (empty when there is none, or it expired). ``ConfigError`` when the
        entry does not decrypt (the key changed, or the row was tampered with)."""
        ts = time.time() if now is None else now
        row = await store.fetchone(
            "SELECT ciphertext, nonce FROM guard_vault WHERE org_id = ? AND run_id = ?"
            " AND (expires_at IS NULL OR expires_at > ?)",
            (org_id, run_id, ts),
        )
        mapping = PlaceholderMap() if into is None else into
        if row is None:
            return mapping
        try:
            data = self._aead.decrypt(bytes(row[1]), bytes(row[0]), self._aad(org_id, run_id))
        except InvalidTag:
            raise ConfigError(
                f"the guard vault entry of run {run_id} cannot be decrypted",
                key=KEY_VARIABLE,
                hint="the key changed since the run wrote it, or the row was altered; its "
                "placeholders cannot be restored",
            ) from None
        return load_map(data, mapping)

    async def save(self, store: Store, org_id: str, run_id: str, mapping: PlaceholderMap) -> None:
        """Store ``mapping`` as the run's map (replacing the previous one; a fresh nonce)."""
        nonce = os.urandom(_NONCE)
        sealed = self._aead.encrypt(nonce, dump_map(mapping), self._aad(org_id, run_id))
        await store.execute(
            "INSERT INTO guard_vault (org_id, run_id, ciphertext, nonce, ttl, expires_at,"
            " updated_at) VALUES (?, ?, ?, ?, ?, NULL, ?)"
            " ON CONFLICT (org_id, run_id) DO UPDATE SET ciphertext = excluded.ciphertext,"
            " nonce = excluded.nonce, ttl = excluded.ttl, updated_at = excluded.updated_at",
            (org_id, run_id, sealed, nonce, self.ttl, time.time()),
        )

    async def finish(
        self, store: Store, org_id: str, run_id: str, ended_at: float | None = None
    ) -> None:
        """The run ended at ``ended_at`` (default now): its entry expires ``ttl`` later."""
        end = time.time() if ended_at is None else ended_at
        await store.execute(
            "UPDATE guard_vault SET expires_at = ? WHERE org_id = ? AND run_id = ?",
            (end + self.ttl, org_id, run_id),
        )


async def purge_guard_vault(store: Store, now: float) -> int:
    """Delete expired entries, and entries of runs that ended more than their TTL ago (or no
    longer exist) without expiring them; how many went. A housekeeper job."""
    return await store.execute(
        "DELETE FROM guard_vault WHERE expires_at <= ? OR (expires_at IS NULL AND NOT EXISTS"
        " (SELECT 1 FROM runs r WHERE r.id = guard_vault.run_id"
        f" AND (r.status NOT IN {_FINAL} OR r.updated_at + guard_vault.ttl > ?)))",
        (now, now),
    )
