"""Prompts as code: the prompt files of a project, their versions, the labels that pin a
version, and references to them.

A reference is ``support`` (the file on disk now), ``support@production`` (the version a label
pins in the project file) or ``support@3f2a9c1e0b7d`` (a version, or a prefix of it of at least
8 hex digits). ``PromptRegistry.get`` answers from the files on disk; ``resolve`` also finds
versions recorded in the store (``record_version``), so a run made with an old version can be
explained after the file changed.

```python
registry = load_prompts(project_dir / project.prompts.dir, project.prompts.labels)
prompt = await registry.resolve("support@production", store=store)
await record_version(store, prompt)
text = prompt.render({"customer": "Ann", "tier": "pro"})
# the call: route=prompt.route, settings=prompt.settings; its record: prompt=prompt.ref
```
"""

from __future__ import annotations

import builtins
import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from elevenfactor.context._prompt_model import Prompt
from elevenfactor.context._prompt_parse import parse_prompt
from elevenfactor.context._prompt_store import (
    load_stored,
    record_version,
    stored_ids,
    stored_versions,
)
from elevenfactor.context._prompt_template import located_error
from elevenfactor.errors import PromptError, PromptNotFound
from elevenfactor.store import Store

__all__ = [
    "Prompt",
    "PromptRegistry",
    "PromptVersion",
    "load_prompts",
    "parse_ref",
    "prompt_diff",
    "record_version",
]

_REF = re.compile(r"^([^@\s]+)(?:@([^@\s]+))?$")
_HEX = re.compile(r"^[0-9a-f]{8,64}$")
_ID_KEY = re.compile(r"^id\s*:")


def parse_ref(ref: str) -> tuple[str, str | None]:
    """``support@production`` as ``("support", "production")``; ``support`` as
    ``("support", None)``."""
    match = _REF.match(ref.strip()) if isinstance(ref, str) else None
    if match is None:
        raise PromptNotFound(
            f"{ref!r} is not a prompt reference",
            hint="write ID, ID@LABEL or ID@VERSION (at least 8 hex digits)",
        )
    return match.group(1), match.group(2)


@dataclass(frozen=True, slots=True)
class PromptVersion:
    """One version of a prompt: on disk now, recorded in the store, or both."""

    prompt_id: str
    version: str
    full_hash: str
    file: str
    labels: tuple[str, ...]
    on_disk: bool
    first_used_at: float | None


class PromptRegistry:
    """The prompts of a project: the files on disk, and the labels that pin their versions."""

    def __init__(
        self,
        prompts: Mapping[str, Prompt],
        labels: Mapping[str, Mapping[str, str]] | None = None,
        *,
        directory: Path | None = None,
    ) -> None:
        self._prompts = dict(prompts)
        self.labels = {pid: dict(pins) for pid, pins in (labels or {}).items()}
        self.directory = directory

    def list(self) -> list[Prompt]:
        """The prompts on disk, by id."""
        return [self._prompts[pid] for pid in sorted(self._prompts)]

    def labels_of(self, prompt_id: str, full_hash: str) -> tuple[str, ...]:
        """The labels of ``prompt_id`` that pin the version ``full_hash``."""
        pins = self.labels.get(prompt_id, {})
        return tuple(sorted(name for name, v in pins.items() if full_hash.startswith(v)))

    def get(self, ref: str) -> Prompt:
        """The prompt ``ref`` names, from the files on disk. A label or version that is not
        the file on disk now is ``PromptNotFound`` (``resolve`` with a store finds it)."""
        prompt_id, selector = parse_ref(ref)
        disk = self._prompts.get(prompt_id)
        if disk is None:
            raise self._unknown(prompt_id)
        if selector is None:
            return disk
        prefix, what = self._target(prompt_id, selector)
        if disk.full_hash.startswith(prefix):
            return disk
        raise PromptNotFound(
            f"{what} of prompt {prompt_id!r} is not the file on disk ({disk.file} is version "
            f"{disk.version})",
            hint="versions used before are kept in the store: resolve with the store "
            f"(`elevenfactor prompts versions {prompt_id}` lists them)",
        )

    async def resolve(self, ref: str, store: Store | None = None) -> Prompt:
        """The prompt ``ref`` names: the file on disk when it is that version, else (given
        ``store``) the version recorded there. ``PromptNotFound`` says which it is not."""
        prompt_id, selector = parse_ref(ref)
        disk = self._prompts.get(prompt_id)
        if store is None or selector is None or (disk is not None and self._on_disk(ref)):
            return self.get(ref)
        known = await stored_versions(store, prompt_id)
        if disk is None and not known:
            raise self._unknown(prompt_id, await stored_ids(store))
        prefix, what = self._target(prompt_id, selector)
        found = await load_stored(store, prompt_id, prefix)
        if len(found) == 1:
            return found[0]
        if found:
            raise PromptNotFound(
                f"{what} of prompt {prompt_id!r} matches several recorded versions: "
                + ", ".join(p.version for p in found),
                hint="give more hex digits of the version",
            )
        versions = sorted({v.version for v in known} | ({disk.version} if disk else set()))
        raise PromptNotFound(
            f"{what} of prompt {prompt_id!r} is neither the file on disk nor recorded in the store",
            hint="known versions: " + ", ".join(versions),
        )

    def _on_disk(self, ref: str) -> bool:
        try:
            self.get(ref)
        except PromptNotFound:
            return False
        return True

    async def versions(
        self, prompt_id: str, store: Store | None = None
    ) -> builtins.list[PromptVersion]:
        """Every version of ``prompt_id``: those recorded in ``store`` (oldest first use
        first), then the file on disk if it was never used."""
        disk = self._prompts.get(prompt_id)
        stored = await stored_versions(store, prompt_id) if store is not None else []
        out = [
            PromptVersion(
                prompt_id,
                s.version,
                s.full_hash,
                s.file,
                self.labels_of(prompt_id, s.full_hash),
                disk is not None and disk.full_hash == s.full_hash,
                s.first_used_at,
            )
            for s in stored
        ]
        if disk is not None and not any(v.on_disk for v in out):
            labels = self.labels_of(prompt_id, disk.full_hash)
            out.append(
                PromptVersion(
                    prompt_id, disk.version, disk.full_hash, disk.file, labels, True, None
                )
            )
        if not out:
            raise self._unknown(prompt_id, await stored_ids(store) if store else [])
        return out

    def _target(self, prompt_id: str, selector: str) -> tuple[str, str]:
        """The version prefix ``selector`` (a label or a version) stands for, and words for
        errors."""
        pins = self.labels.get(prompt_id, {})
        if selector in pins:
            return pins[selector], f"label {selector!r} (version {pins[selector]})"
        if _HEX.match(selector.lower()):
            return selector.lower(), f"version {selector.lower()}"
        labels = ", ".join(sorted(pins)) or "(none)"
        raise PromptNotFound(
            f"prompt {prompt_id!r} has no label {selector!r}",
            hint=f"its labels: {labels} (set under prompts.labels in the project file); or "
            "give a version: at least 8 hex digits",
        )

    def _unknown(self, prompt_id: str, stored: builtins.list[str] | None = None) -> PromptNotFound:
        known = sorted(set(self._prompts) | set(stored or ()))
        where = f" in {self.directory}" if self.directory is not None else ""
        if self.directory is not None and not self.directory.is_dir():
            where += " (the directory does not exist)"
        return PromptNotFound(
            f"unknown prompt {prompt_id!r}",
            hint=f"known prompts{where}: " + (", ".join(known) if known else "(none)"),
        )


def load_prompts(
    directory: Path | str,
    labels: Mapping[str, Mapping[str, str]] | None = None,
    *,
    root: Path | None = None,
    errors: list[PromptError] | None = None,
) -> PromptRegistry:
    """Read and compile every ``*.md`` file in ``directory`` (none if it does not exist).

    ``labels`` are the project file's ``prompts.labels``. Paths are recorded relative to
    ``root`` (default: the directory's parent, the project). The first invalid file raises
    ``PromptError`` naming the file and line; with an ``errors`` list every one is collected
    there instead and the valid prompts are loaded."""
    directory = Path(directory)
    base = root if root is not None else directory.parent
    files = sorted(directory.glob("*.md")) if directory.is_dir() else []
    prompts: dict[str, Prompt] = {}
    for path in files:
        file = _relative(path, base)
        try:
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise located_error(file, None, f"cannot read the file: {exc.strerror}") from None
            prompt = parse_prompt(data, path=path, file=file)
            other = prompts.get(prompt.id)
            if other is not None:
                raise located_error(
                    file,
                    _id_line(prompt),
                    f"duplicate prompt id {prompt.id!r}: {other.file} has it too",
                    hint="prompt ids are unique; rename the file or change its `id:`",
                )
        except PromptError as exc:
            if errors is None:
                raise
            errors.append(exc)
            continue
        prompts[prompt.id] = prompt
    return PromptRegistry(prompts, labels, directory=directory)


def _relative(path: Path, base: Path) -> str:
    try:
        return path.resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return path.as_posix()


def _id_line(prompt: Prompt) -> int:
    """The line of ``id:`` in the front matter (1 when the id is the file name)."""
    lines = prompt.source.removeprefix("\ufeff").split("\n")
    if lines[0].rstrip() == "---":
        for i, line in enumerate(lines[1:], start=2):
            if line.rstrip() == "---":
                break
            if _ID_KEY.match(line):
                return i
    return 1


def prompt_diff(a: Prompt, b: Prompt) -> list[str]:
    """A unified diff of two versions' files (front matter and body), as lines without their
    newline; empty when they are the same."""
    return [
        line.rstrip("\n")
        for line in difflib.unified_diff(
            a.source.splitlines(keepends=True),
            b.source.splitlines(keepends=True),
            fromfile=f"{a.ref} ({a.file})",
            tofile=f"{b.ref} ({b.file})",
        )
    ]
