"""One run checked against its ledger entries: identity, chain, payloads, checkpoints and end.

A page of runs is loaded in a handful of queries (``Page``); each run is then checked in memory.
"""

from __future__ import annotations

from typing import Any

from elevenfactor.governance import LedgerEntry
from elevenfactor.runtime._audit_chain import check_chain
from elevenfactor.runtime._audit_report import AuditReport, Finding
from elevenfactor.runtime._journal import Event, genesis_hash
from elevenfactor.runtime._retention_audit import Erased, excused, load_erased
from elevenfactor.store import Executor, blob_hash

__all__ = ["RUN_SQL", "Page", "RunCheck", "ledger_for", "payloads"]

PAGE = 500
_EVENT_COLUMNS = (
    "run_id, n, step_id, kind, name, status, output_hash, error, fence, created_at, prev_hash, hash"
)
_FINAL = ("succeeded", "failed", "cancelled")


async def ledger_for(db: Executor, subject: str) -> list[LedgerEntry]:
    rows = await db.fetchall(
        "SELECT seq, kind, subject, actor, body, created_at, hash, block FROM ledger"
        " WHERE subject = ? ORDER BY seq",
        (subject,),
    )
    return [LedgerEntry(*r) for r in rows]


async def payloads(db: Executor, hashes: set[str]) -> dict[str, bytes | None]:
    out: dict[str, bytes | None] = {}
    todo = sorted(h for h in hashes if h)
    for i in range(0, len(todo), PAGE):
        chunk = todo[i : i + PAGE]
        marks = ", ".join("?" for _ in chunk)
        for h, content in await db.fetchall(
            f"SELECT hash, content FROM blobs WHERE hash IN ({marks})", chunk
        ):
            out[h] = None if content is None else bytes(content)
    return out


class Page:
    """What the checks of a page of runs need, in a handful of queries: their ledger entries,
    their journals and every payload they reference."""

    def __init__(self) -> None:
        self.ledger: dict[str, list[LedgerEntry]] = {}
        self.events: dict[str, list[Event]] = {}
        self.inline: dict[tuple[str, int], bytes] = {}
        """Step outputs kept in their journal row, by (run, position): each copy is checked."""
        self.contents: dict[str, bytes | None] = {}
        self.erased: Erased = {}
        """Payloads of these runs erased by retention or a forget (hashes kept)."""

    @classmethod
    async def load(cls, db: Executor, runs: list[RunCheck]) -> Page:
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
        page.contents = await payloads(db, wanted)
        page.erased = await load_erased(db, ids)
        return page


class RunCheck:
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
        page = await Page.load(db, [self])
        self.check_loaded(page)

    def check_loaded(self, page: Page) -> None:
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

    def _check_payloads(self, events: list[Event], page: Page) -> None:
        def rehash(
            digest: str, where: str, what: str, location: str, content: bytes | None = None
        ) -> None:
            self.report.payloads += 1
            if content is None:
                content = page.contents.get(digest)
            if content is None:
                if not excused(self.report, page.erased, self.id, location, digest):
                    self.found(where, f"the {what} payload {digest} is missing", "payload")
            elif blob_hash(content) != digest:
                self.found(where, f"the {what} payload {digest} was changed", "payload")

        rehash(self.input_hash, "input", "input", "input")
        for ev in events:
            if ev.output_hash:
                rehash(
                    ev.output_hash,
                    f"event {ev.n} (step {ev.step_id})",
                    "step output",
                    f"event:{ev.n}",
                    page.inline.get((ev.run_id, ev.n)),
                )
        if self.result_hash:
            rehash(self.result_hash, "result", "result", "result")

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


RUN_SQL = (
    "SELECT id, program, status, input_hash, result_hash, error, parent_id, created_at,"
    " genesis_hash, head_hash, org_id, team_id, user_id, key_id FROM runs"
)
