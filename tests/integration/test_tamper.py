"""Tamper trials: on a realistic store (SQLite and PostgreSQL), every single change an attacker
with write access to the database could make — a journal column, a payload, a run, an approval,
a ledger entry or block, a ledger entry deleted, a run deleted whole, a journal cut short, a
forged event slipped in — is caught by ``audit`` and named; and a history rewritten with every
hash recomputed is caught against a head signed before it."""

from __future__ import annotations

import asyncio
import random
import shutil
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from elevenfactor.errors import RequestError
from elevenfactor.governance import (
    Block,
    LedgerEntry,
    export_head,
    generate_keypair,
    seal,
    verify_head,
)
from elevenfactor.governance._ledger import GENESIS, block_hash, canonical, entry_hash, merkle_root
from elevenfactor.observe import CallRecord, CallRecorder
from elevenfactor.observe._calls import RECORD_COLUMNS
from elevenfactor.runtime import (
    AuditReport,
    Event,
    Programs,
    RunContext,
    Worker,
    approval,
    audit,
    cancel_run,
    decide_approval,
    get_run,
    list_approvals,
    load_events,
    run_child,
    run_result,
    submit_run,
)
from elevenfactor.runtime._journal import INLINE_MAX, event_hash
from elevenfactor.store import Store, blob_hash, open_store
from tests.conftest import PG_URL
from tests.support.principals import reviewer

pytestmark = pytest.mark.integration

TRIALS = 220
FINAL = ("succeeded", "failed", "cancelled")

# -- a realistic store ----------------------------------------------------------------------------


def _programs() -> Programs:
    p = Programs()

    @p.workflow("steps")
    async def steps(ctx: RunContext, n: int) -> dict[str, int]:
        total = 0
        for i in range(n):
            total += await ctx.step(f"s{i}", lambda i=i: i * i + n)
        return {"total": total}

    async def branch(ctx: RunContext, item: int) -> int:
        doubled = await ctx.step("double", lambda: item * 2)
        return doubled + await ctx.step("inc", lambda: 1)

    @p.workflow("fan")
    async def fan(ctx: RunContext, items: list[int]) -> list[int]:
        out = await ctx.map(branch, items, limit=2)
        await ctx.step("sum", lambda: sum(out))
        # Larger than INLINE_MAX: kept in the blob table, not in the event row.
        await ctx.step("report", lambda: {"text": "x" * (INLINE_MAX + 1), "sum": sum(out)})
        return out

    @p.workflow("pay")
    async def pay(ctx: RunContext, args: dict[str, Any]) -> dict[str, Any]:
        await ctx.step("quote", lambda: {"quoted": args["amount"]})
        decision = await approval(ctx, "pay", {"tool": "pay", "arguments": args}, group="finance")
        if not decision.approved:
            return {"paid": None, "reason": decision.reason}
        final = decision.arguments or args
        await ctx.step("send", lambda: {"sent": final["amount"], "to": final["to"]})
        return {"paid": final["amount"], "by": decision.decided_by}

    @p.workflow("child")
    async def child(ctx: RunContext, n: int) -> int:
        return await ctx.step("square", lambda: n * n)

    @p.workflow("parent")
    async def parent(ctx: RunContext, ns: list[int]) -> dict[str, int]:
        total = 0
        for n in ns:
            total += await run_child(ctx, "child", n)
        return await ctx.step("report", lambda: {"total": total})

    def charge() -> None:
        raise ValueError("card declined")

    @p.workflow("boom")
    async def boom(ctx: RunContext, _: Any) -> None:
        await ctx.step("prepare", lambda: "ready")
        await ctx.step("charge", charge)

    return p


PROGRAMS = ("steps", "fan", "pay", "child", "parent", "boom")
STATUSES = {
    "steps-2": "succeeded",
    "steps-3": "succeeded",
    "steps-5": "succeeded",
    "steps-8": "succeeded",
    "fan-a": "succeeded",
    "fan-b": "succeeded",
    "pay-edit": "succeeded",
    "pay-reject": "succeeded",
    "pay-pending": "waiting",
    "pay-cancel": "cancelled",
    "parent": "succeeded",
    "parent.0": "succeeded",
    "parent.1": "succeeded",
    "boom": "failed",
    "steps-cancelled": "cancelled",
}


async def _build(store: Store) -> None:
    """15 runs of every shape (multi-step, parallel map, approvals edited / rejected / pending /
    cancelled, a parent with two children, a failure, a cancellation), call records; sealed in
    several blocks."""
    worker = Worker(store, _programs())
    for n in (2, 3, 5, 8):
        await submit_run(store, "steps", n, run_id=f"steps-{n}")
    await submit_run(store, "fan", [1, 2, 3, 4], run_id="fan-a")
    await submit_run(store, "fan", [5, 6, 7], run_id="fan-b")
    await worker.run_until_idle()
    await seal(store)
    for name, amount in (("edit", 10), ("reject", 20), ("pending", 30), ("cancel", 40)):
        await submit_run(store, "pay", {"to": "acme", "amount": amount}, run_id=f"pay-{name}")
    await submit_run(store, "parent", [2, 3], run_id="parent")
    await submit_run(store, "boom", None, run_id="boom")
    await worker.run_until_idle()
    await seal(store)
    gates = {a.run_id: a for a in await list_approvals(store)}
    await decide_approval(
        store,
        gates["pay-edit"].id,
        "edit",
        by=reviewer("rita", "finance"),
        reason="over budget",
        arguments={"to": "acme", "amount": 9},
    )
    await decide_approval(
        store, gates["pay-reject"].id, "reject", by=reviewer("bob", "finance"), reason="who?"
    )
    await cancel_run(store, "pay-cancel", "customer withdrew")
    await submit_run(store, "steps", 4, run_id="steps-cancelled")
    await cancel_run(store, "steps-cancelled", "not needed")
    await worker.run_until_idle()
    await seal(store)
    recorder = CallRecorder(store)
    for i in range(4):
        recorder.record(
            CallRecord(
                id=f"call-{i}",
                trace_id=f"trace-{i}",
                route="default",
                stream=bool(i % 2),
                status="ok" if i != 3 else "error",
                error_class=None if i != 3 else "RateLimited",
                tokens_in=100 + i,
                tokens_out=20 + i,
                latency_ms=12.5 + i,
                provider="test",
                deployment="echo",
                model="echo-1",
                cost=0.25 * (i + 1),
                failover_path=["echo"],
                org_id="org_default",
                user_id="user_local",
                run_id="pay-edit" if i < 2 else None,
                request=orjson.dumps({"messages": [{"role": "user", "content": f"q{i}"}]}),
                response=orjson.dumps({"content": f"a{i}"}),
            )
        )
    assert await recorder.flush() == 4
    while await seal(store) is not None:
        pass
    assert {r[0]: r[1] for r in await store.fetchall("SELECT id, status FROM runs")} == STATUSES


# -- what the pristine store holds ------------------------------------------------------------


@dataclass
class Inventory:
    """The pristine store's rows, from which trials pick their targets."""

    runs: dict[str, dict[str, Any]]
    events: dict[str, list[Event]]
    approvals: list[dict[str, Any]]
    entries: list[LedgerEntry]
    blocks: list[Block]
    calls: list[dict[str, Any]]
    blobs: dict[str, bytes]
    refs: dict[str, set[str]]
    """Blob hash -> the runs, approvals and calls that reference it."""
    targets: list[tuple[str, str, str, str]]
    """(what, subject, hash, where) for every reference to a payload; ``where`` is ``blob``, or
    ``inline:<run>:<n>`` for a step output kept in its event row."""
    inline: dict[tuple[str, int], bytes]

    @property
    def with_events(self) -> list[str]:
        return [rid for rid in self.runs if self.events.get(rid)]

    @property
    def finished(self) -> list[str]:
        return [rid for rid, r in self.runs.items() if r["status"] in FINAL]


async def _rows(db: Store, table: str, cols: tuple[str, ...], order: str) -> list[dict[str, Any]]:
    rows = await db.fetchall(f"SELECT {', '.join(cols)} FROM {table} ORDER BY {order}")
    return [dict(zip(cols, r, strict=True)) for r in rows]


async def _inventory(db: Store) -> Inventory:
    run_cols = (
        "id program status input_hash result_hash error parent_id created_at genesis_hash"
        " head_hash org_id team_id user_id key_id"
    )
    runs = {r["id"]: r for r in await _rows(db, "runs", tuple(run_cols.split()), "id")}
    events = {rid: await load_events(db, rid) for rid in runs}
    approval_cols = (
        "id run_id step_id name status request_hash reviewer_group decision decision_hash"
        " decided_by decided_by_id"
    )
    approvals = await _rows(db, "approvals", tuple(approval_cols.split()), "run_id")
    entries = [
        LedgerEntry(*r)
        for r in await db.fetchall(
            "SELECT seq, kind, subject, actor, body, created_at, hash, block FROM ledger"
            " ORDER BY seq"
        )
    ]
    blocks = [
        Block(int(n), prev, root, int(k), float(at), h)
        for n, prev, root, k, at, h in await db.fetchall(
            "SELECT n, prev_hash, root, entries, sealed_at, hash FROM ledger_blocks ORDER BY n"
        )
    ]
    calls = await _rows(db, "model_calls", (*RECORD_COLUMNS, "record_hash"), "id")
    blobs = {h: bytes(c) for h, c in await db.fetchall("SELECT hash, content FROM blobs")}
    inline = {
        (rid, int(n)): bytes(out)
        for rid, n, out in await db.fetchall(
            "SELECT run_id, n, output FROM journal WHERE output IS NOT NULL"
        )
    }
    targets: list[tuple[str, str, str, str]] = []  # (what, subject, hash, where)
    for rid, run in runs.items():
        targets.append((f"run {rid} input", rid, run["input_hash"], "blob"))
        if run["result_hash"]:
            targets.append((f"run {rid} result", rid, run["result_hash"], "blob"))
        for ev in events[rid]:
            if ev.output_hash:
                where = f"inline:{rid}:{ev.n}" if (rid, ev.n) in inline else "blob"
                targets.append((f"run {rid} event {ev.n} output", rid, ev.output_hash, where))
    for a in approvals:
        what = f"approval of run {a['run_id']}: request"
        targets.append((what, a["id"], a["request_hash"], "blob"))
    for c in calls:
        for col in ("request_hash", "response_hash"):
            if c[col]:
                targets.append((f"call {c['id']} {col[:-5]}", c["id"], c[col], "blob"))
    refs: dict[str, set[str]] = {}
    for _, subject, digest, where in targets:
        if where == "blob":
            refs.setdefault(digest, set()).add(subject)
    assert len(blocks) >= 3 and all(e.block is not None for e in entries)
    assert inline and any(w == "blob" and " output" in t for t, _, _, w in targets)
    return Inventory(
        runs, events, approvals, entries, blocks, calls, blobs, refs, sorted(targets), inline
    )


# -- fresh copies of the pristine store, one per trial --------------------------------------------


class SQLiteCopies:
    """A snapshot of the database file, copied afresh for each trial."""

    def __init__(self, store: Store, folder: Path) -> None:
        self.store, self.folder = store, folder

    async def snapshot(self) -> None:
        self.pristine = self.folder / "pristine.db"
        await self.store.execute("VACUUM INTO ?", (str(self.pristine),))

    def _copy(self) -> Path:
        path = self.folder / "trial.db"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        shutil.copyfile(self.pristine, path)
        return path

    @asynccontextmanager
    async def trial(self) -> AsyncIterator[Store]:
        path = await asyncio.to_thread(self._copy)
        db = await open_store(f"sqlite:///{path}")
        try:
            yield db
        finally:
            await db.close()

    async def close(self) -> None:
        pass


class PostgresCopies:
    """A second schema with the same tables, refilled from the pristine schema for each trial
    (``TRUNCATE`` and ``INSERT ... SELECT`` in one transaction)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.db: Store | None = None
        self.dst = ""

    async def snapshot(self) -> None:
        row = await self.store.fetchone("SELECT current_schema()")
        assert row is not None
        self.src, self.dst = row[0], f"{row[0]}_trial"
        self.tables = [
            r[0]
            for r in await self.store.fetchall(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = ?"
                " AND table_type = 'BASE TABLE' ORDER BY table_name",
                (self.src,),
            )
        ]
        await self.store.execute(f"CREATE SCHEMA {self.dst}")
        for t in self.tables:
            await self.store.execute(
                f"CREATE TABLE {self.dst}.{t} (LIKE {self.src}.{t} INCLUDING ALL)"
            )
        sep = "&" if "?" in PG_URL else "?"
        self.db = await open_store(f"{PG_URL}{sep}options=-csearch_path%3D{self.dst}")

    @asynccontextmanager
    async def trial(self) -> AsyncIterator[Store]:
        assert self.db is not None
        async with self.db.transaction() as tx:
            await tx.execute(f"TRUNCATE {', '.join(f'{self.dst}.{t}' for t in self.tables)}")
            for t in self.tables:
                await tx.execute(f"INSERT INTO {self.dst}.{t} SELECT * FROM {self.src}.{t}")
        yield self.db

    async def close(self) -> None:
        if self.db is not None:
            await self.db.close()
        if self.dst:
            await self.store.execute(f"DROP SCHEMA IF EXISTS {self.dst} CASCADE")


@pytest.fixture
async def copies(store: Store, tmp_path: Path) -> AsyncIterator[SQLiteCopies | PostgresCopies]:
    made = SQLiteCopies(store, tmp_path) if store.dialect == "sqlite" else PostgresCopies(store)
    try:
        yield made
    finally:
        await made.close()


# -- the tampering ----------------------------------------------------------------------------


@dataclass
class Trial:
    """One change and what ``audit`` must say about it."""

    kind: str
    what: str
    named: list[set[str]]
    """Each set: some finding's subject must be in it."""
    at: str | None = None
    """For a forged event: a journal finding at this position whose message says ``says``."""
    says: str | None = None


def _nudged(old: Any, rnd: random.Random) -> Any:
    """A different value of the same type: one character, one unit, one forged string."""
    if old is None:
        return f"forged-{rnd.randrange(10**6)}"
    if isinstance(old, bool):
        return not old
    if isinstance(old, int):
        return old + rnd.randint(1, 5)
    if isinstance(old, float):
        return old + rnd.choice((0.001, 1.0, -3600.0))
    text = str(old)
    i = rnd.randrange(len(text)) if text else 0
    repl = "x" if text[i : i + 1] != "x" else "y"
    return text[:i] + repl + text[i + 1 :]


def _json_nudged(text: str, rnd: random.Random) -> str:
    """The JSON object ``text`` with one of its values changed."""
    doc = orjson.loads(text)
    key = rnd.choice(sorted(doc))
    doc[key] = _nudged(doc[key], rnd) if not isinstance(doc[key], (dict, list)) else None
    return canonical(doc)


def _other(rnd: random.Random, pool: Any, old: Any) -> Any:
    return rnd.choice([v for v in pool if v != old])


async def _forged_blob(db: Store, rnd: random.Random) -> str:
    """A valid payload of the attacker's (its hash checks out): only the chain can tell."""
    content = orjson.dumps({"forged": rnd.randrange(10**9)})
    digest = blob_hash(content)
    await db.execute(
        "INSERT INTO blobs (hash, size, content, created_at) VALUES (?, ?, ?, ?)",
        (digest, len(content), content, time.time()),
    )
    return digest


JOURNAL_COLUMNS = tuple(f for f in Event._fields if f != "run_id")


async def edit_journal(db: Store, inv: Inventory, rnd: random.Random) -> Trial:
    rid = rnd.choice(inv.with_events)
    ev = rnd.choice(inv.events[rid])
    col = rnd.choice(JOURNAL_COLUMNS)
    old = getattr(ev, col)
    if col == "kind":
        new = _other(rnd, ("step", "approval", "subrun", "clock", "sleep"), old)
    elif col == "status":
        new = _other(rnd, ("done", "failed"), old)
    elif col == "output_hash":
        new = await _forged_blob(db, rnd)
    elif col == "n":
        new = len(inv.events[rid]) + rnd.randrange(3)  # past the end: no collision
    else:
        new = _nudged(old, rnd)
    await db.execute(f"UPDATE journal SET {col} = ? WHERE run_id = ? AND n = ?", (new, rid, ev.n))
    return Trial("journal", f"run {rid} event {ev.n}: {col} {old!r} -> {new!r}", [{rid}])


async def edit_blob(db: Store, inv: Inventory, rnd: random.Random) -> Trial:
    what, subject, digest, where = rnd.choice(inv.targets)
    if where != "blob":  # a step output kept in its event row: only that copy changes
        _, rid, n = where.split(":")
        old = inv.inline[(rid, int(n))]
        i = rnd.randrange(len(old))
        new = old[:i] + (b"7" if old[i : i + 1] != b"7" else b"8") + old[i + 1 :]
        await db.execute(
            "UPDATE journal SET output = ? WHERE run_id = ? AND n = ?", (new, rid, int(n))
        )
        return Trial("blob", f"{what} (inline): {old!r} -> {new!r}", [{subject}])
    old = inv.blobs[digest]
    i = rnd.randrange(len(old))
    new = old[:i] + (b"7" if old[i : i + 1] != b"7" else b"8") + old[i + 1 :]
    await db.execute("UPDATE blobs SET content = ? WHERE hash = ?", (new, digest))
    return Trial(
        "blob",
        f"{what}: {old!r} -> {new!r} (referenced by {sorted(inv.refs[digest])})",
        [{s} for s in sorted(inv.refs[digest])],
    )


RUN_COLUMNS = (
    "program",
    "input_hash",
    "result_hash",
    "status",
    "error",
    "genesis_hash",
    "head_hash",
    "org_id",
    "user_id",
    "team_id",
    "key_id",
    "parent_id",
    "created_at",
)


async def edit_run(db: Store, inv: Inventory, rnd: random.Random) -> Trial:
    col = rnd.choice(RUN_COLUMNS)
    rid = rnd.choice(inv.finished if col in ("status", "head_hash") else sorted(inv.runs))
    old = inv.runs[rid][col]
    if col == "program":
        new = _other(rnd, PROGRAMS, old)
    elif col in ("input_hash", "result_hash"):
        new = _other(rnd, sorted(inv.blobs), old)  # another payload that checks out
    elif col == "status":
        new = _other(rnd, ("queued", "running", "waiting", *FINAL), old)
    elif col == "head_hash" and len(inv.events[rid]) > 1:
        new = inv.events[rid][-2].hash  # rolled back one event
    elif col == "parent_id":
        new = _other(rnd, sorted(inv.runs), rid) if old is None else None
    else:
        new = _nudged(old, rnd)
    await db.execute(f"UPDATE runs SET {col} = ? WHERE id = ?", (new, rid))
    return Trial("run", f"run {rid} ({inv.runs[rid]['status']}): {col} {old!r} -> {new!r}", [{rid}])


DECISION_COLUMNS = ("decision", "decision_hash", "decided_by", "decided_by_id")
APPROVAL_COLUMNS = (
    "request_hash",
    *DECISION_COLUMNS,
    "status",
    "reviewer_group",
    "run_id",
    "step_id",
    "name",
)


def _forged_decision(text: str, rnd: random.Random) -> str:
    doc = orjson.loads(text)
    choices = ["decided_by", "reason"] + (["amount"] if doc.get("arguments") else [])
    match rnd.choice(choices):
        case "amount":
            doc["arguments"]["amount"] = 99_999
        case "decided_by":
            doc["decided_by"] = "user:mallory"
        case _:
            doc["reason"] = "approved on the phone"
    return orjson.dumps(doc).decode()


async def edit_approval(db: Store, inv: Inventory, rnd: random.Random) -> Trial:
    col = rnd.choice(APPROVAL_COLUMNS)
    decided = [a for a in inv.approvals if a["decision"] is not None]
    a = rnd.choice(decided if col in DECISION_COLUMNS else inv.approvals)
    old = a[col]
    if col == "request_hash":
        new = _other(rnd, sorted(inv.blobs), old)
    elif col == "decision":
        new = _forged_decision(old, rnd)
    elif col == "status":
        statuses = ("approved", "rejected", "edited", "expired", "pending", "cancelled")
        new = _other(rnd, statuses, old)
    elif col == "run_id":  # to a run without an approval: (run_id, step_id) is unique
        new = rnd.choice(sorted(set(inv.runs) - {x["run_id"] for x in inv.approvals}))
    else:
        new = _nudged(old, rnd)
    await db.execute(f"UPDATE approvals SET {col} = ? WHERE id = ?", (new, a["id"]))
    return Trial(
        "approval",
        f"approval of {a['run_id']} ({a['status']}): {col} {old!r} -> {new!r}",
        [{a["id"]}],
    )


LEDGER_COLUMNS = ("kind", "subject", "actor", "body", "created_at", "hash")


async def edit_ledger_entry(db: Store, inv: Inventory, rnd: random.Random) -> Trial:
    e = rnd.choice(inv.entries)
    col = rnd.choice(LEDGER_COLUMNS)
    old = getattr(e, col)
    if col == "kind":
        new = _other(rnd, sorted({x.kind for x in inv.entries}), old)
    elif col == "subject":
        new = _other(rnd, sorted({x.subject for x in inv.entries}), old)
    elif col in ("actor", "body"):
        new = _json_nudged(old, rnd)
    else:
        new = _nudged(old, rnd)
    await db.execute(f"UPDATE ledger SET {col} = ? WHERE seq = ?", (new, e.seq))
    return Trial(
        "ledger_entry",
        f"entry {e.seq} ({e.kind} {e.subject}, block {e.block}): {col} {old!r} -> {new!r}",
        [{f"block {e.block}", e.subject}],
    )


BLOCK_COLUMNS = ("n", "prev_hash", "root", "entries", "sealed_at", "hash")


async def edit_block(db: Store, inv: Inventory, rnd: random.Random) -> Trial:
    b = rnd.choice(inv.blocks)
    col = rnd.choice(BLOCK_COLUMNS)
    old = getattr(b, col)
    new = old + 1000 if col == "n" else _nudged(old, rnd)
    await db.execute(f"UPDATE ledger_blocks SET {col} = ? WHERE n = ?", (new, b.n))
    named = {f"block {b.n}"} | ({f"block {new}"} if col == "n" else set())
    return Trial("ledger_block", f"block {b.n}: {col} {old!r} -> {new!r}", [named])


async def delete_ledger_entry(db: Store, inv: Inventory, rnd: random.Random) -> Trial:
    e = rnd.choice(inv.entries)
    await db.execute("DELETE FROM ledger WHERE seq = ?", (e.seq,))
    return Trial(
        "ledger_delete",
        f"entry {e.seq} ({e.kind} {e.subject}, block {e.block}) deleted",
        [{f"block {e.block}", e.subject}],
    )


async def delete_run(db: Store, inv: Inventory, rnd: random.Random) -> Trial:
    rid = rnd.choice(sorted(inv.runs))
    gates = [a["id"] for a in inv.approvals if a["run_id"] == rid]
    await db.execute("DELETE FROM journal WHERE run_id = ?", (rid,))
    await db.execute("DELETE FROM approvals WHERE run_id = ?", (rid,))
    await db.execute("DELETE FROM runs WHERE id = ?", (rid,))
    return Trial("run_delete", f"run {rid} deleted whole", [{rid}] + [{g} for g in gates])


async def truncate_journal(db: Store, inv: Inventory, rnd: random.Random) -> Trial:
    rid = rnd.choice(inv.with_events)
    total = len(inv.events[rid])
    k = rnd.randint(1, total)
    await db.execute("DELETE FROM journal WHERE run_id = ? AND n >= ?", (rid, total - k))
    return Trial("truncate", f"run {rid}: last {k} of {total} events deleted", [{rid}])


async def insert_event(db: Store, inv: Inventory, rnd: random.Random) -> Trial:
    """A forged event at position k with correct hashes (linked to event k - 1, hashed at k),
    the later events renumbered: only the link of the event after it can tell."""
    rid = rnd.choice(inv.with_events)
    events = inv.events[rid]
    k = rnd.randrange(len(events))
    prev = events[k - 1].hash if k else inv.runs[rid]["genesis_hash"]
    out = await _forged_blob(db, rnd)
    at = events[k]
    forged = (rid, k, "77", "step", "wire_transfer", "done", out, None, at.fence, at.created_at)
    digest = event_hash(prev, *forged)
    await db.execute(
        "UPDATE journal SET n = n + 100000 WHERE run_id = ? AND n >= ?", (rid, k)
    )  # in two moves: the primary key holds at every row
    await db.execute("UPDATE journal SET n = n - 99999 WHERE run_id = ? AND n >= 100000", (rid,))
    await db.execute(
        "INSERT INTO journal (run_id, n, step_id, kind, name, status, output_hash, error, fence,"
        " created_at, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (*forged, prev, digest),
    )
    return Trial(
        "insert",
        f"run {rid}: event forged at {k} of {len(events)}",
        [{rid}],
        at=f"event {k}",
        says="inserted",
    )


CALL_COLUMNS = (*RECORD_COLUMNS[1:], "record_hash")


async def edit_call(db: Store, inv: Inventory, rnd: random.Random) -> Trial:
    c = rnd.choice(inv.calls)
    col = rnd.choice(CALL_COLUMNS)
    old = c[col]
    new: Any
    if col in ("stream", "cache_hit"):
        new = 1 - int(old)
    elif col in ("request_hash", "response_hash"):
        new = _other(rnd, sorted(inv.blobs), old)
    elif col == "failover_path":
        new = '["echo", "evil"]'
    elif col == "run_id":
        new = _other(rnd, [None, *sorted(inv.runs)], old)
    else:
        new = _nudged(old, rnd)
    await db.execute(f"UPDATE model_calls SET {col} = ? WHERE id = ?", (new, c["id"]))
    return Trial("call", f"call {c['id']}: {col} {old!r} -> {new!r}", [{c["id"]}])


TAMPERS: dict[str, Callable[[Store, Inventory, random.Random], Awaitable[Trial]]] = {
    "journal": edit_journal,
    "blob": edit_blob,
    "run": edit_run,
    "approval": edit_approval,
    "ledger_entry": edit_ledger_entry,
    "ledger_block": edit_block,
    "ledger_delete": delete_ledger_entry,
    "run_delete": delete_run,
    "truncate": truncate_journal,
    "insert": insert_event,
    "call": edit_call,
}


def _judge(trial: Trial, report: AuditReport) -> str | None:
    """Why ``report`` does not catch and name ``trial``, or None."""
    if report.ok:
        return "not caught"
    subjects = {f.subject for f in report.findings}
    for wanted in trial.named:
        if not subjects & wanted:
            return f"caught, but {sorted(wanted)} not named"
    if trial.at is not None:
        journal = [
            f for f in report.findings if f.kind == "journal" and f.subject in trial.named[0]
        ]
        if not any(f.where == trial.at and (trial.says or "") in f.message for f in journal):
            return f"not reported at {trial.at} as {trial.says!r}"
        if any(f.where != trial.at for f in journal):
            return f"also reported elsewhere than {trial.at}"
    return None


# -- the tests --------------------------------------------------------------------------------


async def test_every_single_change_is_caught_and_named(
    store: Store, copies: SQLiteCopies | PostgresCopies
) -> None:
    await _build(store)
    clean = await audit(store)
    assert clean.ok, clean.findings
    assert clean.runs == 15 and clean.approvals == 4 and clean.calls == 4
    assert clean.unsealed == 0 and clean.blocks >= 3
    inv = await _inventory(store)
    await copies.snapshot()
    async with copies.trial() as db:  # a copy is as clean as the original
        assert (await audit(db)).ok

    started = time.perf_counter()
    rnd = random.Random(6)
    kinds = sorted(TAMPERS)
    counts: Counter[str] = Counter()
    missed: list[str] = []
    for i in range(TRIALS):
        kind = rnd.choice(kinds)
        counts[kind] += 1
        async with copies.trial() as db:
            trial = await TAMPERS[kind](db, inv, rnd)
            report = await audit(db)
        problem = _judge(trial, report)
        if problem is not None:
            found = [(f.kind, f.subject, f.where, f.message) for f in report.findings]
            missed.append(f"trial {i} [{kind}] {trial.what}: {problem}; findings: {found}")
    elapsed = time.perf_counter() - started
    summary = f"{store.dialect}: {TRIALS} trials in {elapsed:.1f}s, per kind {dict(counts)}"
    print(summary)
    assert not missed, summary + "\n" + "\n".join(missed)
    assert all(counts[k] >= 5 for k in kinds), summary


async def _rehash_everything(store: Store, rid: str, j: int) -> Any:
    """What an attacker who recomputes every hash does to change step ``j``'s output of a
    finished run: a new payload, every later event re-chained, the run's head and result, its
    end in the ledger, and every ledger block re-sealed from scratch. Returns the new result."""
    events = await load_events(store, rid)
    output = orjson.dumps(600)
    out_hash = blob_hash(output)
    result = {"total": 999}
    result_bytes = orjson.dumps(result)
    result_hash = blob_hash(result_bytes)
    for digest, content in ((out_hash, output), (result_hash, result_bytes)):
        await store.execute(
            "INSERT INTO blobs (hash, size, content, created_at) VALUES (?, ?, ?, ?)",
            (digest, len(content), content, time.time()),
        )
    prev = events[j - 1].hash
    for ev in events[j:]:
        new_out = out_hash if ev.n == j else ev.output_hash
        columns = (ev.step_id, ev.kind, ev.name, ev.status, new_out, ev.error, ev.fence)
        digest = event_hash(prev, rid, ev.n, *columns, ev.created_at)
        await store.execute(
            "UPDATE journal SET output_hash = ?, prev_hash = ?, hash = ?"
            " WHERE run_id = ? AND n = ?",
            (new_out, prev, digest, rid, ev.n),
        )
        if ev.n == j:  # the output itself, wherever it is kept (inline in the event row here)
            await store.execute(
                "UPDATE journal SET output = ? WHERE run_id = ? AND n = ? AND output IS NOT NULL",
                (output, rid, ev.n),
            )
        prev = digest
    await store.execute(
        "UPDATE runs SET head_hash = ?, result_hash = ? WHERE id = ?", (prev, result_hash, rid)
    )
    row = await store.fetchone(
        "SELECT seq, kind, actor, body, created_at FROM ledger"
        " WHERE subject = ? AND kind = 'run.ended'",
        (rid,),
    )
    assert row is not None
    seq, kind, actor, body, created_at = row
    ended = {**orjson.loads(body), "head_hash": prev, "result_hash": result_hash}
    body = canonical(ended)
    await store.execute(
        "UPDATE ledger SET body = ?, hash = ? WHERE seq = ?",
        (body, entry_hash(kind, rid, actor, body, created_at), seq),
    )
    prev_block = GENESIS
    for n, sealed_at in await store.fetchall("SELECT n, sealed_at FROM ledger_blocks ORDER BY n"):
        leaves = [
            r[0]
            for r in await store.fetchall(
                "SELECT hash FROM ledger WHERE block = ? ORDER BY seq", (n,)
            )
        ]
        root = merkle_root(leaves)
        digest = block_hash(n, prev_block, root, len(leaves), sealed_at)
        await store.execute(
            "UPDATE ledger_blocks SET prev_hash = ?, root = ?, entries = ?, hash = ? WHERE n = ?",
            (prev_block, root, len(leaves), digest, n),
        )
        prev_block = digest
    return result


async def test_a_rehashed_history_is_caught_against_a_signed_head(store: Store) -> None:
    await _build(store)
    private, public = generate_keypair()
    signed = await export_head(store, private)
    assert signed is not None
    head_file = orjson.dumps(signed.to_dict())
    head = verify_head(head_file, public)
    assert (await audit(store, against=head)).ok

    forged_result = await _rehash_everything(store, "steps-5", 2)
    assert await run_result(store, await get_run(store, "steps-5")) == forged_result

    # Every hash was recomputed, so the store is consistent with itself: nothing inside the
    # database can tell this history from the true one. This is exactly why signed heads exist:
    # a head signed with a key kept outside the database pins the ledger as it was.
    assert (await audit(store)).ok

    report = await audit(store, against=head)
    assert [(f.kind, f.subject) for f in report.findings] == [("ledger", f"block {head.n}")]
    assert "rewritten" in report.findings[0].message

    # The attacker cannot make a head of their own that the verifier accepts: signed with
    # another key it fails, even when it names the trusted public key ...
    other, _ = generate_keypair()
    forged = await export_head(store, other)
    assert forged is not None
    assert (await audit(store, against=forged)).ok  # what trusting a forged head would mean
    doc = {**forged.to_dict(), "public_key": public}
    with pytest.raises(RequestError) as refused:
        verify_head(orjson.dumps(doc), public)
    assert refused.value.code == "head_signature_invalid"
    # ... and the true head, edited to name the rewritten block, fails too.
    doc = {**signed.to_dict(), "hash": forged.hash}
    with pytest.raises(RequestError, match="signature"):
        verify_head(orjson.dumps(doc), public)


async def test_an_approval_cancelled_behind_the_ledgers_back_is_caught(store: Store) -> None:
    await _build(store)
    gates = {a.run_id: a.id for a in await list_approvals(store, status=None)}
    await store.execute(
        "UPDATE approvals SET status = 'cancelled' WHERE id = ?", (gates["pay-pending"],)
    )
    await store.execute(
        "UPDATE approvals SET status = 'pending' WHERE id = ?", (gates["pay-cancel"],)
    )
    named = {f.subject for f in (await audit(store)).findings}
    assert {gates["pay-pending"], gates["pay-cancel"]} <= named


@pytest.mark.parametrize("column", ["result_hash", "error"])
async def test_a_result_or_error_planted_on_an_unfinished_run_is_caught(
    store: Store, column: str
) -> None:
    # Rare in the random trials (one run of fifteen is unfinished): a waiting run's last anchor
    # is a checkpoint, which seals its result and error as an end does.
    await _build(store)
    row = await store.fetchone("SELECT result_hash FROM runs WHERE id = 'steps-5'")
    assert row is not None
    value = row[0] if column == "result_hash" else '{"code": "forged"}'  # a payload that exists
    await store.execute(f"UPDATE runs SET {column} = ? WHERE id = 'pay-pending'", (value,))
    [finding] = (await audit(store)).findings
    assert finding.subject == "pay-pending" and "last checkpoint" in finding.message
    # A queued run that never settled has neither.
    await submit_run(store, "steps", 1, run_id="steps-queued")
    await store.execute(f"UPDATE runs SET {column} = ? WHERE id = 'steps-queued'", (value,))
    assert "steps-queued" in {f.subject for f in (await audit(store)).findings}
