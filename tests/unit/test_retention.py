"""Retention on SQLite and PostgreSQL: content past its period is erased physically, every hash
stays, ``audit`` still verifies and tells an erasure from a blob deleted by hand."""

from __future__ import annotations

import time
from typing import Any

import pytest

from elevenfactor.config import RetentionConfig, parse_project
from elevenfactor.config._retention import parse_period
from elevenfactor.governance import local_admin
from elevenfactor.governance._retention import apply_retention
from elevenfactor.observe import CallRecord, CallRecorder
from elevenfactor.runtime import (
    Housekeeper,
    Programs,
    RunContext,
    Worker,
    approval,
    audit,
    decide_approval,
    list_approvals,
    submit_run,
)
from elevenfactor.store import Store
from tests.support.principals import member, reviewer

MARK = "zq-retention-marker-4c1d"
DAY = 86400.0
KEEP_ALL = RetentionConfig()
MONTH = RetentionConfig.model_validate(
    {"default": {"runs": "30d", "approvals": "30d", "calls": "30d"}}
)


def programs() -> Programs:
    p = Programs()

    @p.workflow("echo")
    async def echo(ctx: RunContext, text: str) -> str:
        said = await ctx.step("say", lambda: f"said {text}")
        big = await ctx.step("big", lambda: text * 3000)  # over INLINE_MAX: a blob
        return f"{said} / {len(big)}"

    @p.workflow("pay")
    async def pay(ctx: RunContext, args: dict[str, Any]) -> Any:
        decision = await approval(ctx, "pay", args, group="finance")
        return decision.reason

    return p


async def populate(store: Store, text: str = MARK, user: str = "ann") -> dict[str, str]:
    """An echo run, a paid run with a decided approval and a call record, all carrying
    ``text``; their ids."""
    owner = member(user)
    echo = await submit_run(store, "echo", text, owner=owner)
    pay = await submit_run(store, "pay", {"to": text, "amount": 5}, owner=owner)
    worker = Worker(store, programs())
    await worker.run_until_idle()
    [pending] = [a for a in await list_approvals(store) if a.run_id == pay]
    await decide_approval(
        store, pending.id, "approve", by=reviewer("rita", "finance"), reason=f"ok {text}"
    )
    await worker.run_until_idle()
    recorder = CallRecorder(store)
    rec = CallRecord(
        trace_id="t" * 32,
        route="default",
        stream=False,
        status="ok",
        tokens_in=3,
        tokens_out=4,
        latency_ms=1.0,
        org_id=owner.org_id,
        user_id=owner.user_id,
        request=f'{{"messages": [{{"role": "user", "content": "{text}"}}]}}'.encode(),
        response=f'{{"content": "hi {text}"}}'.encode(),
    )
    recorder.record(rec)
    await recorder.flush()
    return {"echo": echo, "pay": pay, "approval": pending.id, "call": rec.id}


async def scan_for(store: Store, needle: str) -> list[str]:
    """Every ``table.column`` of every table holding ``needle`` (text or bytes)."""
    if store.dialect == "sqlite":
        rows = await store.fetchall("SELECT name FROM sqlite_master WHERE type = 'table'")
    else:
        rows = await store.fetchall(
            "SELECT table_name FROM information_schema.tables"
            " WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'"
        )
    raw = needle.encode()
    found: list[str] = []
    for (table,) in rows:
        if store.dialect == "sqlite":
            cols = [r[1] for r in await store.fetchall(f"PRAGMA table_info({table})")]
        else:
            cols = [
                r[0]
                for r in await store.fetchall(
                    "SELECT column_name FROM information_schema.columns WHERE table_name = ?"
                    " AND table_schema = current_schema() ORDER BY ordinal_position",
                    (table,),
                )
            ]
        for row in await store.fetchall(f"SELECT * FROM {table}"):
            for col, value in zip(cols, row, strict=True):
                text = isinstance(value, str) and needle in value
                binary = isinstance(value, bytes | bytearray | memoryview) and raw in bytes(value)
                if text or binary:
                    found.append(f"{table}.{col}")
    return sorted(set(found))


def test_periods_parse_and_rules_resolve() -> None:
    assert parse_period("30d") == 30 * DAY and parse_period("12h") == 12 * 3600
    with pytest.raises(ValueError):
        parse_period("30 days")
    project = parse_project(
        {
            "retention": {
                "default": {"runs": "30d", "calls": "7d"},
                "programs": {"keep": {"runs": None}, "short": {"runs": "1d"}},
                "tags": {"pii": {"runs": "2h"}, "loose": {"runs": "90d"}},
            }
        }
    )
    cfg = project.retention
    assert cfg.configured and not KEEP_ALL.configured
    assert cfg.period("runs", "other", []) == 30 * DAY
    assert cfg.period("runs", "keep", []) is None  # null: forever, set explicitly
    assert cfg.period("runs", "short", []) == DAY
    assert cfg.period("runs", "keep", ["pii", "loose"]) == 2 * 3600  # shortest tag wins
    assert cfg.period("calls", "short", []) == 7 * DAY  # not set by the program: default
    assert cfg.period("approvals", "other", []) is None
    with pytest.raises(Exception, match="not a period"):
        parse_project({"retention": {"default": {"runs": "soon"}}})


async def test_a_purge_erases_content_keeps_hashes_and_audit_passes(store: Store) -> None:
    ids = await populate(store)
    assert (await audit(store)).ok
    assert await scan_for(store, MARK)
    later = time.time() + 31 * DAY

    dry = await apply_retention(store, MONTH, now=later, dry_run=True)
    assert dry.runs == 2 and dry.inputs == 2 and dry.results == 2 and dry.step_outputs >= 3
    assert dry.approval_requests == 1 and dry.approval_decisions == 1
    assert dry.call_requests == 1 and dry.call_responses == 1 and not dry.ledger_entries
    assert (await store.fetchone("SELECT COUNT(*) FROM erasures"))[0] == 0  # type: ignore[index]
    assert await scan_for(store, MARK)  # a dry run changes nothing

    before = (await store.fetchone("SELECT COUNT(*) FROM ledger"))[0]  # type: ignore[index]
    done = await apply_retention(store, MONTH, now=later, actor=local_admin("cli").actor())
    assert done.counts() == dry.counts() and len(done.ledger_entries) == 1
    after = (await store.fetchone("SELECT COUNT(*) FROM ledger"))[0]  # type: ignore[index]
    assert after == before + 1
    entry = await store.fetchone(
        "SELECT kind, body FROM ledger WHERE seq = ?", (done.ledger_entries[0],)
    )
    assert entry is not None and entry[0] == "retention.purge" and MARK not in entry[1]
    assert '"erasure"' in entry[1] and '"call_requests":1' in entry[1]

    assert await scan_for(store, MARK) == []
    hashes = await store.fetchone(
        "SELECT input_hash, result_hash FROM runs WHERE id = ?", (ids["echo"],)
    )
    assert hashes is not None and all(hashes)  # the hashes stay
    report = await audit(store)
    assert report.ok, report.findings
    assert report.erased == done.erased and report.erased_by == set(done.ledger_entries)
    again = await apply_retention(store, MONTH, now=later)
    assert again.erased == 0 and not again.ledger_entries


async def test_nothing_is_erased_before_its_period_or_without_a_policy(store: Store) -> None:
    await populate(store)
    assert (await apply_retention(store, KEEP_ALL, now=time.time() + 999 * DAY)).erased == 0
    assert (await apply_retention(store, MONTH, now=time.time() + 29 * DAY)).erased == 0
    calls_only = RetentionConfig.model_validate({"default": {"calls": "1d"}})
    done = await apply_retention(store, calls_only, now=time.time() + 2 * DAY)
    assert done.counts()["call_requests"] == 1 and done.runs == 0
    assert await scan_for(store, MARK)  # the runs keep theirs
    assert (await audit(store)).ok


async def test_shared_content_stays_while_a_kept_row_uses_it(store: Store) -> None:
    await populate(store)
    keep = await submit_run(store, "keeper", MARK, owner=member("bob"))
    cfg = RetentionConfig.model_validate(
        {"default": {"runs": "30d"}, "programs": {"keeper": {"runs": None}}}
    )
    await store.execute("UPDATE runs SET status = 'cancelled' WHERE id = ?", (keep,))
    await apply_retention(store, cfg, now=time.time() + 31 * DAY)
    row = await store.fetchone("SELECT input_hash FROM runs WHERE id = ?", (keep,))
    assert row is not None
    blob = await store.fetchone("SELECT content FROM blobs WHERE hash = ?", (row[0],))
    assert blob is not None and MARK.encode() in bytes(blob[0])  # the kept run's input


async def test_a_blob_deleted_by_hand_is_still_caught(store: Store) -> None:
    ids = await populate(store)
    row = await store.fetchone("SELECT input_hash FROM runs WHERE id = ?", (ids["pay"],))
    assert row is not None
    await store.execute("DELETE FROM blobs WHERE hash = ?", (row[0],))
    found = [f for f in (await audit(store)).findings if f.kind == "payload"]
    assert found and "missing" in found[0].message


async def test_a_forged_erasure_marker_is_caught(store: Store) -> None:
    ids = await populate(store)
    cfg = RetentionConfig.model_validate({"default": {"calls": "1d"}})
    done = await apply_retention(store, cfg, now=time.time() + 2 * DAY)
    row = await store.fetchone("SELECT input_hash FROM runs WHERE id = ?", (ids["pay"],))
    assert row is not None
    # delete a blob by hand and excuse it with a marker pointing at the real purge
    await store.execute("DELETE FROM blobs WHERE hash = ?", (row[0],))
    await store.execute(
        "INSERT INTO erasures (subject, location, hash, ledger_seq, erased_at)"
        " VALUES (?, 'input', ?, ?, 0)",
        (ids["pay"], row[0], done.ledger_entries[0]),
    )
    found = [f for f in (await audit(store)).findings if f.kind == "erasure"]
    assert found and "were added, removed or changed" in found[0].message
    await store.execute("UPDATE erasures SET ledger_seq = 999999 WHERE subject = ?", (ids["pay"],))
    found = [f for f in (await audit(store)).findings if f.kind == "erasure"]
    assert any("does not exist" in f.message for f in found)


async def test_the_housekeeper_applies_the_policy(store: Store) -> None:
    await populate(store)
    keeper = Housekeeper(store, 0, retention=MONTH)
    assert "retention" in keeper.jobs
    assert "retention" not in Housekeeper(store, 0, retention=KEEP_ALL).jobs
    done = await keeper.tick(time.time() + 31 * DAY)
    assert done["retention"] >= 9
    assert await scan_for(store, MARK) == []
    assert (await audit(store)).ok


async def test_large_purges_go_in_chunks_of_whole_runs(store: Store) -> None:
    for i in range(3):
        await populate(store, f"{MARK}-{i}")
    done = await apply_retention(store, MONTH, now=time.time() + 31 * DAY, chunk=4)
    assert len(done.ledger_entries) > 2 and done.runs == 6
    assert (await audit(store)).ok
