"""The rows of a retrieval index version, as written and read back (see ``_index_sql``)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from elevenfactor.context._bm25 import term_frequencies
from elevenfactor.context._chunk import Chunk
from elevenfactor.context._ingest import Document

__all__ = ["ChunkRow", "chunk_row", "document_rows", "filter_sql", "meta_rows"]


@dataclass(frozen=True, slots=True)
class ChunkRow:
    """A chunk as read back for a hit."""

    key: int
    chunk_id: str
    document: str
    position: int
    heading_path: tuple[str, ...]
    text: str
    metadata: dict[str, Any]


def filter_sql(ns: str, filters: Mapping[str, str]) -> tuple[str, list[Any]]:
    """``AND ...`` clauses on chunks ``c`` for metadata filters: ``path`` is a prefix of the
    document's path; any other key matches a metadata value (or an item of a list value)."""
    sql = ""
    params: list[Any] = []
    for key, value in sorted(filters.items()):
        if key == "path":
            sql += " AND substr(c.doc_path, 1, ?) = ?"
            params += [len(value), value]
        else:
            sql += (
                f" AND c.doc_path IN (SELECT m.path FROM {ns}.doc_meta m"
                " WHERE m.name = ? AND m.value = ?)"
            )
            params += [key, value]
    return sql, params


def chunk_row(row: Sequence[Any]) -> ChunkRow:
    """A ``ChunkRow`` from ``(key, chunk_id, doc_path, position, heading_path JSON, text,
    metadata JSON)``."""
    return ChunkRow(
        int(row[0]), row[1], row[2], int(row[3]), tuple(json.loads(row[4])), row[5],
        json.loads(row[6]),
    )  # fmt: skip


def meta_rows(doc: Document) -> list[tuple[str, str, str]]:
    """``(path, name, value)`` per metadata value of ``doc`` (one per item of a list)."""
    rows: set[tuple[str, str, str]] = set()
    for name, value in doc.metadata.items():
        for item in value if isinstance(value, list) else [value]:
            rows.add((doc.path, name, str(item)))
    return sorted(rows)


def document_rows(
    doc: Document,
    chunks: Sequence[Chunk],
    vectors: Sequence[np.ndarray[Any, Any]] | np.ndarray[Any, Any],
    org_id: str,
    vec_param: Callable[[np.ndarray[Any, Any]], Any],
) -> tuple[tuple[Any, ...], list[tuple[str, str, str]], list[tuple[Any, ...]], list[Any]]:
    """A document's row in ``docs``, its ``doc_meta`` rows, its chunks' rows (vectors as
    ``vec_param`` makes them) and its postings ``(term, chunk key, tf)``."""
    doc_row = (
        doc.path,
        doc.content_hash,
        doc.title,
        json.dumps(doc.metadata, sort_keys=True),
        doc.size,
        len(chunks),
        org_id,
    )
    rows: list[tuple[Any, ...]] = []
    postings: list[tuple[str, int, int]] = []
    for chunk, vector in zip(chunks, vectors, strict=True):
        tf, length = term_frequencies(chunk.embed_text)
        rows.append(
            (
                chunk.key,
                chunk.id,
                org_id,
                doc.path,
                chunk.position,
                json.dumps(list(chunk.heading_path)),
                chunk.text,
                length,
                chunk.embed_hash,
                vec_param(vector),
            )
        )
        postings += [(t, chunk.key, n) for t, n in tf.items()]
    return doc_row, meta_rows(doc), rows, postings
