"""Shared fixtures: the store on both dialects, free ports, and a guard against paid providers."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import AsyncIterator

import pytest

from elevenfactor.store import Store, migrate, open_store

PG_URL = os.environ.get("ELEVENFACTOR_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture(autouse=True)
def _no_paid_providers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any accidental call to a paid provider fails: their keys are removed and URLs poisoned."""
    for var in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/paid-provider-blocked")


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: object) -> str:
    """A fresh, empty database URL on each dialect (a new schema per test on PostgreSQL)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/test.db"
    return _pg_schema_url(request)


def _pg_schema_url(request: pytest.FixtureRequest) -> str:
    import psycopg

    schema = "t_" + uuid.uuid4().hex[:12]
    try:
        with psycopg.connect(PG_URL, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
    except psycopg.OperationalError as exc:  # pragma: no cover - CI starts PostgreSQL
        pytest.fail(f"PostgreSQL is not reachable at {PG_URL}: {exc}")

    def drop() -> None:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")

    request.addfinalizer(drop)
    sep = "&" if "?" in PG_URL else "?"
    return f"{PG_URL}{sep}options=-csearch_path%3D{schema}"


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    """A migrated store on SQLite and on PostgreSQL."""
    db = await open_store(store_url)
    await migrate(db)
    try:
        yield db
    finally:
        await db.close()
