"""Building a version of a retrieval index from a source folder.

1. The folder is scanned and every document parsed and chunked first; files that cannot be
   used are collected (``--strict``: the build stops here, having written nothing).
2. The build resumes the index's unfinished version if there is one made with the same embedder
   and chunk settings (documents already written to it are skipped; documents changed or
   removed since are taken out), else it starts a new version.
3. A document unchanged since the active version (same content hash, same settings) is copied
   from it with its vectors; the chunks of the others are embedded in batches, except those
   whose embedded text the active version already has a vector for (same embedder). Documents
   are written a batch at a time, each batch in one transaction.
4. Document frequencies and the vector index are built, then the version is published (made
   active) in one transaction of the registry; versions beyond ``keep_versions`` are deleted.

Until step 4 queries keep using the active version. If nothing changed since the active
version, no version is made; if the active version was built before BM25 lists existed
(``bm25_format`` 0), its lists are added to it in place (nothing is re-embedded).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from elevenfactor.config._retrieval import IndexConfig
from elevenfactor.context._chunk import Chunk, chunk_document, estimate_tokens, token_counter
from elevenfactor.context._embedder import Embedder
from elevenfactor.context._index import (
    IndexInfo,
    create_index,
    find_index,
    get_index,
    publish_version,
    set_bm25_format,
    set_status,
    start_version,
)
from elevenfactor.context._index_lists import LISTS_FORMAT
from elevenfactor.context._ingest import PARSER_VERSION, Document, scan
from elevenfactor.context._retrieve import Retrieval
from elevenfactor.errors import ContextError, DocumentError

__all__ = ["BuildProgress", "BuildReport", "build_index"]

_COMPAT = ("chunk_tokens", "overlap_tokens", "tokenizer", "parser")
"""Settings that change chunks: a version is reused or resumed only if they are equal."""
_GROUP = 256
"""Chunks per written group (a transaction) at most, beyond one document."""


class BuildProgress(Protocol):
    """What a build reports as it goes (the CLI draws bars from it)."""

    def start(self, documents: int, chunks: int) -> None:
        """The totals to do."""
        ...

    def advance(self, documents: int, chunks: int) -> None:
        """This many more documents and chunks are done."""
        ...

    def phase(self, name: str) -> None:
        """A step without a count begins (``finalising``)."""
        ...


class _Quiet:
    def start(self, documents: int, chunks: int) -> None:
        pass

    def advance(self, documents: int, chunks: int) -> None:
        pass

    def phase(self, name: str) -> None:
        pass


@dataclass
class BuildReport:
    """What a build did."""

    index: str
    version: int | None
    """The version now active (None if none could be built)."""
    published: bool
    """False when nothing changed since the active version."""
    resumed: bool = False
    documents: int = 0
    chunks: int = 0
    embedded: int = 0
    reused: int = 0
    skipped: list[dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """The report for machines."""
        return {
            "index": self.index,
            "version": self.version,
            "published": self.published,
            "resumed": self.resumed,
            "documents": self.documents,
            "chunks": self.chunks,
            "embedded": self.embedded,
            "reused": self.reused,
            "skipped": self.skipped,
            "seconds": round(self.seconds, 3),
        }


def _skipped(problems: Sequence[DocumentError]) -> list[dict[str, str]]:
    return [{"error": p.message, "hint": p.hint or ""} for p in problems]


def _compatible(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return all(a.get(k) == b.get(k) for k in _COMPAT)


async def build_index(
    retrieval: Retrieval,
    name: str,
    config: IndexConfig,
    *,
    source: Path,
    org_id: str,
    embedder: Embedder,
    strict: bool = False,
    progress: BuildProgress | None = None,
) -> BuildReport:
    """Build (or resume, or bring up to date) the index ``name`` of ``org_id`` from
    ``source`` with ``embedder``; see the module docstring."""
    started = time.perf_counter()
    bar = progress or _Quiet()
    store, backend = retrieval.store, retrieval.backend
    found = scan(source, max_bytes=config.max_document_bytes, exclude=config.exclude)
    if strict and found.problems:
        lines = "; ".join(p.message for p in found.problems)
        raise DocumentError(
            f"{len(found.problems)} file(s) cannot be indexed: {lines}",
            hint="fix or exclude them, or build without --strict to skip them",
        )
    counter = token_counter(embedder)
    settings = {
        "chunk_tokens": config.chunk_tokens,
        "overlap_tokens": config.overlap_tokens,
        "tokenizer": "estimate" if counter is estimate_tokens else "embedder",
        "parser": PARSER_VERSION,
        "embedder_ref": config.embedder,
    }
    chunks = {
        d.path: chunk_document(
            d,
            chunk_tokens=config.chunk_tokens,
            overlap_tokens=config.overlap_tokens,
            count=counter,
        )
        for d in found.documents
    }
    docs = {d.path: d for d in found.documents}
    info = await find_index(store, org_id, name) or await create_index(
        store,
        org_id,
        name,
        backend=backend.kind,
        location=backend.location,
        embedder=embedder.name,
        dim=embedder.dim,
        settings=settings,
        source=str(source),
    )
    if info.backend != backend.kind:
        raise ContextError(
            f"the index {name!r} lives in the {info.backend} backend ({info.location}), but the"
            f" {backend.kind} backend is configured",
            hint="set ELEVENFACTOR_RETRIEVAL_URL back, or `elevenfactor index delete` it first",
        )
    active = info.version(info.active_version)
    same_model = active is not None and (active.embedder, active.dim) == (
        embedder.name,
        embedder.dim,
    )
    copyable = same_model and active is not None and _compatible(active.settings, settings)
    prev_docs: dict[str, str] = {}
    if active is not None and same_model:
        prev_docs = await backend.documents(info.id, active.version)
    current = {p: d.content_hash for p, d in docs.items()}
    report = BuildReport(name, info.active_version, False, skipped=_skipped(found.problems))
    building = next((v for v in reversed(info.versions) if v.status == "building"), None)
    if building is not None and not (
        (building.embedder, building.dim) == (embedder.name, embedder.dim)
        and _compatible(building.settings, settings)
    ):
        await backend.drop_version(info.id, building.version)
        await set_status(
            store,
            info.id,
            building.version,
            "failed",
            "superseded by a build with another embedder or other chunk settings",
        )
        building = None
    if building is None and copyable and prev_docs == current:
        if active is not None and active.bm25_format < LISTS_FORMAT:  # built before m016
            new_format = await backend.build_bm25(info.id, active.version)
            await set_bm25_format(store, info.id, active.version, new_format)
        report.documents = len(docs)
        report.chunks = active.chunks if active else 0
        report.seconds = time.perf_counter() - started
        return report  # up to date
    if building is None:
        version = await start_version(
            store, info.id, embedder=embedder.name, dim=embedder.dim, settings=settings
        )
    else:
        version, report.resumed = building.version, True
    await backend.prepare(info.id, version, embedder.dim)
    written = await backend.documents(info.id, version)
    stale = [p for p, h in written.items() if current.get(p) != h]
    await backend.drop_documents(info.id, version, stale)
    done = {p for p in written if p not in stale}
    bar.start(len(docs), sum(len(c) for c in chunks.values()))
    bar.advance(len(done), sum(len(chunks[p]) for p in done))
    todo = [p for p in sorted(docs) if p not in done]
    to_copy = [p for p in todo if copyable and prev_docs.get(p) == current[p]]
    for i in range(0, len(to_copy), 200):
        part = to_copy[i : i + 200]
        assert active is not None
        report.reused += await backend.copy_documents(info.id, active.version, version, part)
        bar.advance(len(part), sum(len(chunks[p]) for p in part))
    copied = set(to_copy)
    group: list[Document] = []
    for path in [p for p in todo if p not in copied] + [""]:
        if path and (not group or sum(len(chunks[d.path]) for d in group) < _GROUP):
            group.append(docs[path])
            continue
        if group:
            embedded, reused = await _write_group(
                retrieval,
                info,
                version,
                org_id,
                group,
                chunks,
                embedder,
                active.version if same_model and active else None,
                config.batch_size,
            )
            report.embedded += embedded
            report.reused += reused
            bar.advance(len(group), sum(len(chunks[d.path]) for d in group))
        group = [docs[path]] if path else []
    bar.phase("finalising")
    counts = await backend.finalize(info.id, version, embedder.dim)
    counts |= {"embedded": report.embedded, "reused": report.reused}
    await publish_version(store, info, version, counts=counts, skipped=report.skipped)
    await _retire(retrieval, info.org_id, name)
    report.version, report.published = version, True
    report.documents, report.chunks = counts["documents"], counts["chunks"]
    report.seconds = time.perf_counter() - started
    return report


async def _write_group(
    retrieval: Retrieval,
    info: IndexInfo,
    version: int,
    org_id: str,
    group: list[Document],
    chunks: dict[str, list[Chunk]],
    embedder: Embedder,
    prev: int | None,
    batch_size: int,
) -> tuple[int, int]:
    """Embed what must be and write a group of documents; ``(embedded, reused)``."""
    backend = retrieval.backend
    pending = [c for d in group for c in chunks[d.path]]
    known: dict[str, np.ndarray[Any, Any]] = {}
    if prev is not None and pending:
        known = await backend.vectors_for(info.id, prev, [c.embed_hash for c in pending])
    missing = list({c.embed_hash: c for c in pending if c.embed_hash not in known}.values())
    for i in range(0, len(missing), batch_size):
        part = missing[i : i + batch_size]
        vectors = await embedder.embed([c.embed_text for c in part])
        if vectors.shape != (len(part), embedder.dim):
            raise ContextError(
                f"the embedder {embedder.name} returned vectors of shape {vectors.shape}"
                f" for {len(part)} texts of {embedder.dim} dimensions"
            )
        for c, v in zip(part, vectors, strict=True):
            known[c.embed_hash] = v
    fresh = {m.embed_hash for m in missing}
    reused = sum(1 for c in pending if c.embed_hash not in fresh)
    items = []
    for doc in group:
        doc_chunks = chunks[doc.path]
        matrix = (
            np.stack([known[c.embed_hash] for c in doc_chunks]).astype(np.float32)
            if doc_chunks
            else np.zeros((0, embedder.dim), dtype=np.float32)
        )
        items.append((doc, doc_chunks, matrix))
    await backend.write_documents(info.id, version, org_id, items)
    return len(pending) - reused, reused


async def _retire(retrieval: Retrieval, org_id: str, name: str) -> None:
    """Delete the data of ready versions beyond ``keep_versions`` (newest kept)."""
    from elevenfactor.context._index import set_status as mark

    info = await get_index(retrieval.store, org_id, name)
    ready = [v.version for v in info.versions if v.status == "ready"]
    keep = set(sorted(ready)[-retrieval.keep_versions :]) | {info.active_version}
    for number in ready:
        if number not in keep:
            await retrieval.backend.drop_version(info.id, number)
            await mark(retrieval.store, info.id, number, "retired")
