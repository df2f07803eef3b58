"""Versions of files kept as code (prompts, guard policies): every version ever used, stored
once, so what was done under an old version can still be explained after the file changed.

A version is the SHA-256 of the file with line endings normalised (``content_hash``), shown as
its first 12 hex digits. ``VersionTable`` writes and reads one table of such versions (columns
``<id column>, hash, version, path, content, first_used_at``; its migration creates it); the
callers parse what they read back and check it against its hash.
"""

from __future__ import annotations

import hashlib
import re
import time
import weakref
from dataclasses import dataclass

from elevenfactor.store._base import Store

__all__ = ["StoredVersion", "VersionTable", "content_hash"]

_HEX = re.compile(r"^[0-9a-f]{0,64}$")


def content_hash(data: bytes) -> tuple[str, bytes]:
    """The SHA-256 (hex) of a file and its bytes, both with line endings normalised to ``\\n``
    (so a checkout with CRLF has the same version)."""
    normalised = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    return hashlib.sha256(normalised).hexdigest(), normalised


@dataclass(frozen=True, slots=True)
class StoredVersion:
    """A version recorded in the store (without its text)."""

    id: str
    full_hash: str
    version: str
    file: str
    first_used_at: float


@dataclass(frozen=True, slots=True)
class StoredText:
    """A version's recorded text and whether it still matches its hash."""

    full_hash: str
    file: str
    content: str

    @property
    def intact(self) -> bool:
        """The text hashes to its recorded hash (the row was not edited)."""
        return content_hash(self.content.encode("utf-8"))[0] == self.full_hash


class VersionTable:
    """One table of versions (``prompt_versions`` keyed by ``prompt_id``, ``policy_versions``
    by ``policy_id``). Each process writes a given version to a given store at most once."""

    def __init__(self, table: str, id_column: str) -> None:
        self.table, self.id_column = table, id_column
        self._insert = (
            f"INSERT INTO {table} ({id_column}, hash, version, path, content, first_used_at)"
            f" VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT ({id_column}, hash) DO NOTHING"
        )
        # Weak keys: a closed and dropped store takes its entries with it.
        self._recorded: weakref.WeakKeyDictionary[Store, set[tuple[str, str]]] = (
            weakref.WeakKeyDictionary()
        )

    async def record(
        self, store: Store, id_: str, full_hash: str, version: str, file: str, content: str
    ) -> None:
        """Record that this version was used: the first use is kept, later ones change
        nothing."""
        seen = self._recorded.setdefault(store, set())
        if (id_, full_hash) in seen:
            return
        await store.execute(self._insert, (id_, full_hash, version, file, content, time.time()))
        seen.add((id_, full_hash))

    async def versions(self, store: Store, id_: str) -> list[StoredVersion]:
        """The versions of ``id_``, oldest first use first."""
        rows = await store.fetchall(
            f"SELECT hash, version, path, first_used_at FROM {self.table}"
            f" WHERE {self.id_column} = ? ORDER BY first_used_at, hash",
            (id_,),
        )
        return [StoredVersion(id_, str(h), str(v), str(p), float(t)) for h, v, p, t in rows]

    async def ids(self, store: Store) -> list[str]:
        """Every id with a recorded version."""
        rows = await store.fetchall(
            f"SELECT DISTINCT {self.id_column} FROM {self.table} ORDER BY 1"
        )
        return [str(r[0]) for r in rows]

    async def texts(self, store: Store, id_: str, prefix: str) -> list[StoredText]:
        """The recorded texts of ``id_`` whose hash starts with ``prefix`` (hex digits, any
        case; anything else matches nothing), by hash."""
        if not _HEX.match(prefix.lower()):
            return []
        rows = await store.fetchall(
            f"SELECT hash, path, content FROM {self.table}"
            f" WHERE {self.id_column} = ? AND hash LIKE ? ORDER BY hash",
            (id_, prefix.lower() + "%"),
        )
        return [StoredText(str(h), str(p), str(c)) for h, p, c in rows]
