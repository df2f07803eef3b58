"""PostgreSQL with pgvector for the retrieval tests, and the two deployments they run on.

The Debian PostgreSQL on the test machines has no pgvector; the ``pgserver`` package bundles
PostgreSQL 16 with pgvector. ``pgvector_url`` starts one per test session in a temporary folder
(run as root it runs the server as the OS user ``pgserver``, which it creates), creates the
extension, yields its URL and stops it (deleting its data).

``retrieval_env`` gives each test a fresh deployment on both backends:

- ``embedded``: the registry in a SQLite file, the indexes as files beside it;
- ``pgvector``: the registry in a fresh schema of the Debian PostgreSQL (the main store of the
  other tests), the indexes in pgserver's database.
"""

from __future__ import annotations

import shutil
import tempfile
import warnings
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from elevenfactor.context._index_embedded import EmbeddedBackend
from elevenfactor.context._index_pg import PgVectorBackend
from elevenfactor.context._index_sql import SqlBackend
from elevenfactor.store import Store, migrate, open_store
from tests.conftest import _pg_schema_url

__all__ = ["RetrievalEnv", "pgvector_url", "retrieval_env"]


@pytest.fixture(scope="session")
def pgvector_url() -> Iterator[str]:
    """The URL of a PostgreSQL 16 + pgvector server of this test session.

    Its folder is not under pytest's base temporary folder: run as root, the server runs as
    another OS user, who must traverse the folder's parents, and any pytest session starting
    on the machine meanwhile sets ``/tmp/pytest-of-<user>`` back to mode 0700."""
    folder = Path(tempfile.mkdtemp(prefix="ef-pgvector-"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns that XDG_RUNTIME_DIR is unset
        from pgserver.postgres_server import get_server

        server = get_server(folder / "data", "delete")
    try:
        url = server.get_uri()
        with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        yield url
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            server.cleanup()
        shutil.rmtree(folder, ignore_errors=True)


@dataclass
class RetrievalEnv:
    """A migrated main store and a retrieval backend, with their URLs."""

    kind: str
    store: Store
    store_url: str
    backend: SqlBackend
    retrieval_url: str


@pytest.fixture(params=["embedded", "pgvector"])
async def retrieval_env(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[RetrievalEnv]:
    """A fresh deployment on each backend (see the module docstring)."""
    backend: SqlBackend
    if request.param == "embedded":
        store_url = f"sqlite:///{tmp_path}/main.db"
        retrieval_url = str(tmp_path / "indexes")
        backend = EmbeddedBackend(tmp_path / "indexes")
    else:
        store_url = _pg_schema_url(request)
        retrieval_url = request.getfixturevalue("pgvector_url")
        backend = PgVectorBackend(retrieval_url)
    store = await open_store(store_url)
    await migrate(store)
    try:
        yield RetrievalEnv(request.param, store, store_url, backend, retrieval_url)
    finally:
        await backend.close()
        await store.close()
