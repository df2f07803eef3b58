"""The SQL a ``CallRecorder`` flush runs: the columns of a call record, and the inserts of a
batch of records and their content blobs on each store."""

from __future__ import annotations

import functools
import sqlite3
from typing import Any

from elevenfactor.store import BLOB_INSERT

__all__ = ["RECORD_COLUMNS", "RECORD_COLUMNS_V1", "statements"]

RECORD_COLUMNS_V1 = (
    "id",
    "trace_id",
    "created_at",
    "api_key_id",
    "route",
    "provider",
    "deployment",
    "model",
    "stream",
    "status",
    "error_class",
    "tokens_in",
    "tokens_out",
    "latency_ms",
    "cost",
    "cache_hit",
    "failover_path",
    "request_hash",
    "response_hash",
    "org_id",
    "team_id",
    "user_id",
    "run_id",
)
"""The columns of a call record before m006_cost: the hash of a row that has none of the newer
columns (written before them) covers only these."""
RECORD_COLUMNS = (
    *RECORD_COLUMNS_V1,
    "agent",
    "session_id",
    "tags",
    "tokens_cached",
    "price_version",
    "saved",
    "prompt",
    "kind",
    "guard",
    "release_id",
)
"""The columns of a call record that ``record_hash`` covers, in order (``prompt``, ``kind``,
``guard`` and ``release_id`` only when set: see ``record_hash``)."""
_INSERT = (
    "INSERT INTO model_calls ("
    f" {', '.join(RECORD_COLUMNS)}, record_hash)"
    f" VALUES ({', '.join('?' for _ in RECORD_COLUMNS)}, ?)"
)


# Multi-row forms of the two inserts, so the writer thread runs few statements per batch.
# Each statement costs the writer one hand-over of the GIL (sqlite3 releases it around
# sqlite3_step and must get it back), and under load the event loop holds the GIL for up to
# the switch interval (5 ms) each time. With 32 rows per statement (and one statement per odd
# remainder size) that capped the writer at a few thousand calls a second: at ~7,000 requests
# a second it fell behind, the queue grew to ``max_pending`` and memory with it. So: up to
# _MULTI rows per statement, and a remainder split in powers of two (at most log2(_MULTI)
# statements, each SQL text cached once by the writer connection).
_MAX_VARIABLES = 32_766 if sqlite3.sqlite_version_info >= (3, 32, 0) else 999
_MULTI = 256
_BLOB_HEAD = BLOB_INSERT.split("VALUES", 1)[0] + "VALUES "
_BLOB_TAIL = BLOB_INSERT.split("?)", 1)[1]  # " ON CONFLICT (hash) DO NOTHING"
_CALL_HEAD = _INSERT.split("VALUES", 1)[0] + "VALUES "

# On PostgreSQL a batch is one statement whatever its size: blobs and records each unnested from
# one array per column (see ``elevenfactor.store._postgres``), so the statement is prepared
# once per connection and runs in one round trip, as its own transaction. Array element types,
# as in the migrations (m001, m003, m006, m012, m017, m020):
_BLOB_TYPES = ("text", "int8", "bytea", "float8")
_CALL_TYPES = (
    *("text", "text", "float8", "text", "text", "text", "text", "text", "int4", "text"),
    *("text", "int4", "int4", "float8", "float8", "int4", "text", "text", "text", "text"),
    *("text", "text", "text", "text", "text", "text", "int8", "text", "float8", "text"),  # prompt
    "text",  # kind
    "text",  # guard (JSON)
    "text",  # release_id (m027)
    "text",  # record_hash
)


@functools.cache
def _pg_insert() -> str:
    from elevenfactor.store._postgres import unnest

    blobs = f"{_BLOB_HEAD.removesuffix(' VALUES ')} SELECT * FROM {unnest(_BLOB_TYPES)}"
    calls = f"{_CALL_HEAD.removesuffix(' VALUES ')} SELECT * FROM {unnest(_CALL_TYPES)}"
    return f"WITH b AS ({blobs}{_BLOB_TAIL}) {calls}"


def statements(
    dialect: str, blob_rows: list[tuple[Any, ...]], rows: list[tuple[Any, ...]]
) -> list[tuple[str, list[tuple[Any, ...]]]]:
    """The ``write_batch`` of a flush: multi-row inserts on SQLite, one statement on
    PostgreSQL."""
    if dialect == "postgresql":
        from elevenfactor.store._postgres import arrays

        return [(_pg_insert(), [(*arrays(blob_rows, _BLOB_TYPES), *arrays(rows, _CALL_TYPES))])]
    return [
        *_batched(_BLOB_HEAD, 4, blob_rows, _BLOB_TAIL),
        *_batched(_CALL_HEAD, len(RECORD_COLUMNS) + 1, rows),
    ]


@functools.lru_cache(maxsize=64)
def _multi(head: str, width: int, n: int, tail: str = "") -> str:
    row = "(" + ", ".join("?" for _ in range(width)) + ")"
    return head + ", ".join(row for _ in range(n)) + tail


def _batched(
    head: str, width: int, rows: list[tuple[Any, ...]], tail: str = ""
) -> list[tuple[str, list[tuple[Any, ...]]]]:
    """``(sql, params)`` pairs inserting ``rows``: full groups of the largest size (_MULTI rows,
    fewer if the variable limit is lower) as one statement each, the remainder as one
    statement per power of two in its size."""
    size = max(1, min(_MULTI, _MAX_VARIABLES // width))
    out: list[tuple[str, list[tuple[Any, ...]]]] = []
    i = 0
    while i < len(rows):
        stop = i + (len(rows) - i) // size * size
        if stop > i:
            params = [tuple(v for r in rows[j : j + size] for v in r) for j in range(i, stop, size)]
            out.append((_multi(head, width, size, tail), params))
            i = stop
        size //= 2
    return out
