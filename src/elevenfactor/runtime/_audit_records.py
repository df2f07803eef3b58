"""Approvals (request, decision, who and when, against the ledger) and call records (each row's
hash and its payloads), a page at a time."""

from __future__ import annotations

from typing import Any

import orjson

from elevenfactor.governance import LedgerEntry
from elevenfactor.observe._calls import RECORD_COLUMNS, record_hash
from elevenfactor.runtime._audit_report import AuditReport, Finding
from elevenfactor.runtime._audit_runs import PAGE, payloads
from elevenfactor.runtime._retention_audit import excused, load_erased
from elevenfactor.store import Executor, blob_hash

__all__ = ["check_approvals", "check_calls"]


async def check_approvals(
    db: Executor, report: AuditReport, where: str, params: tuple[Any, ...]
) -> None:
    """Check the approvals selected by ``where`` (``"AND ..."``), a page at a time."""
    after = ""
    while True:
        rows = await db.fetchall(
            "SELECT id, run_id, step_id, name, request_hash, reviewer_group, status, decision,"
            " decision_hash, decided_by, decided_by_id, decided_at, org_id, user_id"
            f" FROM approvals WHERE id > ? {where} ORDER BY id LIMIT ?",
            (after, *params, PAGE),
        )
        if not rows:
            return
        await _check_approval_page(db, report, rows)
        after = rows[-1][0]


async def _check_approval_page(
    db: Executor, report: AuditReport, rows: list[tuple[Any, ...]]
) -> None:
    contents = await payloads(db, {r[4] for r in rows})
    ids = [r[0] for r in rows]
    erased = await load_erased(db, ids)
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
            if not excused(report, erased, aid, "request", request_hash):
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
        if decision is None and decision_hash and decided:
            # Erased (by retention or a forget) only with a marker naming its hash: then the
            # hash, the status and who decided are still checked against the ledger.
            report.payloads += 1
            if not excused(report, erased, aid, "decision", decision_hash):
                found("the approval's decision was removed (it is in the ledger)", "decision")
            sealed = decided[-1].data()
            if sealed.get("decision_hash") != decision_hash or sealed.get("status") != status:
                found("the decision differs from the one recorded in the ledger", "decision")
            if _json(decided[-1].actor).get("user_id") != decided_by_id:
                found("who decided differs from the ledger", "decision")
            continue
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


async def check_calls(db: Executor, report: AuditReport) -> None:
    cols = ", ".join(RECORD_COLUMNS)
    after = ""
    while True:
        rows = await db.fetchall(
            f"SELECT {cols}, record_hash FROM model_calls WHERE id > ? ORDER BY id LIMIT ?",
            (after, PAGE),
        )
        if not rows:
            return
        hashes = {h for r in rows for h in (r[17], r[18]) if h}
        contents = await payloads(db, hashes)
        erased = await load_erased(db, [r[0] for r in rows])
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
                if content is None and excused(report, erased, r[0], what, digest):
                    continue
                if content is None or blob_hash(content) != digest:
                    state = "missing" if content is None else "changed"
                    report.findings.append(
                        Finding("call", r[0], what, f"the {what} payload {digest} is {state}")
                    )
        after = rows[-1][0]
