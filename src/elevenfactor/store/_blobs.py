"""Content-addressed blobs: large payloads stored once, referenced by their SHA-256."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable

from elevenfactor.store._base import Executor

__all__ = ["BLOB_INSERT", "blob_hash", "get_blob", "get_blobs", "put_blob", "put_blobs"]

BLOB_INSERT = (
    "INSERT INTO blobs (hash, size, content, created_at) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (hash) DO NOTHING"
)


def blob_hash(content: bytes) -> str:
    """The address of ``content``: ``sha256:<hex>``."""
    return "sha256:" + hashlib.sha256(content).hexdigest()


async def put_blob(db: Executor, content: bytes) -> str:
    """Store ``content`` (once) and return its hash."""
    digest = blob_hash(content)
    await db.execute(BLOB_INSERT, (digest, len(content), content, time.time()))
    return digest


async def put_blobs(db: Executor, contents: Iterable[tuple[str, bytes]]) -> None:
    """Store many ``(hash, content)`` pairs; duplicates are ignored."""
    now = time.time()
    rows = [(h, len(c), c, now) for h, c in contents]
    if rows:
        await db.executemany(BLOB_INSERT, rows)


async def get_blob(db: Executor, digest: str) -> bytes | None:
    """The content stored under ``digest``, or None (unknown, or dropped by retention)."""
    row = await db.fetchone("SELECT content FROM blobs WHERE hash = ?", (digest,))
    if row is None or row[0] is None:
        return None
    return bytes(row[0])


async def get_blobs(db: Executor, digests: Iterable[str]) -> dict[str, bytes]:
    """The contents stored under ``digests`` (one query per 500), by hash; unknown or dropped
    ones are absent."""
    wanted = sorted(set(digests))
    found: dict[str, bytes] = {}
    for i in range(0, len(wanted), 500):
        chunk = wanted[i : i + 500]
        marks = ", ".join("?" for _ in chunk)
        rows = await db.fetchall(
            f"SELECT hash, content FROM blobs WHERE hash IN ({marks})", tuple(chunk)
        )
        found.update((h, bytes(c)) for h, c in rows if c is not None)
    return found
