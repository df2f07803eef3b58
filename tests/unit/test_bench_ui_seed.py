"""The dashboard benchmark's seeder (``bench.ui.seed``) at a tiny scale: the store it makes
passes the project's full ``audit`` — every run's chain, payloads and ledger anchors, every
approval's request and decision, every call record's hash, the sealed ledger blocks — on SQLite
and, loaded with ``COPY``, on PostgreSQL; and it holds what the pages are measured on."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import orjson
import pytest
from bench.ui._pg import load_from_sqlite
from bench.ui._plan import SeedPlan
from bench.ui.seed import Seeded, ensure_seeded

from elevenfactor.context._manifest import Manifest
from elevenfactor.models import Response
from elevenfactor.runtime import audit, verify_one_run
from elevenfactor.store import open_store
from tests.conftest import _pg_schema_url

PLAN = SeedPlan.scaled(0.002)


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Seeded:
    cache = tmp_path_factory.mktemp("bench-ui-cache")
    return asyncio.run(ensure_seeded(PLAN, cache=cache))


async def _audit_ok(url: str) -> None:
    store = await open_store(url)
    try:
        report = await audit(store, seal_first=False)
    finally:
        await store.close()
    assert report.findings == []
    assert report.runs >= PLAN.runs * 0.9
    assert report.approvals > 0 and report.calls == PLAN.calls and report.blocks > 0


async def test_the_sqlite_store_passes_a_full_audit(seeded: Seeded) -> None:
    await _audit_ok(f"sqlite:///{seeded.path}")


@pytest.mark.integration
async def test_the_postgresql_copy_passes_a_full_audit(
    seeded: Seeded, request: pytest.FixtureRequest
) -> None:
    url = _pg_schema_url(request)
    counts, upkeep = await load_from_sqlite(seeded.path, url)
    assert set(upkeep) >= {"ui_sessions"}  # the housekeeper's jobs ran on it
    assert counts["runs"] == seeded.meta["counts"]["runs"]
    await _audit_ok(url)


async def test_a_changed_step_output_is_caught(seeded: Seeded, tmp_path: Path) -> None:
    """The chains are real: one edited byte in a stored output is a finding."""
    copy = tmp_path / "copy.db"
    copy.write_bytes(seeded.path.read_bytes())
    run = seeded.meta["long_run"]
    with sqlite3.connect(copy) as conn:
        conn.execute(
            "UPDATE journal SET output = CAST('{\"x\":1}' AS BLOB) WHERE run_id = ? AND n = 6",
            (run,),
        )
    store = await open_store(f"sqlite:///{copy}")
    try:
        report = await verify_one_run(store, run)
    finally:
        await store.close()
    assert [f.where for f in report.findings] == ["event 6 (step 6)"]


def test_the_store_holds_what_the_pages_are_measured_on(seeded: Seeded) -> None:
    meta = seeded.meta
    assert set(meta["secrets"]) >= {"ada", "mia"} and len(meta["secrets"]) == 20
    with sqlite3.connect(seeded.path) as conn:
        statuses = {r[0] for r in conn.execute("SELECT DISTINCT status FROM runs")}
        assert statuses == {"succeeded", "failed", "cancelled", "waiting", "running", "queued"}
        owner, steps = conn.execute(
            "SELECT u.name, (SELECT COUNT(*) FROM journal j WHERE j.run_id = r.id)"
            " FROM runs r JOIN users u ON u.id = r.user_id WHERE r.id = ?",
            (meta["long_run"],),
        ).fetchone()
        assert (owner, steps) == ("mia", 51)
        pending = conn.execute(
            "SELECT a.status, r.status FROM approvals a JOIN runs r ON r.id = a.run_id"
            " WHERE a.id = ?",
            (meta["pending_approval"],),
        ).fetchone()
        assert pending == ("pending", "waiting")
        assert conn.execute("SELECT COUNT(*) FROM runs WHERE parent_id IS NOT NULL").fetchone()[0]
        assert conn.execute("SELECT COUNT(*) FROM orgs").fetchone()[0] == 2
        outputs = dict(
            conn.execute(
                "SELECT kind, output FROM journal WHERE run_id = ?"
                " AND kind IN ('model', 'context')",
                (meta["long_run"],),
            ).fetchall()
        )
    # Outputs are shaped as the runtime stores them (the run page decodes them).
    Response.model_validate(orjson.loads(outputs["model"]))
    Manifest.model_validate(orjson.loads(outputs["context"]))
