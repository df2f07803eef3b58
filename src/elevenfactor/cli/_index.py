"""``index``: Retrieval indexes: build, list, query and delete them.

Every command acts as a user of an organisation (``--as USER``, default ``local``, the built-in
administrator; ``--org``, default ``default``) and sees that organisation's indexes only;
``build`` and ``delete`` need the ``admin`` role. Where the indexes live is
``ELEVENFACTOR_RETRIEVAL_URL`` (unset: files beside the SQLite store).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from elevenfactor.cli._admin import as_option
from elevenfactor.cli._common import (
    bar,
    config_option,
    console,
    err_console,
    handle_errors,
    json_option,
    print_json,
    print_table,
    project_from,
    run,
    settings_from,
    when,
    with_store,
)
from elevenfactor.config import ProjectConfig, Settings
from elevenfactor.config._retrieval import IndexConfig
from elevenfactor.context._index import IndexInfo, get_index, list_indexes
from elevenfactor.context._index_build import BuildReport, build_index
from elevenfactor.context._index_ops import delete_index, open_retrieval
from elevenfactor.context._retrieve import MODES, Hit, Retrieval, search
from elevenfactor.errors import ConfigError, PermissionDenied
from elevenfactor.governance import Principal, principal_for_user
from elevenfactor.store import Store, require_migrated

__all__ = ["index"]

T = TypeVar("T")

org_option = click.option(
    "--org", default="default", show_default=True, help="The organisation (by name)."
)


@click.group(name="index")
def index() -> None:
    """Retrieval indexes: build, list, query and delete them."""


def _with_retrieval(
    config: Path | None,
    as_user: str,
    org: str,
    fn: Callable[[Retrieval, Principal, ProjectConfig, Settings], Awaitable[T]],
) -> T:
    settings = settings_from(config)
    project = project_from(settings)

    async def main(store: Store) -> T:
        from elevenfactor.context._embed_registry import open_embedders

        await require_migrated(store)
        principal = await principal_for_user(store, as_user, org=org)
        embedders = open_embedders(project)
        retrieval = open_retrieval(
            settings, store, embedders, keep_versions=project.retrieval.keep_versions
        )
        try:
            return await fn(retrieval, principal, project, settings)
        finally:
            await retrieval.close()
            await embedders.aclose()

    return run(with_store(settings, main))


def _admin(principal: Principal, what: str) -> None:
    if not principal.is_admin:
        raise PermissionDenied(
            f"{what} needs the admin role; {principal.user_name} does not have it",
            hint="run it --as an administrator of the organisation",
        )


class _Bars:
    """Two bars on stderr, documents and chunks."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.docs = progress.add_task("documents", total=None)
        self.chunks = progress.add_task("chunks", total=None)

    def start(self, documents: int, chunks: int) -> None:
        self.progress.update(self.docs, total=documents)
        self.progress.update(self.chunks, total=chunks)

    def advance(self, documents: int, chunks: int) -> None:
        self.progress.advance(self.docs, documents)
        self.progress.advance(self.chunks, chunks)

    def phase(self, name: str) -> None:
        self.progress.console.print(f"{name}…")


def _index_config(
    project: ProjectConfig,
    settings: Settings,
    name: str,
    source: str | None,
    overrides: dict[str, Any],
) -> tuple[IndexConfig, Path]:
    configured = project.retrieval.indexes.get(name)
    if source is None and configured is None:
        raise ConfigError(
            f"no source folder for the index {name!r}",
            key=f"retrieval.indexes.{name}.source",
            hint=f"pass it (`elevenfactor index build {name} FOLDER`) or declare the index under"
            " retrieval.indexes in elevenfactor.yaml",
        )
    base = configured.model_dump() if configured else {"source": source}
    values = {**base, **{k: v for k, v in overrides.items() if v is not None}}
    try:
        cfg = IndexConfig.model_validate(values)
    except ValueError as exc:
        raise ConfigError(
            f"invalid index settings: {exc}", key=f"retrieval.indexes.{name}"
        ) from None
    if source is not None:
        return cfg, Path(source)
    project_file = settings.resolved_config_file()
    root = project_file.resolve().parent if project_file is not None else Path.cwd()
    return cfg, root / cfg.source


@index.command("build")
@click.argument("name")
@click.argument("source", required=False)
@click.option("--embedder", default=None, help="Embedding model, by its name under embeddings:.")
@click.option("--chunk-tokens", type=int, default=None, help="Target chunk size in tokens.")
@click.option("--overlap-tokens", type=int, default=None, help="Tokens repeated between chunks.")
@click.option("--max-bytes", type=int, default=None, help="Largest document accepted.")
@click.option("--strict", is_flag=True, help="Fail on any file that cannot be indexed.")
@json_option
@as_option
@org_option
@config_option
@handle_errors
def build(
    name: str,
    source: str | None,
    embedder: str | None,
    chunk_tokens: int | None,
    overlap_tokens: int | None,
    max_bytes: int | None,
    strict: bool,
    as_json: bool,
    as_user: str,
    org: str,
    config: Path | None,
) -> None:
    """Build index NAME from SOURCE (or its configured folder): a new version, published when
    complete. Unchanged documents are not embedded again; an interrupted build resumes.

    Example: elevenfactor index build docs ./docs
    """
    overrides = {
        "embedder": embedder,
        "chunk_tokens": chunk_tokens,
        "overlap_tokens": overlap_tokens,
        "max_document_bytes": max_bytes,
    }

    async def main(
        retrieval: Retrieval, principal: Principal, project: ProjectConfig, settings: Settings
    ) -> BuildReport:
        _admin(principal, "building an index")
        cfg, folder = _index_config(project, settings, name, source, overrides)
        model = retrieval.embedders.get(cfg.embedder) if retrieval.embedders else None
        assert model is not None
        columns = (
            TextColumn("{task.description:<10}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=err_console, disable=as_json) as progress:
            return await build_index(
                retrieval,
                name,
                cfg,
                source=folder,
                org_id=principal.org_id,
                embedder=model,
                strict=strict,
                progress=_Bars(progress),
            )

    report = _with_retrieval(config, as_user, org, main)
    if as_json:
        print_json(report.to_dict())
        return
    if report.published:
        verb = "resumed and published" if report.resumed else "published"
        console.print(
            f"index [bold]{name}[/] version {report.version} {verb}: {report.documents}"
            f" documents, {report.chunks} chunks ({report.embedded} embedded,"
            f" {report.reused} reused) in {report.seconds:.1f}s",
            soft_wrap=True,
        )
    else:
        console.print(f"index [bold]{name}[/] is up to date (version {report.version})")
    for item in report.skipped:
        err_console.print(
            f"[yellow]warning[/]: skipped {item['error']}", highlight=False, soft_wrap=True
        )
    if report.skipped:
        err_console.print(
            f"{len(report.skipped)} file(s) skipped; --strict makes them an error",
            highlight=False,
        )


_INDEX_COLUMNS = ("name", "version", "documents", "chunks", "embedder", "backend", "updated")
_VERSION_COLUMNS = (
    "version", "status", "documents", "chunks", "embedded", "reused", "skipped", "started",
    "finished",
)  # fmt: skip


def _rows(found: list[IndexInfo]) -> list[list[Any]]:
    rows = []
    for info in found:
        active = info.version(info.active_version)
        rows.append(
            [
                info.name,
                info.active_version or "",
                active.documents if active else 0,
                active.chunks if active else 0,
                f"{info.embedder} ({info.dim})",
                info.backend,
                when(info.updated_at),
            ]
        )
    return rows


@index.command("list")
@json_option
@as_option
@org_option
@config_option
@handle_errors
def list_cmd(as_json: bool, as_user: str, org: str, config: Path | None) -> None:
    """The organisation's indexes."""

    async def main(retrieval: Retrieval, principal: Principal, *_: Any) -> list[IndexInfo]:
        return await list_indexes(retrieval.store, principal.org_id)

    found = _with_retrieval(config, as_user, org, main)
    if as_json:
        print_json([i.to_dict() for i in found])
        return
    print_table("retrieval indexes", _INDEX_COLUMNS, _rows(found))


@index.command("show")
@click.argument("name")
@json_option
@as_option
@org_option
@config_option
@handle_errors
def show(name: str, as_json: bool, as_user: str, org: str, config: Path | None) -> None:
    """An index: its versions, embedder and counts."""

    async def main(retrieval: Retrieval, principal: Principal, *_: Any) -> IndexInfo:
        return await get_index(retrieval.store, principal.org_id, name)

    info = _with_retrieval(config, as_user, org, main)
    if as_json:
        print_json(info.to_dict())
        return
    print_table(f"index {info.name}", _INDEX_COLUMNS, _rows([info]))
    print_table(
        f"versions of {info.name} ({info.backend} at {info.location})",
        _VERSION_COLUMNS,
        [
            [
                f"{v.version}{' (active)' if v.version == info.active_version else ''}",
                v.status,
                v.documents,
                v.chunks,
                v.embedded,
                v.reused,
                len(v.skipped),
                when(v.started_at),
                when(v.finished_at),
            ]
            for v in info.versions
        ],
    )


def _filters(items: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(
                f"invalid filter {item!r}",
                key="--filter",
                expected="key=value (path=guides/, ext=md, tags=python)",
            )
        out[key.strip()] = value
    return out


@index.command("query")
@click.argument("name")
@click.argument("text")
@click.option("-k", "k", type=int, default=10, show_default=True, help="Hits to return.")
@click.option(
    "--filter", "filters", multiple=True, metavar="KEY=VALUE",
    help="Only chunks whose document has this metadata (repeatable): path=PREFIX, ext=md,"
    " tags=python, any front-matter key.",
)  # fmt: skip
@click.option("--mode", type=click.Choice(MODES), default="hybrid", show_default=True)
@json_option
@as_option
@org_option
@config_option
@handle_errors
def query(
    name: str,
    text: str,
    k: int,
    filters: tuple[str, ...],
    mode: str,
    as_json: bool,
    as_user: str,
    org: str,
    config: Path | None,
) -> None:
    """Search index NAME for TEXT: the best chunks, with their scores and sources.

    Example: elevenfactor index query docs "how do I rotate keys" -k 5 --filter path=guides/
    """
    wanted = _filters(filters)

    async def main(retrieval: Retrieval, principal: Principal, *_: Any) -> list[Hit]:
        return await search(
            retrieval.index(name),
            text,
            org_id=principal.org_id,
            k=k,
            filters=wanted,
            mode=mode,  # type: ignore[arg-type]  # checked by click.Choice
        )

    hits = _with_retrieval(config, as_user, org, main)
    if as_json:
        print_json([h.to_dict() for h in hits])
        return
    top = max((h.score for h in hits), default=0.0) or 1.0
    print_table(
        f"{name}: {text}",
        ["rank", "score", "", "document", "section", "vector", "bm25", "text", "chunk"],
        [
            [
                h.rank,
                f"{h.score:.4f}",
                bar(h.score / top, 6),
                h.document,
                " > ".join(h.heading_path),
                h.vector_rank or "",
                h.bm25_rank or "",
                " ".join(h.text.split())[:120],
                h.chunk_id,
            ]
            for h in hits
        ],
    )


@index.command("delete")
@click.argument("name")
@json_option
@as_option
@org_option
@config_option
@handle_errors
def delete(name: str, as_json: bool, as_user: str, org: str, config: Path | None) -> None:
    """Delete index NAME and all its versions."""

    async def main(retrieval: Retrieval, principal: Principal, *_: Any) -> IndexInfo:
        _admin(principal, "deleting an index")
        return await delete_index(retrieval, principal.org_id, name)

    info = _with_retrieval(config, as_user, org, main)
    if as_json:
        print_json({"deleted": info.name, "id": info.id, "versions": len(info.versions)})
        return
    console.print(f"deleted index [bold]{info.name}[/] ({len(info.versions)} version(s))")
