"""Every prompt version ever used, kept in the store (``prompt_versions``, migration
m012_prompts) so a call or run made with an old version can still be explained after the file
changed: its text, its file and when it was first used."""

from __future__ import annotations

import time
import weakref
from dataclasses import dataclass
from pathlib import Path

from elevenfactor.context._prompt_model import Prompt
from elevenfactor.context._prompt_parse import content_hash, parse_prompt
from elevenfactor.context._prompt_template import located_error
from elevenfactor.store import Store

__all__ = ["StoredVersion", "load_stored", "record_version", "stored_ids", "stored_versions"]

_INSERT = (
    "INSERT INTO prompt_versions (prompt_id, hash, version, path, content, first_used_at)"
    " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (prompt_id, hash) DO NOTHING"
)

# Versions this process has written, per store: a hot path that records the same prompt on
# every call writes it once. Weak keys: a closed and dropped store takes its entries with it.
_RECORDED: weakref.WeakKeyDictionary[Store, set[tuple[str, str]]] = weakref.WeakKeyDictionary()


@dataclass(frozen=True, slots=True)
class StoredVersion:
    """A version of a prompt recorded in the store."""

    prompt_id: str
    full_hash: str
    version: str
    file: str
    first_used_at: float


async def record_version(store: Store, prompt: Prompt) -> None:
    """Record that ``prompt`` (this version of it) was used, once: the first use is kept, later
    ones change nothing. Each process writes a given version to a given store at most once."""
    seen = _RECORDED.setdefault(store, set())
    key = (prompt.id, prompt.full_hash)
    if key in seen:
        return
    await store.execute(
        _INSERT,
        (prompt.id, prompt.full_hash, prompt.version, prompt.file, prompt.source, time.time()),
    )
    seen.add(key)


async def stored_versions(store: Store, prompt_id: str) -> list[StoredVersion]:
    """The versions of ``prompt_id`` in the store, oldest first use first."""
    rows = await store.fetchall(
        "SELECT hash, version, path, first_used_at FROM prompt_versions WHERE prompt_id = ?"
        " ORDER BY first_used_at, hash",
        (prompt_id,),
    )
    return [StoredVersion(prompt_id, h, v, p, float(t)) for h, v, p, t in rows]


async def stored_ids(store: Store) -> list[str]:
    """The ids of every prompt with a recorded version."""
    rows = await store.fetchall("SELECT DISTINCT prompt_id FROM prompt_versions ORDER BY 1")
    return [str(r[0]) for r in rows]


async def load_stored(store: Store, prompt_id: str, prefix: str) -> list[Prompt]:
    """The recorded versions of ``prompt_id`` whose hash starts with ``prefix`` (lowercase
    hex digits), parsed.

    The stored text is hashed again: a row whose content does not match its hash (edited in
    the database) is a ``PromptError``, never served."""
    rows = await store.fetchall(
        "SELECT hash, path, content FROM prompt_versions"
        " WHERE prompt_id = ? AND hash LIKE ? ORDER BY hash",
        (prompt_id, prefix + "%"),
    )
    out = []
    for full_hash, file, content in rows:
        data = content.encode("utf-8")
        if content_hash(data)[0] != full_hash:
            raise located_error(
                f"{file} (stored version {full_hash[:12]})",
                None,
                "the stored text of this version does not match its hash",
                hint="its prompt_versions row was changed after it was recorded; restore it "
                "from a backup or from the file in version control",
            )
        prompt = parse_prompt(data, path=Path(file), file=file, origin="store")
        if prompt.id != prompt_id:
            raise located_error(
                file, None, f"the stored version {full_hash[:12]} is prompt {prompt.id!r}"
            )
        out.append(prompt)
    return out
