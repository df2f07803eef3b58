"""The floor: one bare INSERT + COMMIT per sample, the same bytes as a journaled step.

SQLite: ``BEGIN IMMEDIATE; INSERT; COMMIT`` inline with elevenfactor's pragmas (WAL,
``synchronous=NORMAL``). PostgreSQL: one INSERT on a psycopg ``AsyncConnection`` in autocommit
mode (the INSERT and its COMMIT in one round trip), the driver and mode elevenfactor's store
uses. Run as ``python -m bench.journal.floor ...``; prints one JSON object.

``--kind journal-sql`` times, the same way, exactly the SQL elevenfactor issues for one step
(on a migrated store with one leased run) with none of its Python around it: the one fenced
INSERT of the event with its output inline, an autocommit statement on both stores. It splits
a step's cost into "the database" and "our code".
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import psycopg

from bench.journal.dbs import sqlite_connect
from bench.journal.workload import floor_row
from bench.stats import summarize

_DDL = "CREATE TABLE floor (id {pk}, run_id TEXT NOT NULL, n INTEGER NOT NULL, payload {blob})"
_INSERT_SQLITE = "INSERT INTO floor (run_id, n, payload) VALUES (?, ?, ?)"
_INSERT_PG = "INSERT INTO floor (run_id, n, payload) VALUES (%s, %s, %s)"
_RUN_ID = "f" * 32


def sqlite_floor(path: Path, n: int, warmup: int) -> list[float]:
    """Microseconds per BEGIN IMMEDIATE + INSERT + COMMIT."""
    conn = sqlite_connect(path)
    conn.execute(_DDL.format(pk="INTEGER PRIMARY KEY", blob="BLOB"))
    rows = [floor_row("floor", i) for i in range(n + warmup)]
    out: list[float] = []
    clock = time.perf_counter_ns
    for i, row in enumerate(rows):
        t0 = clock()
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(_INSERT_SQLITE, (_RUN_ID, i, row))
        conn.execute("COMMIT")
        if i >= warmup:
            out.append((clock() - t0) / 1000)
    conn.close()
    return out


async def pg_floor(url: str, n: int, warmup: int) -> list[float]:
    """Microseconds per autocommit INSERT (INSERT + COMMIT, one round trip)."""
    conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
    await conn.execute(_DDL.format(pk="BIGSERIAL PRIMARY KEY", blob="BYTEA"))
    rows = [floor_row("floor", i) for i in range(n + warmup)]
    out: list[float] = []
    clock = time.perf_counter_ns
    for i, row in enumerate(rows):
        t0 = clock()
        await conn.execute(_INSERT_PG, (_RUN_ID, i, row))
        if i >= warmup:
            out.append((clock() - t0) / 1000)
    await conn.close()
    return out


def _journal_rows(n: int) -> list[tuple[bytes, str, tuple[Any, ...]]]:
    """(payload, its blob hash, the journal row) for ``n`` steps of one run, hashes chained."""
    import orjson

    from bench.journal.workload import payload
    from elevenfactor.runtime._journal import event_hash
    from elevenfactor.store import blob_hash

    out = []
    prev = "0" * 64
    now = time.time()
    for i in range(n):
        data = orjson.dumps(payload(_RUN_ID, i), option=orjson.OPT_SORT_KEYS)
        h = blob_hash(data)
        digest = event_hash(prev, _RUN_ID, i, str(i), "step", "work", "done", h, None, 1, now)
        out.append(
            (data, h, (_RUN_ID, i, str(i), "step", "work", "done", h, None, 1, now, prev, digest))
        )
        prev = digest
    return out


async def _leased_run(url: str) -> None:
    from elevenfactor.runtime import claim_run, submit_run
    from elevenfactor.store import migrate, open_store

    store = await open_store(url)
    try:
        await migrate(store)
        await submit_run(store, "bench", None, run_id=_RUN_ID)
        lease = await claim_run(store, "bench", ["default"], 3600)
        assert lease is not None and lease.fence == 1
    finally:
        await store.close()


def sqlite_journal_sql(path: Path, n: int, warmup: int) -> list[float]:
    """Microseconds per fenced journal INSERT with its output inline (autocommit: the
    statement is its own transaction), as elevenfactor issues it for a small output."""
    from elevenfactor.runtime._journal import _APPEND

    asyncio.run(_leased_run(f"sqlite:///{path}"))
    conn = sqlite_connect(path)
    rows = _journal_rows(n + warmup)
    out: list[float] = []
    clock = time.perf_counter_ns
    for i, (data, _, row) in enumerate(rows):
        t0 = clock()
        if conn.execute(_APPEND, (*row, data, _RUN_ID, 1)).rowcount != 1:
            raise RuntimeError("the fenced INSERT wrote nothing")
        if i >= warmup:
            out.append((clock() - t0) / 1000)
    conn.close()
    return out


async def pg_journal_sql(url: str, n: int, warmup: int) -> list[float]:
    """Microseconds per autocommit fenced event statement with its output inline."""
    from elevenfactor.runtime._journal import _APPEND_ONE
    from elevenfactor.store._postgres import translate

    await _leased_run(url)
    sql = translate(_APPEND_ONE)
    conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
    rows = _journal_rows(n + warmup)
    out: list[float] = []
    clock = time.perf_counter_ns
    for i, (data, _, row) in enumerate(rows):
        t0 = clock()
        cur = await conn.execute(sql, (_RUN_ID, 1, *row, data))
        if cur.rowcount != 1:
            raise RuntimeError("the fenced INSERT wrote nothing")
        if i >= warmup:
            out.append((clock() - t0) / 1000)
    await conn.close()
    return out


def main(argv: list[str] | None = None) -> int:
    """Measure and print ``{"latency_us": {...}}``."""
    ap = argparse.ArgumentParser(prog="python -m bench.journal.floor")
    ap.add_argument("--store", choices=("sqlite", "postgresql"), required=True)
    ap.add_argument("--kind", choices=("floor", "journal-sql"), default="floor")
    ap.add_argument("--target", required=True, help="SQLite file path or PostgreSQL URL")
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--warmup", type=int, default=300)
    args = ap.parse_args(argv)
    t0 = time.monotonic()
    if args.store == "sqlite" and args.kind == "floor":
        lat = sqlite_floor(Path(args.target), args.n, args.warmup)
    elif args.store == "sqlite":
        lat = sqlite_journal_sql(Path(args.target), args.n, args.warmup)
    elif args.kind == "floor":
        lat = asyncio.run(pg_floor(args.target, args.n, args.warmup))
    else:
        lat = asyncio.run(pg_journal_sql(args.target, args.n, args.warmup))
    result: dict[str, Any] = {
        "latency_us": summarize(lat),
        "bytes_per_insert": len(floor_row("floor", 0)),
        "seconds": round(time.monotonic() - t0, 3),
    }
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
