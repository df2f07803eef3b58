"""Opening the retrieval indexes of a deployment, and deleting one.

The backend is chosen by ``ELEVENFACTOR_RETRIEVAL_URL``: a ``postgresql://`` URL is pgvector in
that database; a folder (a path or ``file:///path``) is the embedded backend there; unset, the
embedded backend in ``indexes/`` beside the SQLite store's file (or ``data_dir/indexes`` when
the store is PostgreSQL or in memory).
"""

from __future__ import annotations

from pathlib import Path

from elevenfactor.config import Settings
from elevenfactor.context._index import IndexInfo, delete_index_row, get_index
from elevenfactor.context._index_sql import SqlBackend
from elevenfactor.context._retrieve import EmbedderSource, Retrieval
from elevenfactor.errors import ConfigError, ContextError
from elevenfactor.store import Store

__all__ = ["delete_index", "open_backend", "open_retrieval", "retrieval_url"]

_PG = ("postgresql://", "postgres://", "postgresql+psycopg://")


def retrieval_url(settings: Settings) -> str:
    """Where the indexes live: the setting, or the embedded default (see the module)."""
    if settings.retrieval_url:
        return settings.retrieval_url
    db = settings.resolved_database_url()
    if db.startswith("sqlite:"):
        rest = db.split("://", 1)[1] if "://" in db else ""
        path = rest[1:] if rest.startswith("/") else rest
        if path and path != ":memory:":
            return str(Path(path).parent / "indexes")
    return str(settings.data_dir / "indexes")


def open_backend(url: str) -> SqlBackend:
    """The backend at ``url`` (nothing is connected or created until first used)."""
    if url.startswith(_PG):
        from elevenfactor.context._index_pg import PgVectorBackend

        return PgVectorBackend(url)
    if url.startswith("file://"):
        url = url[len("file://") :]
    elif "://" in url:
        raise ConfigError(
            f"unsupported retrieval URL scheme {url.split('://', 1)[0]!r}",
            source="environment",
            key="ELEVENFACTOR_RETRIEVAL_URL",
            expected="postgresql://... (pgvector) or a folder (a path or file:///path)",
        )
    from elevenfactor.context._index_embedded import EmbeddedBackend

    return EmbeddedBackend(Path(url))


def open_retrieval(
    settings: Settings,
    store: Store,
    embedders: EmbedderSource | None = None,
    *,
    keep_versions: int = 2,
) -> Retrieval:
    """The deployment's retrieval indexes: the registry in ``store``, the backend named by the
    settings, and ``embedders`` (``open_embedders(project)``) to query them with."""
    backend = open_backend(retrieval_url(settings))
    return Retrieval(store, backend, embedders, keep_versions=keep_versions)


async def delete_index(retrieval: Retrieval, org_id: str, name: str) -> IndexInfo:
    """Delete the organisation's index ``name``: from the registry first (queries stop seeing
    it at once), then its data. ``IndexNotFound`` if there is none."""
    info = await get_index(retrieval.store, org_id, name)
    if info.backend != retrieval.backend.kind:
        raise ContextError(
            f"the index {name!r} lives in the {info.backend} backend ({info.location}), but the"
            f" {retrieval.backend.kind} backend is configured",
            hint="set ELEVENFACTOR_RETRIEVAL_URL to where it lives, then delete it",
        )
    await delete_index_row(retrieval.store, info)
    await retrieval.backend.drop_index(info.id)
    return info
