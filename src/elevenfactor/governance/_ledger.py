"""The global ledger: one append-only, hash-chained record of what lies outside runs' journals.

Writers insert *unchained* entries freely, in the transaction of the change they record (a run
created or ended, an approval requested or decided, a deletion, an administrative action); each
entry's ``hash`` covers its content. One sealer at a time (an advisory lock on PostgreSQL, the
write lock on SQLite) takes every unsealed entry into a **block**: a Merkle root over the entries'
hashes in ``seq`` order, chained to the previous block's hash. Workers never wait on each other
for the chain, and verification covers every entry once it is sealed.

The head (the newest block's number and hash) can be exported and signed (``_signing``), so a
verifier can prove nothing before it was rewritten, even by someone who recomputes every hash.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson

from elevenfactor.store import Executor, Store

__all__ = [
    "GENESIS",
    "Block",
    "LedgerEntry",
    "append_entry",
    "block_hash",
    "canonical",
    "count_sealed",
    "entry_hash",
    "iter_blocks",
    "ledger_head",
    "merkle_root",
    "seal",
]

GENESIS = "0" * 64
"""The ``prev_hash`` of block 0."""

_INSERT = (
    "INSERT INTO ledger (kind, subject, actor, body, created_at, hash) VALUES (?, ?, ?, ?, ?, ?)"
)
_SEAL_LOCK = 33333


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def canonical(obj: Any) -> str:
    """Canonical JSON (sorted keys, no spaces): what entry hashes cover."""
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS).decode()


def entry_hash(kind: str, subject: str, actor: str, body: str, created_at: float) -> str:
    """SHA-256 over an entry's content."""
    return _sha(orjson.dumps([kind, subject, actor, body, created_at]))


def merkle_root(leaves: list[str]) -> str:
    """The Merkle root of hex ``leaves`` (pairs hashed together; an odd one carried up)."""
    if not leaves:
        return _sha(b"")
    level = leaves
    while len(level) > 1:
        nxt = [_sha((level[i] + level[i + 1]).encode()) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


def block_hash(n: int, prev_hash: str, root: str, entries: int, sealed_at: float) -> str:
    """SHA-256 over a block's header."""
    return _sha(orjson.dumps([n, prev_hash, root, entries, sealed_at]))


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One ledger entry as stored."""

    seq: int
    kind: str
    subject: str
    actor: str
    body: str
    created_at: float
    hash: str
    block: int | None

    def expected_hash(self) -> str:
        """The hash this entry should have given its content."""
        return entry_hash(self.kind, self.subject, self.actor, self.body, self.created_at)

    def data(self) -> dict[str, Any]:
        """The decoded body (an empty dict if it is not a JSON object)."""
        try:
            value = orjson.loads(self.body)
        except orjson.JSONDecodeError:
            return {}
        return value if isinstance(value, dict) else {}


@dataclass(frozen=True, slots=True)
class Block:
    """A sealed block of entries."""

    n: int
    prev_hash: str
    root: str
    entries: int
    sealed_at: float
    hash: str

    def expected_hash(self) -> str:
        """The hash this block should have given its header."""
        return block_hash(self.n, self.prev_hash, self.root, self.entries, self.sealed_at)


async def append_entry(
    db: Executor, kind: str, subject: str, actor: str | dict[str, Any], body: dict[str, Any]
) -> None:
    """Insert an unsealed entry (inside the caller's transaction, so it lands with the change)."""
    now = time.time()
    actor_s = actor if isinstance(actor, str) else canonical(actor)
    body_s = canonical(body)
    await db.execute(
        _INSERT,
        (kind, subject, actor_s, body_s, now, entry_hash(kind, subject, actor_s, body_s, now)),
    )


async def ledger_head(db: Executor) -> Block | None:
    """The newest sealed block, or None."""
    row = await db.fetchone(
        "SELECT n, prev_hash, root, entries, sealed_at, hash FROM ledger_blocks"
        " ORDER BY n DESC LIMIT 1"
    )
    return _block(row) if row else None


def _block(row: tuple[Any, ...]) -> Block:
    n, prev, root, entries, sealed_at, digest = row
    return Block(int(n), prev, root, int(entries), float(sealed_at), digest)


async def seal(store: Store) -> Block | None:
    """Chain every unsealed entry into a new block; None if there was nothing to seal (or
    another process is sealing right now)."""
    # A cheap read first: an idle ledger costs no write lock every interval.
    if await store.fetchone("SELECT 1 FROM ledger WHERE block IS NULL LIMIT 1") is None:
        return None
    async with store.transaction() as tx:
        if store.dialect == "postgresql":
            row = await tx.fetchone("SELECT pg_try_advisory_xact_lock(?)", (_SEAL_LOCK,))
            if row is None or not row[0]:
                return None
        head = await ledger_head(tx)
        n = 0 if head is None else head.n + 1
        prev = GENESIS if head is None else head.hash
        # One statement takes exactly the rows it marks (a row committed meanwhile waits for the
        # next block instead of being marked without being hashed in).
        rows = await tx.fetchall(
            "UPDATE ledger SET block = ? WHERE block IS NULL RETURNING seq, hash", (n,)
        )
        if not rows:
            return None
        rows.sort(key=lambda r: int(r[0]))
        root = merkle_root([r[1] for r in rows])
        now = time.time()
        block = Block(n, prev, root, len(rows), now, block_hash(n, prev, root, len(rows), now))
        await tx.execute(
            "INSERT INTO ledger_blocks (n, prev_hash, root, entries, sealed_at, hash)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (block.n, block.prev_hash, block.root, block.entries, block.sealed_at, block.hash),
        )
    return block


async def count_sealed(db: Executor) -> int:
    """How many entries the sealed blocks hold."""
    row = await db.fetchone("SELECT COALESCE(SUM(entries), 0) FROM ledger_blocks")
    return int(row[0]) if row else 0


async def iter_blocks(
    store: Store, *, page: int = 200
) -> AsyncIterator[tuple[Block, list[LedgerEntry]]]:
    """Every sealed block in order with its entries (in ``seq`` order), a page at a time."""
    after = -1
    while True:
        rows = await store.fetchall(
            "SELECT n, prev_hash, root, entries, sealed_at, hash FROM ledger_blocks"
            " WHERE n > ? ORDER BY n LIMIT ?",
            (after, page),
        )
        if not rows:
            return
        for row in rows:
            block = _block(row)
            entries = await store.fetchall(
                "SELECT seq, kind, subject, actor, body, created_at, hash, block FROM ledger"
                " WHERE block = ? ORDER BY seq",
                (block.n,),
            )
            yield block, [LedgerEntry(*e) for e in entries]
            after = block.n
