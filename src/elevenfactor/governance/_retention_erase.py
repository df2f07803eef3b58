"""Erase payloads and keep their hashes: the one mechanism behind retention purges and
``forget_user``'s run evidence.

An erasure names a reference to a payload — ``(subject, location, hash)``: a run's ``input``,
``result`` or ``event:N`` output, an approval's ``request`` or ``decision``, a call record's
``request`` or ``response`` — and, in one transaction:

1. appends **one ledger entry** whose body holds ``erasure: {root, count}``, the Merkle root
   over the erasures' leaves (``erasure_leaf``, sorted): never the content, and enough for
   ``audit verify`` to catch a marker added or removed by hand;
2. records a marker per reference in ``erasures`` (with the entry's ``seq``);
3. clears the inline copies (the journal row's ``output``, the approval's ``decision``);
4. deletes each blob that no kept reference still uses — blobs are content-addressed and shared,
   so identical content of a row that is kept stays (its owner still has it).

Every hash stays where it was: the journal's ``output_hash`` (inside each event's hash), the
run's input and result hashes, the approval's request and decision hashes, the call record's
request and response hashes (inside its record hash). On PostgreSQL the transaction holds an
advisory lock (one erasure at a time, so two purges never mark the same rows) and locks the
blob table against inserts while it decides which blobs go, so content that a concurrent write
is about to reference again is never deleted under it.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from elevenfactor.governance._ledger import canonical, entry_hash, merkle_root
from elevenfactor.store import Executor

__all__ = [
    "ERASE_LOCK",
    "Erasure",
    "erase",
    "erased_markers",
    "erasure_leaf",
    "erasure_root",
    "lock_erasures",
]

ERASE_LOCK = 44444
"""The PostgreSQL advisory lock every erasure takes."""

_CHUNK = 400


@dataclass(frozen=True, slots=True, order=True)
class Erasure:
    """One payload reference to erase (ordered as the Merkle leaves are)."""

    subject: str
    location: str
    hash: str


def erasure_leaf(subject: str, location: str, digest: str) -> str:
    """The Merkle leaf of one erasure: SHA-256 over ``[subject, location, hash]``."""
    return hashlib.sha256(canonical([subject, location, digest]).encode()).hexdigest()


def erasure_root(items: Iterable[Erasure]) -> str:
    """The Merkle root over ``items`` in ``(subject, location)`` order."""
    return merkle_root([erasure_leaf(*e_tuple(e)) for e in sorted(items)])


def e_tuple(e: Erasure) -> tuple[str, str, str]:
    """``(subject, location, hash)``."""
    return e.subject, e.location, e.hash


async def lock_erasures(tx: Executor, dialect: str) -> None:
    """On PostgreSQL, take the erasure lock and lock the blob table against inserts until
    ``tx`` ends (both may be taken again in the same transaction); nothing on SQLite, whose
    write transactions are serial already."""
    if dialect == "postgresql":
        await tx.execute("SELECT pg_advisory_xact_lock(?)", (ERASE_LOCK,))
        await tx.execute("LOCK TABLE blobs IN SHARE ROW EXCLUSIVE MODE")


async def erased_markers(db: Executor, subjects: Sequence[str]) -> set[tuple[str, str]]:
    """The ``(subject, location)`` pairs of ``subjects`` already erased."""
    out: set[tuple[str, str]] = set()
    for i in range(0, len(subjects), _CHUNK):
        chunk = list(subjects[i : i + _CHUNK])
        marks = ", ".join("?" for _ in chunk)
        rows = await db.fetchall(
            f"SELECT subject, location FROM erasures WHERE subject IN ({marks})", chunk
        )
        out.update((str(s), str(loc)) for s, loc in rows)
    return out


# A blob is kept while any reference to it has no erasure marker.
_KEPT = """
    EXISTS (SELECT 1 FROM runs r WHERE r.input_hash = blobs.hash AND NOT EXISTS
        (SELECT 1 FROM erasures e WHERE e.subject = r.id AND e.location = 'input'))
 OR EXISTS (SELECT 1 FROM runs r WHERE r.result_hash = blobs.hash AND NOT EXISTS
        (SELECT 1 FROM erasures e WHERE e.subject = r.id AND e.location = 'result'))
 OR EXISTS (SELECT 1 FROM journal j WHERE j.output_hash = blobs.hash AND j.output IS NULL
        AND NOT EXISTS (SELECT 1 FROM erasures e WHERE e.subject = j.run_id
        AND e.location = 'event:' || CAST(j.n AS TEXT)))
 OR EXISTS (SELECT 1 FROM approvals a WHERE a.request_hash = blobs.hash AND NOT EXISTS
        (SELECT 1 FROM erasures e WHERE e.subject = a.id AND e.location = 'request'))
 OR EXISTS (SELECT 1 FROM model_calls c WHERE c.request_hash = blobs.hash AND NOT EXISTS
        (SELECT 1 FROM erasures e WHERE e.subject = c.id AND e.location = 'request'))
 OR EXISTS (SELECT 1 FROM model_calls c WHERE c.response_hash = blobs.hash AND NOT EXISTS
        (SELECT 1 FROM erasures e WHERE e.subject = c.id AND e.location = 'response'))
"""


async def erase(
    tx: Executor,
    dialect: str,
    items: Iterable[Erasure],
    *,
    kind: str,
    subject: str,
    actor: dict[str, Any] | str,
    body: dict[str, Any],
) -> tuple[int | None, int]:
    """Erase ``items`` inside ``tx`` (see the module docstring) with one ledger entry
    ``(kind, subject, actor, body + erasure)``; references already erased are skipped. Returns
    ``(ledger seq, blobs deleted)``; ``(None, 0)`` and nothing written when nothing is left to
    erase."""
    await lock_erasures(tx, dialect)
    wanted = sorted(set(items))
    done = await erased_markers(tx, sorted({e.subject for e in wanted}))
    todo = [e for e in wanted if (e.subject, e.location) not in done]
    if not todo:
        return None, 0
    now = time.time()
    full = {**body, "erasure": {"root": erasure_root(todo), "count": len(todo)}}
    actor_s = actor if isinstance(actor, str) else canonical(actor)
    body_s = canonical(full)
    row = await tx.fetchone(
        "INSERT INTO ledger (kind, subject, actor, body, created_at, hash)"
        " VALUES (?, ?, ?, ?, ?, ?) RETURNING seq",
        (kind, subject, actor_s, body_s, now, entry_hash(kind, subject, actor_s, body_s, now)),
    )
    assert row is not None  # RETURNING always yields the inserted row
    seq = int(row[0])
    await tx.executemany(
        "INSERT INTO erasures (subject, location, hash, ledger_seq, erased_at)"
        " VALUES (?, ?, ?, ?, ?)",
        [(e.subject, e.location, e.hash, seq, now) for e in todo],
    )
    events = [
        (e.subject, int(e.location.split(":", 1)[1]))
        for e in todo
        if e.location.startswith("event:")
    ]
    if events:
        await tx.executemany("UPDATE journal SET output = NULL WHERE run_id = ? AND n = ?", events)
    decisions = [(e.subject,) for e in todo if e.location == "decision"]
    if decisions:
        await tx.executemany("UPDATE approvals SET decision = NULL WHERE id = ?", decisions)
    hashes = sorted({e.hash for e in todo if e.location != "decision"})
    deleted = 0
    for i in range(0, len(hashes), _CHUNK):
        chunk = hashes[i : i + _CHUNK]
        marks = ", ".join("?" for _ in chunk)
        deleted += await tx.execute(
            f"DELETE FROM blobs WHERE hash IN ({marks}) AND NOT ({_KEPT})", chunk
        )
    return seq, deleted
