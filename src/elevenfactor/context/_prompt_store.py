"""Every prompt version ever used, kept in the store (``prompt_versions``, migration
m012_prompts) so a call or run made with an old version can still be explained after the file
changed: its text, its file and when it was first used."""

from __future__ import annotations

from pathlib import Path

from elevenfactor.context._prompt_model import Prompt
from elevenfactor.context._prompt_parse import parse_prompt
from elevenfactor.context._prompt_template import located_error
from elevenfactor.store import Store
from elevenfactor.store._versions import StoredVersion, VersionTable

__all__ = ["StoredVersion", "load_stored", "record_version", "stored_ids", "stored_versions"]

_VERSIONS = VersionTable("prompt_versions", "prompt_id")


async def record_version(store: Store, prompt: Prompt) -> None:
    """Record that ``prompt`` (this version of it) was used, once: the first use is kept, later
    ones change nothing. Each process writes a given version to a given store at most once."""
    await _VERSIONS.record(
        store, prompt.id, prompt.full_hash, prompt.version, prompt.file, prompt.source
    )


async def stored_versions(store: Store, prompt_id: str) -> list[StoredVersion]:
    """The versions of ``prompt_id`` in the store, oldest first use first."""
    return await _VERSIONS.versions(store, prompt_id)


async def stored_ids(store: Store) -> list[str]:
    """The ids of every prompt with a recorded version."""
    return await _VERSIONS.ids(store)


async def load_stored(store: Store, prompt_id: str, prefix: str) -> list[Prompt]:
    """The recorded versions of ``prompt_id`` whose hash starts with ``prefix`` (lowercase
    hex digits), parsed.

    The stored text is hashed again: a row whose content does not match its hash (edited in
    the database) is a ``PromptError``, never served."""
    out = []
    for stored in await _VERSIONS.texts(store, prompt_id, prefix):
        if not stored.intact:
            raise located_error(
                f"{stored.file} (stored version {stored.full_hash[:12]})",
                None,
                "the stored text of this version does not match its hash",
                hint="its prompt_versions row was changed after it was recorded; restore it "
                "from a backup or from the file in version control",
            )
        data = stored.content.encode("utf-8")
        prompt = parse_prompt(data, path=Path(stored.file), file=stored.file, origin="store")
        if prompt.id != prompt_id:
            raise located_error(
                stored.file,
                None,
                f"the stored version {stored.full_hash[:12]} is prompt {prompt.id!r}",
            )
        out.append(prompt)
    return out
