"""The chaos test's ledger: where side-effecting tools count what they did, so that counts
survive SIGKILL and can be checked against the runtime's journal afterwards.

Two tables, outside the runtime's own (a separate SQLite file, or the test's PostgreSQL schema):

- ``chaos_attempts``: one row per *execution* of a step (a model request or a tool call), with
  no uniqueness: the step key, the executing process, and the run's lease as the ledger saw it
  when the execution began (``fence``, ``owner``, ``status`` read from the runtime's ``runs``
  row). ``t_end`` is set when the execution finished; a SIGKILLed execution has none.
- ``chaos_effects``: the side effect itself, keyed by the step key (``ON CONFLICT DO NOTHING``):
  the idempotent write a real tool would do with ``ToolContext.step_key``.

Executing processes find the ledger in ``CHAOS_LEDGER_URL`` and the runtime's store in
``DATABASE_URL`` (both ``sqlite:///...`` or ``postgresql://...``).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

import orjson

__all__ = ["Attempt", "Effect", "begin", "create", "finish", "read_attempts", "read_effects"]

LEDGER_ENV = "CHAOS_LEDGER_URL"

_TABLES = (
    "CREATE TABLE IF NOT EXISTS chaos_effects (step_key TEXT PRIMARY KEY, run_id TEXT NOT NULL,"
    " name TEXT NOT NULL, args TEXT NOT NULL, pid INTEGER NOT NULL, fence INTEGER,"
    " created_at DOUBLE PRECISION NOT NULL)",
    "CREATE TABLE IF NOT EXISTS chaos_attempts (id {serial} PRIMARY KEY,"
    " step_key TEXT NOT NULL, run_id TEXT NOT NULL, kind TEXT NOT NULL, name TEXT NOT NULL,"
    " pid INTEGER NOT NULL, fence INTEGER, owner TEXT, status TEXT,"
    " t_start DOUBLE PRECISION NOT NULL, t_end DOUBLE PRECISION)",
)
_ATTEMPT_COLUMNS = "id, step_key, run_id, kind, name, pid, fence, owner, status, t_start, t_end"
_RETRIES = 20


@dataclass(frozen=True, slots=True)
class Attempt:
    """One execution of a step."""

    id: int
    step_key: str
    run_id: str
    kind: str
    name: str
    pid: int
    fence: int | None
    owner: str | None
    status: str | None
    t_start: float
    t_end: float | None

    @property
    def owner_pid(self) -> int | None:
        """The pid in the lease owner's worker id (``host:pid:suffix``)."""
        parts = (self.owner or "").split(":")
        return int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None


@dataclass(frozen=True, slots=True)
class Effect:
    """One side effect, as the tool left it."""

    step_key: str
    run_id: str
    name: str
    args: dict[str, Any]
    pid: int
    fence: int | None


def _sqlite_path(url: str) -> str:
    rest = url.split("://", 1)[1]
    return rest[1:] if rest.startswith("/") else rest


def _is_pg(url: str) -> bool:
    return url.startswith(("postgresql", "postgres:"))


def _sqlite(url: str) -> sqlite3.Connection:
    conn = sqlite3.connect(_sqlite_path(url), isolation_level=None, timeout=30.0)
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


def create(url: str) -> None:
    """Create the ledger tables (before any worker starts)."""
    if _is_pg(url):
        import psycopg

        with psycopg.connect(url, autocommit=True) as pg:
            for ddl in _TABLES:
                pg.execute(ddl.format(serial="BIGSERIAL"))
        return
    conn = _sqlite(url)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        for ddl in _TABLES:
            conn.execute(ddl.format(serial="INTEGER"))
    finally:
        conn.close()


_pools: dict[str, Any] = {}
_pool_lock = asyncio.Lock()


async def _pool(url: str) -> Any:
    """This process's connection pool to a PostgreSQL ledger (opened on first use)."""
    async with _pool_lock:
        if url not in _pools:
            from psycopg_pool import AsyncConnectionPool

            pool = AsyncConnectionPool(url, min_size=1, max_size=8, open=False)
            await pool.open(wait=True, timeout=10)
            _pools[url] = pool
        return _pools[url]


def _urls() -> tuple[str, str]:
    return os.environ[LEDGER_ENV], os.environ["DATABASE_URL"]


def _split(step_key: str) -> str:
    return step_key.split(":", 1)[0]


async def begin(
    kind: str, name: str, args: dict[str, Any], step_key: str | None, *, effect: bool
) -> int:
    """Record an execution of the step ``step_key`` (and, if ``effect``, its side effect, once
    per step key) in one transaction; return the attempt's id for ``finish``."""
    if not step_key:
        raise RuntimeError(f"{kind} {name} executed outside a journaled step")
    ledger, runtime = _urls()
    run_id, t_start, pid = _split(step_key), time.time(), os.getpid()
    body = orjson.dumps(args, option=orjson.OPT_SORT_KEYS).decode()
    for attempt in range(_RETRIES):
        try:
            if _is_pg(ledger):
                return await _begin_pg(
                    ledger, step_key, run_id, kind, name, body, pid, t_start, effect
                )
            return await asyncio.to_thread(
                _begin_sqlite,
                ledger,
                runtime,
                step_key,
                run_id,
                kind,
                name,
                body,
                pid,
                t_start,
                effect,
            )
        except Exception:
            if attempt == _RETRIES - 1:
                raise
            await asyncio.sleep(0.05)
    raise AssertionError("unreachable")


async def _begin_pg(
    url: str,
    step_key: str,
    run_id: str,
    kind: str,
    name: str,
    body: str,
    pid: int,
    t_start: float,
    effect: bool,
) -> int:
    async with (await _pool(url)).connection() as conn:
        async with conn.transaction():
            cur = await conn.execute(
                "INSERT INTO chaos_attempts (step_key, run_id, kind, name, pid, fence, owner,"
                " status, t_start) SELECT %s, %s, %s, %s, %s, r.fence, r.lease_owner, r.status, %s"
                " FROM (SELECT 1) AS one LEFT JOIN runs r ON r.id = %s RETURNING id, fence",
                (step_key, run_id, kind, name, pid, t_start, run_id),
            )
            row = await cur.fetchone()
            assert row is not None
            if effect:
                await conn.execute(
                    "INSERT INTO chaos_effects (step_key, run_id, name, args, pid, fence,"
                    " created_at) VALUES (%s, %s, %s, %s, %s, %s, %s)"
                    " ON CONFLICT (step_key) DO NOTHING",
                    (step_key, run_id, name, body, pid, row[1], time.time()),
                )
        return int(row[0])


def _begin_sqlite(
    url: str,
    runtime_url: str,
    step_key: str,
    run_id: str,
    kind: str,
    name: str,
    body: str,
    pid: int,
    t_start: float,
    effect: bool,
) -> int:
    rt = _sqlite(runtime_url)
    try:
        lease = rt.execute(
            "SELECT fence, lease_owner, status FROM runs WHERE id = ?", (run_id,)
        ).fetchone() or (None, None, None)
    finally:
        rt.close()
    conn = _sqlite(url)
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            cur = conn.execute(
                "INSERT INTO chaos_attempts (step_key, run_id, kind, name, pid, fence, owner,"
                " status, t_start) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (step_key, run_id, kind, name, pid, *lease, t_start),
            )
            attempt_id = cur.lastrowid
            if effect:
                conn.execute(
                    "INSERT INTO chaos_effects (step_key, run_id, name, args, pid, fence,"
                    " created_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (step_key) DO NOTHING",
                    (step_key, run_id, name, body, pid, lease[0], time.time()),
                )
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    finally:
        conn.close()
    assert attempt_id is not None
    return attempt_id


async def finish(attempt_id: int) -> None:
    """Mark the execution finished (a SIGKILLed one never gets here)."""
    ledger, _ = _urls()
    now = time.time()
    for attempt in range(_RETRIES):
        try:
            if _is_pg(ledger):
                async with (await _pool(ledger)).connection() as conn:
                    await conn.execute(
                        "UPDATE chaos_attempts SET t_end = %s WHERE id = %s", (now, attempt_id)
                    )
            else:
                await asyncio.to_thread(_finish_sqlite, ledger, attempt_id, now)
            return
        except Exception:
            if attempt == _RETRIES - 1:
                raise
            await asyncio.sleep(0.05)


def _finish_sqlite(url: str, attempt_id: int, now: float) -> None:
    conn = _sqlite(url)
    try:
        conn.execute("UPDATE chaos_attempts SET t_end = ? WHERE id = ?", (now, attempt_id))
    finally:
        conn.close()


def _rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    if _is_pg(url):
        import psycopg

        with psycopg.connect(url, autocommit=True) as pg:
            return list(pg.execute(sql).fetchall())
    conn = _sqlite(url)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def read_attempts(url: str) -> list[Attempt]:
    """Every execution recorded, in the order recorded."""
    return [
        Attempt(*r)
        for r in _rows(url, f"SELECT {_ATTEMPT_COLUMNS} FROM chaos_attempts ORDER BY id")
    ]


def read_effects(url: str) -> list[Effect]:
    """Every side effect recorded."""
    rows = _rows(url, "SELECT step_key, run_id, name, args, pid, fence FROM chaos_effects")
    return [Effect(k, r, n, orjson.loads(a), p, f) for k, r, n, a, p, f in rows]
