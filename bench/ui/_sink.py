"""Bulk writes of generated rows into a migrated SQLite file: one buffered ``executemany`` per
table every ``BATCH`` rows, all inside one transaction, with the journal off while loading."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from elevenfactor.observe._call_sql import RECORD_COLUMNS

__all__ = ["COLUMNS", "SqliteSink"]

COLUMNS: dict[str, tuple[str, ...]] = {
    "blobs": ("hash", "size", "content", "created_at"),
    "runs": (
        "id", "program", "queue", "priority", "status", "input_hash", "result_hash", "error",
        "parent_id", "session_id", "created_at", "updated_at", "wake_at", "deadline_at",
        "attempt", "max_attempts", "retry_backoff", "retry_on", "attempt_start_n", "fence",
        "lease_owner", "lease_expires_at", "cancel_requested", "genesis_hash", "head_hash",
        "org_id", "team_id", "user_id", "key_id", "tags", "trace_id", "traceparent",
        "release_id",
    ),
    "journal": (
        "run_id", "n", "step_id", "kind", "name", "status", "output_hash", "error", "fence",
        "created_at", "prev_hash", "hash", "output",
    ),
    "ledger": ("seq", "kind", "subject", "actor", "body", "created_at", "hash", "block"),
    "approvals": (
        "id", "run_id", "step_id", "name", "status", "request_hash", "reviewer_group",
        "created_at", "timeout_at", "on_timeout", "decision", "decided_by", "decided_at",
        "org_id", "team_id", "user_id", "key_id", "decided_by_id", "decision_hash",
    ),
    "model_calls": (*RECORD_COLUMNS, "record_hash"),
    "run_feedback": (
        "id", "run_id", "org_id", "user_id", "key_id", "score", "label", "comment", "metadata",
        "source", "created_at", "rule", "scorer",
    ),
    "eval_results": (
        "id", "run_id", "org_id", "team_id", "user_id", "key_id", "suite", "suite_version",
        "target", "model", "prompt", "release_label", "status", "error", "passed", "cases",
        "cases_passed", "cases_failed", "pass_rate", "cost_usd", "tokens", "duration_ms",
        "started_at", "finished_at", "result",
    ),
    "eval_case_results": (
        "result_id", "case_id", "org_id", "suite", "runs", "passes", "pass_rate", "threshold",
        "passed", "cost_usd", "latency_ms", "finished_at",
    ),
    "budget_usage": ("budget_id", "window_key", "spent", "reserved"),
    "budget_holds": (
        "id", "org_id", "amount", "windows", "soft", "status", "cost", "created_at",
        "expires_at", "settled_at", "run_id",
    ),
    "agent_breakers": (
        "org_id", "agent", "state", "reason", "tripped_at", "reset_at", "reset_by",
        "reset_reason", "window_seconds", "min_runs", "max_error_rate", "max_block_rate",
        "policy", "config", "updated_at",
    ),
}  # fmt: skip
"""The columns the seeder writes, per table (in the order its rows are built)."""

BATCH = 20_000


def _insert(table: str) -> str:
    cols = COLUMNS[table]
    marks = ", ".join("?" for _ in cols)
    conflict = " ON CONFLICT DO NOTHING" if table == "blobs" else ""
    return f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({marks}){conflict}"


class SqliteSink:
    """Buffers rows per table and writes them in large batches (call ``close`` to finish)."""

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=OFF")
        self.conn.execute("PRAGMA synchronous=OFF")
        self.conn.execute("PRAGMA cache_size=-1000000")
        self.conn.execute("PRAGMA temp_store=MEMORY")
        self.conn.execute("BEGIN")
        self.buffers: dict[str, list[Sequence[Any]]] = {t: [] for t in COLUMNS}
        self.counts: dict[str, int] = dict.fromkeys(COLUMNS, 0)

    def add(self, table: str, row: Sequence[Any]) -> None:
        """Queue one row of ``table`` (its values in ``COLUMNS[table]`` order)."""
        buf = self.buffers[table]
        buf.append(row)
        if len(buf) >= BATCH:
            self._flush(table)

    def _flush(self, table: str) -> None:
        buf = self.buffers[table]
        if buf:
            self.conn.executemany(_insert(table), buf)
            self.counts[table] += len(buf)
            buf.clear()

    def close(self) -> dict[str, int]:
        """Write what is buffered, commit, switch back to WAL; the row counts written."""
        for table in self.buffers:
            self._flush(table)
        self.conn.execute("COMMIT")
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.close()
        return self.counts
