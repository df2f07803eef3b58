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

Memory stays bounded: runs, approvals and call records are read a page at a time, and one run's
journal at a time.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from elevenfactor.governance import Block, LedgerEntry, iter_blocks, seal
from elevenfactor.governance._ledger import GENESIS, merkle_root
from elevenfactor.governance._signing import SignedHead
from elevenfactor.observe._calls import RECORD_COLUMNS, record_hash
from elevenfactor.runtime._journal import (
    Event,
    VerifyReport,
    event_hash,
    genesis_hash,
)
from elevenfactor.store import Executor, Store, blob_hash

__all__ = ["AuditReport", "Finding", "audit", "check_chain", "verify_one_run", "verify_run"]

_PAGE = 500
_EVENT_COLUMNS = (
    "run_id, n, step_id, kind, name, status, output_hash, error, fence, created_at, prev_hash, hash"
)
_FINAL = ("succeeded", "failed", "cancelled")


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing that does not check out: what (``kind``), which object, where in it, why."""

    kind: str
    subject: str
    where: str | None
    message: str

    def to_dict(self) -> dict[str, Any]:
        """As JSON."""
        return {
            "kind": self.kind,
            "subject": self.subject,
            "where": self.where,
            "message": self.message,
        }


@dataclass
class AuditReport:
    """What ``audit`` checked and found."""

    runs: int = 0
    events: int = 0
    payloads: int = 0
    approvals: int = 0
    calls: int = 0
    ledger_entries: int = 0
    blocks: int = 0
    unsealed: int = 0
    head: Block | None = None
    findings: list[Finding] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """Nothing found."""
        return not self.findings

    def to_dict(self) -> dict[str, Any]:
        """As JSON."""
        return {
            "ok": self.ok,
            "runs": self.runs,
            "events": self.events,
            "payloads": self.payloads,
            "approvals": self.approvals,
            "calls": self.calls,
            "ledger_entries": self.ledger_entries,
            "blocks": self.blocks,
            "unsealed": self.unsealed,
            "head": None if self.head is None else {"n": self.head.n, "hash": self.head.hash},
            "seconds": round(self.seconds, 3),
            "findings": [f.to_dict() for f in self.findings],
        }


# -- the journal chain --------------------------------------------------------------------------


def _hash_at(ev: Event, n: int, prev: str) -> str:
    return event_hash(
        prev,
        ev.run_id,
        n,
        ev.step_id,
        ev.kind,
        ev.name,
        ev.status,
        ev.output_hash,
        ev.error,
        ev.fence,
        ev.created_at,
    )


def check_chain(events: list[Event], genesis: str) -> tuple[int, str] | None:
    """The first broken link of a run's chain as ``(position, what happened)``, or None.

    Beyond "this link is broken" it tells what most likely happened there: an event edited in
    place, an event inserted (the next one still links past it), an event deleted (the one now
    in its place was written at the next position), or an event out of order.
    """
    prev = genesis
    for i, ev in enumerate(events):
        if ev.n != i:
            return i, f"event {i} is missing (deleted; event {ev.n} follows event {i - 1})"
        if ev.prev_hash == prev and ev.expected_hash() == ev.hash:
            prev = ev.hash
            continue
        nxt = events[i + 1] if i + 1 < len(events) else None
        before = events[i - 1] if i > 0 else None
        if nxt is not None and nxt.prev_hash == prev and _hash_at(nxt, i, prev) == nxt.hash:
            return i, f"event {i} was inserted: the event after it links past it"
        if (
            before is not None
            and ev.prev_hash == before.prev_hash
            and _hash_at(ev, i - 1, ev.prev_hash) == ev.hash
        ):
            return i - 1, f"event {i - 1} was inserted: the event after it links past it"
        if ev.prev_hash == prev:
            return i, f"event {i} was edited: its content no longer matches its hash"
        if _hash_at(ev, i + 1, ev.prev_hash) == ev.hash:
            return i, f"event {i} was deleted: the event now at {i} was written at position {i + 1}"
        if ev.expected_hash() == ev.hash and i == 0:
            return 0, "event 0 does not link to the run's genesis hash"
        if ev.expected_hash() == ev.hash:
            return i - 1, (
                f"event {i - 1} was rewritten (or events reordered): event {i} links to a"
                " different event"
            )
        return i, f"event {i} was replaced: neither its link nor its content checks out"
    return None


# -- one run --------------------------------------------------------------------------------------


async def _ledger_for(db: Executor, subject: str) -> list[LedgerEntry]:
    rows = await db.fetchall(
        "SELECT seq, kind, subject, actor, body, created_at, hash, block FROM ledger"
        " WHERE subject = ? ORDER BY seq",
        (subject,),
    )
    return [LedgerEntry(*r) for r in rows]


async def _payloads(db: Executor, hashes: set[str]) -> dict[str, bytes | None]:
    out: dict[str, bytes | None] = {}
    todo = sorted(h for h in hashes if h)
    for i in range(0, len(todo), _PAGE):
        chunk = todo[i : i + _PAGE]
        marks = ", ".join("?" for _ in chunk)
        for h, content in await db.fetchall(
            f"SELECT hash, content FROM blobs WHERE hash IN ({marks})", chunk
        ):
            out[h] = None if content is None else bytes(content)
    return out


class _Page:
    """What the checks of a page of runs need, in a handful of queries: their ledger entries,
    their journals and every payload they reference."""

    def __init__(self) -> None:
        self.ledger: dict[str, list[LedgerEntry]] = {}
        self.events: dict[str, list[Event]] = {}
        self.inline: dict[tuple[str, int], bytes] = {}
        """Step outputs kept in their journal row, by (run, position): each copy is checked."""
        self.contents: dict[str, bytes | None] = {}

    @classmethod
    async def load(cls, db: Executor, runs: list[_Run]) -> _Page:
        page = cls()
        ids = [r.id for r in runs]
        marks = ", ".join("?" for _ in ids)
        for row in await db.fetchall(
            "SELECT seq, kind, subject, actor, body, created_at, hash, block FROM ledger"
            f" WHERE subject IN ({marks}) ORDER BY seq",
            ids,
        ):
            entry = LedgerEntry(*row)
            page.ledger.setdefault(entry.subject, []).append(entry)
        for row in await db.fetchall(
            f"SELECT {_EVENT_COLUMNS}, output FROM journal WHERE run_id IN ({marks})"
            " ORDER BY run_id, n",
            ids,
        ):
            ev = Event(*row[:-1])
            page.events.setdefault(ev.run_id, []).append(ev)
            if row[-1] is not None:
                page.inline[(ev.run_id, ev.n)] = bytes(row[-1])
        wanted = {h for r in runs for h in r.blobs()}
        wanted |= {
            e.output_hash
            for evs in page.events.values()
            for e in evs
            if e.output_hash and (e.run_id, e.n) not in page.inline
        }
        page.contents = await _payloads(db, wanted)
        return page


class _Run:
    """The checks of one run; ``found`` collects what does not check out."""

    def __init__(self, report: AuditReport, row: tuple[Any, ...]) -> None:
        self.report = report
        (
            self.id,
            self.program,
            self.status,
            self.input_hash,
            self.result_hash,
            self.error,
            self.parent_id,
            self.created_at,
            self.genesis,
            self.head,
            *owner,
        ) = row
        self.owner = list(owner)

    def found(self, where: str | None, message: str, kind: str = "run") -> None:
        self.report.findings.append(Finding(kind, self.id, where, message))

    async def check(self, db: Executor) -> None:
        """Check this run alone (its own queries)."""
        page = await _Page.load(db, [self])
        self.check_loaded(page)

    def check_loaded(self, page: _Page) -> None:
        """Check this run against what ``page`` loaded for it."""
        self.report.runs += 1
        entries = page.ledger.get(self.id, [])
        created = [e for e in entries if e.kind == "run.created"]
        if not created:
            self.found(None, "the run is not in the ledger (inserted outside the runtime?)")
        else:
            self._check_created(created[0].data())
        expected_genesis = genesis_hash(self.id, self.program, self.input_hash, self.created_at)
        if self.genesis != expected_genesis:
            self.found(None, "the run's identity or input was changed (genesis hash mismatch)")
        events = page.events.get(self.id, [])
        self.report.events += len(events)
        broken = check_chain(events, self.genesis)
        if broken is not None:
            self.found(f"event {broken[0]}", broken[1], "journal")
        self._check_payloads(events, page)
        anchors = [e for e in entries if e.kind in ("run.checkpoint", "run.ended")]
        self._check_anchor(events, anchors[-1] if anchors else None, broken is None)

    def blobs(self) -> set[str]:
        """The payloads this run's row references."""
        return {h for h in (self.input_hash, self.result_hash) if h}

    def _check_created(self, body: dict[str, Any]) -> None:
        expected = {
            "program": self.program,
            "input_hash": self.input_hash,
            "genesis": self.genesis,
            "parent_id": self.parent_id,
            "owner": self.owner,
        }
        for key, value in expected.items():
            if body.get(key) != value:
                self.found(None, f"the run's {key} differs from its ledger entry")

    def _check_payloads(self, events: list[Event], page: _Page) -> None:
        def rehash(digest: str, where: str, what: str, content: bytes | None = None) -> None:
            self.report.payloads += 1
            if content is None:
                content = page.contents.get(digest)
            if content is None:
                self.found(where, f"the {what} payload {digest} is missing", "payload")
            elif blob_hash(content) != digest:
                self.found(where, f"the {what} payload {digest} was changed", "payload")

        rehash(self.input_hash, "input", "input")
        for ev in events:
            if ev.output_hash:
                rehash(
                    ev.output_hash,
                    f"event {ev.n} (step {ev.step_id})",
                    "step output",
                    page.inline.get((ev.run_id, ev.n)),
                )
        if self.result_hash:
            rehash(self.result_hash, "result", "result")

    def _check_anchor(
        self, events: list[Event], anchor: LedgerEntry | None, chain_ok: bool
    ) -> None:
        if anchor is None:
            if self.status in _FINAL:
                self.found(None, f"the run is {self.status} but its end is not in the ledger")
            elif self.result_hash is not None or self.error is not None:
                # Both are only ever written with a checkpoint or an end in the same transaction.
                self.found(
                    None, "the run has a result or an error but no checkpoint or end in the ledger"
                )
            return
        body = anchor.data()
        sealed_events = int(body.get("events") or 0)
        # The result and the error only change when the run settles, which writes the anchor in
        # the same transaction: a checkpoint covers them as an end does.
        sealed_at = "at its end" if anchor.kind == "run.ended" else "at its last checkpoint"
        if self.result_hash != body.get("result_hash"):
            self.found("result", f"the run's result differs from the one sealed {sealed_at}")
        error_hash = blob_hash(self.error.encode()) if self.error is not None else None
        if error_hash != body.get("error_hash"):
            self.found(None, f"the run's error differs from the one sealed {sealed_at}")
        if anchor.kind == "run.ended":
            if self.status != body.get("status"):
                self.found(
                    None,
                    f"the run's status is {self.status} but the ledger sealed it as"
                    f" {body.get('status')}",
                )
            if len(events) > sealed_events and chain_ok:
                self.found(
                    f"event {sealed_events}",
                    f"{len(events) - sealed_events} event(s) were added after the run ended"
                    f" (the ledger sealed {sealed_events})",
                    "journal",
                )
        if len(events) < sealed_events and chain_ok:
            self.found(
                f"event {len(events)}",
                f"the chain was cut short: the ledger sealed {sealed_events} events,"
                f" {len(events)} remain",
                "journal",
            )
        head = body.get("head_hash")
        if (
            sealed_events
            and len(events) >= sealed_events
            and chain_ok
            and events[sealed_events - 1].hash != head
        ):
            self.found(
                f"event {sealed_events - 1}",
                "the chain was rewritten: its head differs from the one sealed in the ledger",
                "journal",
            )
        if anchor.kind == "run.ended" and self.head != head:
            self.found(None, "the run's head hash differs from the one sealed at its end")


_RUN_SQL = (
    "SELECT id, program, status, input_hash, result_hash, error, parent_id, created_at,"
    " genesis_hash, head_hash, org_id, team_id, user_id, key_id FROM runs"
)


async def verify_one_run(store: Store, run_id: str) -> AuditReport:
    """Check one run (chain, payloads, ledger anchors) and its approvals."""
    report = AuditReport()
    row = await store.fetchone(f"{_RUN_SQL} WHERE id = ?", (run_id,))
    if row is None:
        entries = await _ledger_for(store, run_id)
        kinds = {e.kind for e in entries}
        if "run.deleted" not in kinds:
            message = (
                "the run was deleted whole (its creation is in the ledger, no deletion is)"
                if "run.created" in kinds
                else "no such run"
            )
            report.findings.append(Finding("run", run_id, None, message))
        return report
    await _Run(report, row).check(store)
    await _check_approvals(store, report, "AND run_id = ?", (run_id,))
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


# -- approvals and call records ---------------------------------------------------------------


async def _check_approvals(
    db: Executor, report: AuditReport, where: str, params: tuple[Any, ...]
) -> None:
    """Check the approvals selected by ``where`` (``"AND ..."``), a page at a time."""
    after = ""
    while True:
        rows = await db.fetchall(
            "SELECT id, run_id, step_id, name, request_hash, reviewer_group, status, decision,"
            " decision_hash, decided_by, decided_by_id, decided_at, org_id, user_id"
            f" FROM approvals WHERE id > ? {where} ORDER BY id LIMIT ?",
            (after, *params, _PAGE),
        )
        if not rows:
            return
        await _check_approval_page(db, report, rows)
        after = rows[-1][0]


async def _check_approval_page(
    db: Executor, report: AuditReport, rows: list[tuple[Any, ...]]
) -> None:
    contents = await _payloads(db, {r[4] for r in rows})
    ids = [r[0] for r in rows]
    marks = ", ".join("?" for _ in ids)
    ledger: dict[str, list[LedgerEntry]] = {}
    for row in await db.fetchall(
        "SELECT seq, kind, subject, actor, body, created_at, hash, block FROM ledger"
        f" WHERE subject IN ({marks}) ORDER BY seq",
        ids,
    ):
        entry = LedgerEntry(*row)
        ledger.setdefault(entry.subject, []).append(entry)
    for r in rows:
        (aid, run_id, step_id, name, request_hash, group, status, decision, decision_hash,
         decided_by, decided_by_id, decided_at, org_id, user_id) = r  # fmt: skip
        report.approvals += 1
        report.payloads += 1

        def found(message: str, where: str | None = None, aid: str = aid) -> None:
            report.findings.append(Finding("approval", aid, where, message))

        content = contents.get(request_hash)
        if content is None:
            found(f"the request payload {request_hash} is missing", "request")
        elif blob_hash(content) != request_hash:
            found(f"the request payload {request_hash} was changed", "request")
        entries = ledger.get(aid, [])
        created = next((e.data() for e in entries if e.kind == "approval.created"), None)
        if created is None:
            found("the approval is not in the ledger (inserted outside the runtime?)")
        else:
            groups = [created.get("group")] + [
                e.data().get("group") for e in entries if e.kind == "approval.escalated"
            ]
            for key, value in (
                ("run_id", run_id),
                ("step_id", step_id),
                ("name", name),
                ("request_hash", request_hash),
            ):
                if created.get(key) != value:
                    found(f"the approval's {key} differs from its ledger entry")
            if group != groups[-1]:
                found("the approval's reviewer group differs from its ledger entries")
        decided = [e for e in entries if e.kind == "approval.decided"]
        if decision is None:
            if decided:
                found("the approval's decision was removed (it is in the ledger)", "decision")
            elif status not in ("pending", "cancelled"):
                found(f"the approval is {status} but has no decision (none is in the ledger)")
            elif (status == "cancelled") != any(e.kind == "approval.cancelled" for e in entries):
                found(
                    f"the approval is {status}, but the ledger says it was"
                    + (" not" if status == "cancelled" else "")
                    + " cancelled"
                )
            elif any(v is not None for v in (decision_hash, decided_by, decided_by_id, decided_at)):
                found("the approval names a decider but has no decision", "decision")
            continue
        report.payloads += 1
        digest = blob_hash(decision.encode())
        if digest != decision_hash:
            found("the decision was changed (it no longer matches its hash)", "decision")
        if not decided:
            found("the decision is not in the ledger", "decision")
            continue
        sealed = decided[-1].data()
        if sealed.get("decision_hash") != decision_hash:
            found("the decision differs from the one recorded in the ledger", "decision")
        if sealed.get("status") != status:
            found(f"the approval's status {status} differs from the ledger", "decision")
        actor = _json(decided[-1].actor)
        try:
            parsed = orjson.loads(decision)
        except orjson.JSONDecodeError:
            parsed = {}
        if actor.get("user_id") != decided_by_id or (
            isinstance(parsed, dict)
            and (parsed.get("decided_by") != decided_by or parsed.get("decided_at") != decided_at)
        ):
            found("who decided, or when, differs from the ledger and the decision", "decision")
        del org_id, user_id  # owners are covered by the run's ledger entry


def _json(text: str) -> dict[str, Any]:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


async def _check_calls(db: Executor, report: AuditReport) -> None:
    cols = ", ".join(RECORD_COLUMNS)
    after = ""
    while True:
        rows = await db.fetchall(
            f"SELECT {cols}, record_hash FROM model_calls WHERE id > ? ORDER BY id LIMIT ?",
            (after, _PAGE),
        )
        if not rows:
            return
        hashes = {h for r in rows for h in (r[17], r[18]) if h}
        contents = await _payloads(db, hashes)
        for r in rows:
            report.calls += 1
            if record_hash(tuple(r[:-1])) != r[-1]:
                report.findings.append(
                    Finding("call", r[0], None, "the call record was changed (hash mismatch)")
                )
            for digest, what in ((r[17], "request"), (r[18], "response")):
                if not digest:
                    continue
                report.payloads += 1
                content = contents.get(digest)
                if content is None or blob_hash(content) != digest:
                    state = "missing" if content is None else "changed"
                    report.findings.append(
                        Finding("call", r[0], what, f"the {what} payload {digest} is {state}")
                    )
        after = rows[-1][0]


# -- the ledger -----------------------------------------------------------------------------------


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
        rows = await store.fetchall(f"{_RUN_SQL} WHERE id > ? ORDER BY id LIMIT ?", (after, _PAGE))
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
        runs = [_Run(report, row) for row in rows]
        page = await _Page.load(store, runs)
        for one in runs:
            one.check_loaded(page)
        if progress is not None:
            progress(len(rows))
    await _check_approvals(store, report, "", ())
    await _deleted_runs(store, report)
    orphans = await store.fetchall(
        "SELECT DISTINCT run_id FROM journal j WHERE NOT EXISTS"
        " (SELECT 1 FROM runs r WHERE r.id = j.run_id) LIMIT 100"
    )
    for (run_id,) in orphans:
        report.findings.append(
            Finding("journal", run_id, None, "journal events of a run that does not exist")
        )
    await _check_calls(store, report)
    report.seconds = time.perf_counter() - started
    return report
