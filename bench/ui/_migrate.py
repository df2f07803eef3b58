"""The migrations the dashboard work adds (``m030_ui_indexes`` and any later one, e.g. a cost
rollup), applied to the cached store as they are *now*.

The cache is seeded with every migration after ``BASELINE`` marked applied but not run. Each
bench run removes the marks from its working copy (SQLite) or from the database it has just
filled (PostgreSQL) and runs the project's ``migrate``: the indexes, tables and backfills of
those migrations are measured as the code has them, exactly as an existing store is upgraded,
and an index added, changed or removed since the cache was made is not left behind by it.
"""

from __future__ import annotations

import importlib
import re
import time
from typing import Any

from elevenfactor.store import MIGRATIONS, Store, applied, migrate

__all__ = [
    "BASELINE",
    "defer_new_migrations",
    "deferred",
    "housekeep",
    "run_deferred",
    "ui_index_names",
]

BASELINE = "m029_ui_sessions"
"""The last migration the seeded data is written against."""
_NAME = re.compile(r"^\s*CREATE\s+(UNIQUE\s+)?INDEX\s+(IF\s+NOT\s+EXISTS\s+)?(\w+)", re.I)


def deferred() -> list[str]:
    """The migrations after ``BASELINE``, as the code has them now."""
    names = [m.name for m in MIGRATIONS]
    return names[names.index(BASELINE) + 1 :]


def ui_index_names() -> list[str]:
    """The index names the deferred migrations create."""
    out = []
    for name in deferred():
        module = importlib.import_module(f"elevenfactor.store.migrations.{name}")
        out += [m.group(3) for s in module.STATEMENTS if (m := _NAME.match(s))]
    return out


async def defer_new_migrations(store: Store) -> None:
    """Before the first ``migrate`` of a store: mark the deferred migrations applied."""
    await applied(store)  # creates schema_migrations
    for name in deferred():
        await store.execute(
            "INSERT INTO schema_migrations (name, applied_at) VALUES (?, ?)", (name, time.time())
        )


async def run_deferred(store: Store) -> list[str]:
    """Remove the marks and migrate: the deferred migrations run now, in order; their names."""
    names = deferred()
    marks = ", ".join("?" for _ in names)
    await store.execute(f"DELETE FROM schema_migrations WHERE name IN ({marks})", names)
    return await migrate(store)


async def housekeep(store: Store) -> dict[str, Any]:
    """Run the housekeeper's jobs once (``runtime._housekeeping.default_jobs``: purges, and
    whatever background upkeep the product does, such as a rollup), as a serving process would
    have long since done on a live store; what each job returned, and the seconds it took."""
    from elevenfactor.runtime._housekeeping import default_jobs

    out: dict[str, Any] = {}
    for name, job in default_jobs().items():
        t0 = time.perf_counter()
        done = await job(store, time.time())
        out[name] = {"result": done, "seconds": round(time.perf_counter() - t0, 3)}
    return out
