"""Payloads erased by retention or by forgetting a user, as ``audit`` sees them.

A payload that is missing is a finding, unless an erasure marker (``erasures``) names that
very reference with that very hash: then it is counted as erased (by ledger entry N), and its
hash still takes part in every chain and record check. The markers themselves are checked
against their ledger entries: each entry's body holds the Merkle root over the markers it
wrote, so a marker inserted by hand (to excuse a blob deleted behind the ledger's back), one
removed, or one pointing at an entry that does not exist is a finding.
"""

from __future__ import annotations

from collections.abc import Sequence

from elevenfactor.governance import LedgerEntry
from elevenfactor.governance._ledger import merkle_root
from elevenfactor.governance._retention_erase import erasure_leaf
from elevenfactor.runtime._audit_report import AuditReport, Finding
from elevenfactor.store import Executor

__all__ = ["Erased", "check_erasures", "excused", "load_erased"]

Erased = dict[tuple[str, str], tuple[str, int]]
"""``(subject, location) -> (hash, ledger seq)``."""

_CHUNK = 400


async def load_erased(db: Executor, subjects: Sequence[str]) -> Erased:
    """The erasure markers of ``subjects``."""
    out: Erased = {}
    todo = list(subjects)
    for i in range(0, len(todo), _CHUNK):
        chunk = todo[i : i + _CHUNK]
        marks = ", ".join("?" for _ in chunk)
        for subject, location, digest, seq in await db.fetchall(
            f"SELECT subject, location, hash, ledger_seq FROM erasures WHERE subject IN ({marks})",
            chunk,
        ):
            out[(str(subject), str(location))] = (str(digest), int(seq))
    return out


def excused(report: AuditReport, erased: Erased, subject: str, location: str, digest: str) -> bool:
    """Whether ``subject``'s payload at ``location`` was erased with hash ``digest`` (then it
    is counted as erased in ``report``)."""
    marker = erased.get((subject, location))
    if marker is None or marker[0] != digest:
        return False
    report.erased += 1
    report.erased_by.add(marker[1])
    return True


async def check_erasures(db: Executor, report: AuditReport) -> None:
    """Each ledger entry that erased payloads against the markers it wrote."""
    seqs = [int(r[0]) for r in await db.fetchall("SELECT DISTINCT ledger_seq FROM erasures")]
    for i in range(0, len(seqs), _CHUNK):
        chunk = seqs[i : i + _CHUNK]
        marks = ", ".join("?" for _ in chunk)
        entries = {
            int(r[0]): LedgerEntry(*r)
            for r in await db.fetchall(
                "SELECT seq, kind, subject, actor, body, created_at, hash, block FROM ledger"
                f" WHERE seq IN ({marks})",
                chunk,
            )
        }
        for seq in chunk:
            rows = await db.fetchall(
                "SELECT subject, location, hash FROM erasures WHERE ledger_seq = ?", (seq,)
            )
            entry = entries.get(seq)
            where = f"ledger entry {seq}"
            if entry is None:
                report.findings.append(
                    Finding(
                        "erasure",
                        where,
                        None,
                        f"{len(rows)} payload(s) marked erased by ledger entry {seq},"
                        " which does not exist",
                    )
                )
                continue
            sealed = entry.data().get("erasure")
            leaves = [erasure_leaf(str(s), str(loc), str(h)) for s, loc, h in sorted(rows)]
            if (
                not isinstance(sealed, dict)
                or sealed.get("count") != len(rows)
                or sealed.get("root") != merkle_root(leaves)
            ):
                report.findings.append(
                    Finding(
                        "erasure",
                        where,
                        None,
                        f"the erasure markers of ledger entry {seq} ({entry.kind}) were added,"
                        f" removed or changed ({len(rows)} found)",
                    )
                )
