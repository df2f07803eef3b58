"""Why a page is slow: each statement it ran, timed alone, with the plan the database chose
(SQLite ``EXPLAIN QUERY PLAN``; PostgreSQL ``EXPLAIN (ANALYZE, BUFFERS)``)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from typing import Any

from elevenfactor.store import Store

__all__ = ["explain_reads"]


async def _plan(store: Store, sql: str, params: Sequence[Any]) -> list[str]:
    if store.dialect == "sqlite":
        rows = await store.fetchall(f"EXPLAIN QUERY PLAN {sql}", params)
        return [f"{'  ' * _depth(rows, r)}{r[3]}" for r in rows]
    rows = await store.fetchall(f"EXPLAIN (ANALYZE, BUFFERS) {sql}", params)
    return [str(r[0]) for r in rows]


def _depth(rows: Sequence[Sequence[Any]], row: Sequence[Any]) -> int:
    parents = {r[0]: r[1] for r in rows}
    depth, parent = 0, row[1]
    while parent in parents:
        depth, parent = depth + 1, parents[parent]
    return depth


async def explain_reads(
    store: Store, reads: Sequence[tuple[str, str, tuple[Any, ...]]], repeat: int = 3
) -> list[dict[str, Any]]:
    """Each read statement: its text, parameters, median time over ``repeat`` runs, rows, and
    its plan — slowest first."""
    out = []
    for method, sql, params in reads:
        times, rows = [], 0
        for _ in range(repeat):
            t0 = time.perf_counter()
            got = await getattr(store, method)(sql, params)
            times.append((time.perf_counter() - t0) * 1000.0)
            rows = len(got) if isinstance(got, list) else int(got is not None)
        try:
            plan = await _plan(store, sql, params)
        except Exception as exc:  # a statement EXPLAIN cannot take: say so, keep going
            plan = [f"(no plan: {type(exc).__name__}: {exc})"]
        out.append(
            {
                "ms": statistics.median(times),
                "rows": rows,
                "sql": " ".join(sql.split()),
                "params": [
                    p if isinstance(p, (str, int, float)) or p is None else repr(p) for p in params
                ],
                "plan": plan,
            }
        )
    return sorted(out, key=lambda s: -float(s["ms"]))
