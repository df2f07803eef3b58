"""Named, ordered migrations and the table that records which are applied.

Each migration is a name and a list of statements per dialect. ``migrate`` applies the missing
ones, each in its own transaction; ``pending`` tells what is missing so the server can refuse to
start on an unmigrated database.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from elevenfactor.errors import MigrationRequired
from elevenfactor.store._base import Store
from elevenfactor.store.migrations import (
    m001_initial,
    m002_runtime,
    m003_trust,
    m004_run_notify,
    m005_journal_rowid,
    m006_cost,
    m007_budgets,
    m008_cache,
    m009_run_tags,
    m010_budget_functions,
    m011_budget_leases,
    m012_prompts,
    m013_retrieval,
    m014_memory,
    m015_semantic_cache,
    m016_bm25_impacts,
    m017_embedding_calls,
    m018_policies,
    m019_agent_breakers,
    m020_call_guards,
    m021_guard_vault,
    m022_run_feedback,
    m023_eval_results,
    m024_run_trace,
    m025_online_evals,
    m026_retention,
    m027_releases,
    m028_replay,
    m029_ui_sessions,
    m030_ui_indexes,
    m031_cost_rollup,
    m032_feedback_owner,
)

__all__ = ["MIGRATIONS", "Migration", "applied", "migrate", "pending", "require_migrated"]


@dataclass(frozen=True)
class Migration:
    """One schema change. ``{blob}``, ``{real}``, ``{bigint}`` and ``{serial}`` (an
    auto-incrementing primary key) and ``{without_rowid}`` are replaced per dialect."""

    name: str
    statements: tuple[str, ...]
    dialects: tuple[str, ...] = ("sqlite", "postgresql")
    """Dialects the statements apply to; on the others the migration is recorded, empty."""

    def sql(self, dialect: str) -> list[str]:
        """The statements for ``dialect``."""
        if dialect not in self.dialects:
            return []
        types = {
            "sqlite": {
                "blob": "BLOB",
                "real": "REAL",
                "bigint": "INTEGER",
                "serial": "INTEGER PRIMARY KEY AUTOINCREMENT",
                "without_rowid": " WITHOUT ROWID",
            },
            "postgresql": {
                "blob": "BYTEA",
                "real": "DOUBLE PRECISION",
                "bigint": "BIGINT",
                "serial": "BIGSERIAL PRIMARY KEY",
                "without_rowid": "",
            },
        }[dialect]
        return [s.format(**types) for s in self.statements]


MIGRATIONS: tuple[Migration, ...] = (
    Migration("m001_initial", m001_initial.STATEMENTS),
    Migration("m002_runtime", m002_runtime.STATEMENTS),
    Migration("m003_trust", m003_trust.STATEMENTS),
    Migration("m004_run_notify", m004_run_notify.STATEMENTS, m004_run_notify.DIALECTS),
    Migration("m005_journal_rowid", m005_journal_rowid.STATEMENTS, m005_journal_rowid.DIALECTS),
    Migration("m006_cost", m006_cost.STATEMENTS),
    Migration("m007_budgets", m007_budgets.STATEMENTS),
    Migration("m008_cache", m008_cache.STATEMENTS),
    Migration("m009_run_tags", m009_run_tags.STATEMENTS),
    Migration(
        "m010_budget_functions",
        m010_budget_functions.STATEMENTS,
        m010_budget_functions.DIALECTS,
    ),
    Migration("m011_budget_leases", m011_budget_leases.STATEMENTS, m011_budget_leases.DIALECTS),
    Migration("m012_prompts", m012_prompts.STATEMENTS),
    Migration("m013_retrieval", m013_retrieval.STATEMENTS),
    Migration("m014_memory", m014_memory.STATEMENTS),
    Migration("m015_semantic_cache", m015_semantic_cache.STATEMENTS),
    Migration("m016_bm25_impacts", m016_bm25_impacts.STATEMENTS),
    Migration("m017_embedding_calls", m017_embedding_calls.STATEMENTS),
    Migration("m018_policies", m018_policies.STATEMENTS),
    Migration("m019_agent_breakers", m019_agent_breakers.STATEMENTS),
    Migration("m020_call_guards", m020_call_guards.STATEMENTS),
    Migration("m021_guard_vault", m021_guard_vault.STATEMENTS),
    Migration("m022_run_feedback", m022_run_feedback.STATEMENTS),
    Migration("m023_eval_results", m023_eval_results.STATEMENTS),
    Migration("m024_run_trace", m024_run_trace.STATEMENTS),
    Migration("m025_online_evals", m025_online_evals.STATEMENTS),
    Migration("m026_retention", m026_retention.STATEMENTS),
    Migration("m027_releases", m027_releases.STATEMENTS),
    Migration("m028_replay", m028_replay.STATEMENTS),
    Migration("m029_ui_sessions", m029_ui_sessions.STATEMENTS),
    Migration("m030_ui_indexes", m030_ui_indexes.STATEMENTS),
    Migration("m031_cost_rollup", m031_cost_rollup.STATEMENTS),
    Migration("m032_feedback_owner", m032_feedback_owner.STATEMENTS),
)

_TABLE = """CREATE TABLE IF NOT EXISTS schema_migrations (
    name TEXT PRIMARY KEY,
    applied_at {real} NOT NULL
)"""


async def _ensure_table(store: Store) -> None:
    real = "REAL" if store.dialect == "sqlite" else "DOUBLE PRECISION"
    await store.execute(_TABLE.format(real=real))


async def applied(store: Store) -> list[str]:
    """Names of applied migrations, in order of application."""
    await _ensure_table(store)
    rows = await store.fetchall("SELECT name FROM schema_migrations ORDER BY applied_at, name")
    return [r[0] for r in rows]


async def pending(store: Store) -> list[str]:
    """Names of migrations not yet applied."""
    done = set(await applied(store))
    return [m.name for m in MIGRATIONS if m.name not in done]


async def migrate(store: Store) -> list[str]:
    """Apply every pending migration; return the names applied now.

    On PostgreSQL an advisory lock makes concurrent ``migrate`` runs safe.
    """
    await _ensure_table(store)
    ran: list[str] = []
    for migration in MIGRATIONS:
        async with store.transaction() as tx:
            if store.dialect == "postgresql":
                await tx.execute("SELECT pg_advisory_xact_lock(11111)")
            row = await tx.fetchone(
                "SELECT 1 FROM schema_migrations WHERE name = ?", (migration.name,)
            )
            if row is not None:
                continue
            for statement in migration.sql(store.dialect):
                await tx.execute(statement)
            await tx.execute(
                "INSERT INTO schema_migrations (name, applied_at) VALUES (?, ?)",
                (migration.name, time.time()),
            )
        ran.append(migration.name)
    return ran


async def require_migrated(store: Store) -> None:
    """Raise ``MigrationRequired`` naming what to run if anything is pending."""
    missing = await pending(store)
    if missing:
        raise MigrationRequired(
            f"the database at {store!r} is missing migrations: {', '.join(missing)}",
            hint="run `elevenfactor migrate` first",
        )
