"""Ledger entries for generated rows (hashed as ``append_entry`` hashes them, with explicit
sequence numbers) and the sealing of every unsealed entry into blocks of ``BLOCK`` entries, as
the sealer would have done while the store filled up."""

from __future__ import annotations

import sqlite3
from typing import Any

from bench.ui._sink import SqliteSink
from elevenfactor.governance import canonical
from elevenfactor.governance._ledger import GENESIS, block_hash, entry_hash, merkle_root

__all__ = ["BLOCK", "LedgerWriter", "seal_all"]

BLOCK = 1000


class LedgerWriter:
    """Appends entries to the sink with increasing ``seq`` (after ``start``)."""

    def __init__(self, sink: SqliteSink, start: int) -> None:
        self.sink = sink
        self.seq = start

    def add(
        self, kind: str, subject: str, actor: dict[str, Any], body: dict[str, Any], at: float
    ) -> None:
        """One unsealed entry, exactly as ``append_entry`` would write it at ``at``."""
        self.seq += 1
        actor_s, body_s = canonical(actor), canonical(body)
        digest = entry_hash(kind, subject, actor_s, body_s, at)
        self.sink.add("ledger", (self.seq, kind, subject, actor_s, body_s, at, digest, None))


def seal_all(conn: sqlite3.Connection) -> int:
    """Chain every unsealed entry (in ``seq`` order) into blocks after the newest one; the number
    of blocks made."""
    head = conn.execute("SELECT n, hash FROM ledger_blocks ORDER BY n DESC LIMIT 1").fetchone()
    n, prev = (0, GENESIS) if head is None else (int(head[0]) + 1, str(head[1]))
    rows = conn.execute(
        "SELECT seq, hash, created_at FROM ledger WHERE block IS NULL ORDER BY seq"
    ).fetchall()
    made = 0
    conn.execute("BEGIN")
    for i in range(0, len(rows), BLOCK):
        chunk = rows[i : i + BLOCK]
        root = merkle_root([r[1] for r in chunk])
        sealed_at = max(float(r[2]) for r in chunk) + 0.3
        digest = block_hash(n, prev, root, len(chunk), sealed_at)
        conn.execute(
            "UPDATE ledger SET block = ? WHERE block IS NULL AND seq BETWEEN ? AND ?",
            (n, chunk[0][0], chunk[-1][0]),
        )
        conn.execute(
            "INSERT INTO ledger_blocks (n, prev_hash, root, entries, sealed_at, hash)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (n, prev, root, len(chunk), sealed_at, digest),
        )
        n, prev, made = n + 1, digest, made + 1
    conn.execute("COMMIT")
    return made
