"""Ingestion: a source folder's files, read and parsed into ``Document`` s.

Every file under the folder is a document, except hidden ones (a name starting with ``.``, at
any depth) and those matching an ``exclude`` pattern. A file that cannot be used (unreadable,
over the byte limit, an unsupported format, malformed) is a ``DocumentError`` naming it;
``scan`` collects those as problems, so a build can skip them with a warning or fail on them.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from elevenfactor.context._retr_formats import FORMATS, Section
from elevenfactor.errors import DocumentError

__all__ = ["PARSER_VERSION", "Document", "Scan", "load_document", "scan"]

PARSER_VERSION = "1"
"""Part of every document's content hash: a change to the parsers re-embeds everything."""


@dataclass(frozen=True, slots=True)
class Document:
    """A parsed source file.

    ``path`` is relative to the source folder, with ``/``; ``content_hash`` covers the bytes
    and the parser version; ``metadata`` holds ``path``, ``ext``, ``title`` (if any) and the
    front matter's scalar and list values, as strings (what filters match)."""

    path: str
    content_hash: str
    size: int
    sections: tuple[Section, ...]
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def title(self) -> str | None:
        """The document's title: front matter, ``<title>``, PDF info or its first ``#``."""
        value = self.metadata.get("title")
        return value if isinstance(value, str) else None


@dataclass
class Scan:
    """A folder's documents (sorted by path) and the files that could not be used."""

    documents: list[Document] = field(default_factory=list)
    problems: list[DocumentError] = field(default_factory=list)


def _clean_meta(raw: dict[str, Any]) -> dict[str, Any]:
    """Front matter values filters can match: strings, numbers and booleans as strings, and
    lists of them; nested mappings are left out."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, bool):
            out[key] = "true" if value else "false"
        elif isinstance(value, (str, int, float)):
            out[key] = str(value)
        elif isinstance(value, list) and all(
            isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in value
        ):
            out[key] = [str(v) for v in value]
    return out


def load_document(root: Path, file: Path, *, max_bytes: int) -> Document:
    """Read and parse one file (``file`` under ``root``); ``DocumentError`` naming it if it
    cannot be used."""
    rel = file.relative_to(root).as_posix()
    ext = file.suffix.lower()
    parser = FORMATS.get(ext)
    if parser is None:
        raise DocumentError(
            f"{rel}: unsupported format {ext or '(no extension)'!r}",
            hint="supported: " + ", ".join(sorted(FORMATS)) + "; exclude other files with "
            "`exclude:` in the index's configuration",
        )
    try:
        size = file.stat().st_size
        if size > max_bytes:
            raise DocumentError(
                f"{rel}: {size:,} bytes, over the limit of {max_bytes:,}",
                hint="raise `max_document_bytes` for this index, or exclude the file",
            )
        data = file.read_bytes()
    except OSError as exc:
        raise DocumentError(
            f"{rel}: cannot be read ({exc.strerror or exc})",
            hint="check the file's permissions",
        ) from None
    if len(data) > max_bytes:  # grew since stat
        raise DocumentError(f"{rel}: {len(data):,} bytes, over the limit of {max_bytes:,}")
    try:
        parsed = parser(data)
    except (ValueError, RecursionError) as exc:
        raise DocumentError(f"{rel}: {exc}", hint="fix or exclude the file") from None
    digest = hashlib.sha256(PARSER_VERSION.encode() + b"\0" + data).hexdigest()
    meta = _clean_meta(parsed.metadata)
    meta["path"] = rel
    meta["ext"] = ext.lstrip(".")
    if parsed.title:
        meta["title"] = parsed.title
    return Document(rel, digest, len(data), parsed.sections, meta)


def _files(root: Path, exclude: Sequence[str]) -> Iterator[Path]:
    for folder, dirs, names in os.walk(root, onerror=None, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            if name.startswith("."):
                continue
            path = Path(folder) / name
            rel = path.relative_to(root).as_posix()
            if any(fnmatch.fnmatchcase(rel, pat) for pat in exclude):
                continue
            yield path


def scan(
    source: Path,
    *,
    max_bytes: int,
    exclude: Sequence[str] = (),
) -> Scan:
    """Every usable document under ``source`` and every problem file.

    A missing source folder (or a file where a folder should be) is a ``DocumentError``
    raised at once."""
    if not source.is_dir():
        what = "is not a folder" if source.exists() else "does not exist"
        raise DocumentError(
            f"source folder {str(source)!r} {what}",
            hint="pass an existing folder, or set `source:` of the index in elevenfactor.yaml",
        )
    root = source.resolve()
    found = Scan()
    for file in _files(root, exclude):
        try:
            found.documents.append(load_document(root, file, max_bytes=max_bytes))
        except DocumentError as exc:
            found.problems.append(exc)
    found.documents.sort(key=lambda d: d.path)
    return found
