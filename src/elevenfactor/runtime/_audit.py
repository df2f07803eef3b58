"""``audit``: check every byte the system relies on, against the journal chains and the ledger.

What is checked, and what a mismatch means:

- **The ledger** (``governance._ledger``): each entry's hash over its content, each block's Merkle
  root over its entries, each block's hash and its link to the previous block; entries that claim
  a block that does not exist. Optionally a signed head (``--against``): the block it names must
  still have the hash that was signed, which proves nothing before it was rewritten since, even
  by someone who recomputed every hash.
- **Each run**: its creation entry in the ledger (program, input, owner, genesis), the genesis
  hash, its journal chain (edits, insertions, deletions, reordering — each named at its position),
  every payload re-hashed (input, step outputs, result), its last sealed checkpoint or end (status,
  head hash, number of events, result, error) — so a chain cut short, a head rewritten or a result
  swapped is caught.
- **Runs deleted whole**: a creation entry with no run row and no deletion entry.
- **Approvals**: the request payload re-hashed, the decision re-hashed against its ledger entry
  (who decided, why, the edited arguments), and the approval's identity against its creation
  entry.
- **Call records**: each row's hash over its columns, and its request/response payloads.
- **Erasures** (retention purges, forgotten users): a payload that is missing is excused only
  by a marker naming that reference and hash, and each ledger entry that erased payloads must
  hold the Merkle root over exactly the markers it wrote (``_retention_audit``).

Memory stays bounded: runs, approvals and call records are read a page at a time, and one run's
journal at a time.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from elevenfactor.governance import LedgerEntry, iter_blocks, seal
from elevenfactor.governance._ledger import GENESIS, merkle_root
from elevenfactor.governance._signing import SignedHead
from elevenfactor.runtime._audit_chain import check_chain
from elevenfactor.runtime._audit_records import check_approvals, check_calls
from elevenfactor.runtime._audit_report import AuditReport, Finding
from elevenfactor.runtime._audit_runs import PAGE, RUN_SQL, Page, RunCheck, ledger_for
from elevenfactor.runtime._journal import VerifyReport
from elevenfactor.runtime._retention_audit import check_erasures
from elevenfactor.store import Executor, Store

__all__ = ["AuditReport", "Finding", "audit", "check_chain", "verify_one_run", "verify_run"]


async def verify_one_run(store: Store, run_id: str) -> AuditReport:
    """Check one run (chain, payloads, ledger anchors) and its approvals."""
    report = AuditReport()
    row = await store.fetchone(f"{RUN_SQL} WHERE id = ?", (run_id,))
    if row is None:
        entries = await ledger_for(store, run_id)
        kinds = {e.kind for e in entries}
        if "run.deleted" not in kinds:
            message = (
                "the run was deleted whole (its creation is in the ledger, no deletion is)"
                if "run.created" in kinds
                else "no such run"
            )
            report.findings.append(Finding("run", run_id, None, message))
        return report
    await RunCheck(report, row).check(store)
    await check_approvals(store, report, "AND run_id = ?", (run_id,))
    return report


async def verify_run(store: Store, run_id: str) -> VerifyReport:
    """``verify_one_run`` summarised: ok, the number of events, and the first finding (its
    journal position when it is one)."""
    report = await verify_one_run(store, run_id)
    if report.ok:
        return VerifyReport(run_id, report.events, True)
    at = next(
        (
            int(f.where.split()[1])
            for f in report.findings
            if f.kind == "journal" and f.where and f.where.startswith("event ")
        ),
        None,
    )
    reason = "; ".join(f.message for f in report.findings)
    return VerifyReport(run_id, report.events, False, at, reason)


# -- the ledger and the whole store ---------------------------------------------------------------


async def _check_ledger(store: Store, report: AuditReport) -> None:
    prev_hash, expected_n = GENESIS, 0
    async for block, entries in iter_blocks(store):
        report.blocks += 1
        report.ledger_entries += len(entries)
        subject = f"block {block.n}"
        if block.n != expected_n:
            report.findings.append(
                Finding("ledger", subject, None, f"blocks {expected_n}..{block.n - 1} are missing")
            )
        if block.prev_hash != prev_hash:
            report.findings.append(
                Finding("ledger", subject, None, "the block does not link to the previous block")
            )
        if block.expected_hash() != block.hash:
            report.findings.append(Finding("ledger", subject, None, "the block header was changed"))
        for e in entries:
            if e.expected_hash() != e.hash:
                report.findings.append(
                    Finding(
                        "ledger",
                        subject,
                        f"entry {e.seq}",
                        f"ledger entry {e.seq} ({e.kind} {e.subject}) was changed",
                    )
                )
        if len(entries) != block.entries or merkle_root([e.hash for e in entries]) != block.root:
            report.findings.append(
                Finding(
                    "ledger",
                    subject,
                    None,
                    f"the block's entries were added, removed or reordered ({len(entries)} found,"
                    f" {block.entries} sealed)",
                )
            )
        prev_hash, expected_n = block.hash, block.n + 1
        report.head = block
    orphans = await store.fetchall(
        "SELECT seq, kind, subject FROM ledger WHERE block IS NOT NULL"
        " AND NOT EXISTS (SELECT 1 FROM ledger_blocks b WHERE b.n = ledger.block) LIMIT 100"
    )
    for seq, kind, subj in orphans:
        report.findings.append(
            Finding("ledger", f"entry {seq}", None, f"{kind} {subj} claims a block that is gone")
        )
    unsealed = await store.fetchall(
        "SELECT seq, kind, subject, actor, body, created_at, hash, block FROM ledger"
        " WHERE block IS NULL ORDER BY seq"
    )
    for row in unsealed:
        e = LedgerEntry(*row)
        report.unsealed += 1
        if e.expected_hash() != e.hash:
            report.findings.append(
                Finding("ledger", f"entry {e.seq}", None, f"unsealed entry {e.seq} was changed")
            )


async def _deleted_runs(db: Executor, report: AuditReport) -> None:
    for kind, table, what in (
        ("run.created", "runs", "run"),
        ("approval.created", "approvals", "approval"),
    ):
        rows = await db.fetchall(
            f"SELECT l.subject FROM ledger l WHERE l.kind = ? AND NOT EXISTS"
            f" (SELECT 1 FROM {table} r WHERE r.id = l.subject) AND NOT EXISTS"
            " (SELECT 1 FROM ledger d WHERE d.subject = l.subject AND d.kind IN"
            " ('run.deleted', 'approval.deleted'))",
            (kind,),
        )
        for (subject,) in rows:
            report.findings.append(
                Finding(
                    what,
                    subject,
                    None,
                    f"the {what} was deleted whole (its creation is in the ledger, no deletion is)",
                )
            )


async def _run_pages(store: Store) -> AsyncIterator[list[tuple[Any, ...]]]:
    after = ""
    while True:
        rows = await store.fetchall(f"{RUN_SQL} WHERE id > ? ORDER BY id LIMIT ?", (after, PAGE))
        if not rows:
            return
        yield rows
        after = rows[-1][0]


async def _check_against(store: Store, report: AuditReport, head: SignedHead) -> None:
    row = await store.fetchone("SELECT hash FROM ledger_blocks WHERE n = ?", (head.n,))
    subject = f"block {head.n}"
    if row is None:
        report.findings.append(
            Finding("ledger", subject, None, "the block of the signed head is gone (truncated)")
        )
    elif row[0] != head.hash:
        report.findings.append(
            Finding(
                "ledger",
                subject,
                None,
                "the ledger was rewritten before the signed head: block"
                f" {head.n} no longer has the hash signed at {head.signed_at:.0f}",
            )
        )


async def audit(
    store: Store,
    *,
    seal_first: bool = True,
    against: SignedHead | None = None,
    progress: Callable[[int], None] | None = None,
) -> AuditReport:
    """Check the ledger (and, given ``against``, that nothing before a signed head was
    rewritten), every run, approval and call record; ``progress(n)`` is called as runs are
    done."""
    started = time.perf_counter()
    report = AuditReport()
    if seal_first:
        while await seal(store) is not None:
            pass
    await _check_ledger(store, report)
    if against is not None:
        await _check_against(store, report, against)
    async for rows in _run_pages(store):
        runs = [RunCheck(report, row) for row in rows]
        page = await Page.load(store, runs)
        for one in runs:
            one.check_loaded(page)
        if progress is not None:
            progress(len(rows))
    await check_approvals(store, report, "", ())
    await _deleted_runs(store, report)
    orphans = await store.fetchall(
        "SELECT DISTINCT run_id FROM journal j WHERE NOT EXISTS"
        " (SELECT 1 FROM runs r WHERE r.id = j.run_id) LIMIT 100"
    )
    for (run_id,) in orphans:
        report.findings.append(
            Finding("journal", run_id, None, "journal events of a run that does not exist")
        )
    await check_calls(store, report)
    await check_erasures(store, report)
    report.seconds = time.perf_counter() - started
    return report
