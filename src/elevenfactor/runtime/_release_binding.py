"""The release a process runs under, and the checks that keep it from running a mix.

``ReleaseBinding.open`` (``serve``, ``worker``, ``run``, ``eval run``) finds the release that
applies (``ELEVENFACTOR_RELEASE``, else the active release of ``ELEVENFACTOR_ENVIRONMENT``, else
none) and refuses to start (``ReleaseMismatch``) when the files on disk are not that release's.
Then:

- ``check_disk`` before a run is submitted: the files on disk must still be the release's (the
  manifest is rebuilt only when a watched file's size or modification time changed);
- ``check_run`` when a worker starts (or resumes) a run: a run submitted under a release may
  only execute where the files loaded at start, and those on disk now, are that release's;
  a run submitted under none (``release_id`` NULL) is not checked;
- ``release_id`` is what this process's runs and model calls record: ``submit_run`` takes it by
  default for the store's URL (``default_release``), the call recorder stamps every record.

A release activated while a process runs applies when the process next starts.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from elevenfactor.config import ProjectConfig, Settings, load_project
from elevenfactor.errors import ElevenFactorError, ReleaseMismatch
from elevenfactor.runtime._programs import Program, Programs
from elevenfactor.runtime._release import Release, applicable_release, get_release, mismatch
from elevenfactor.runtime._release_manifest import (
    build_manifest,
    files_hash,
    project_dir,
    watched_files,
)
from elevenfactor.store import Store

__all__ = ["ReleaseBinding", "ReleasePrograms", "default_release"]

_BOUND: dict[str, list[str]] = {}
"""Store URL -> the release ids bound in this process (the newest is the default)."""


def default_release(url: str) -> str | None:
    """The release new runs on the store at ``url`` record when their submitter names none
    (the release of the process serving them), or None."""
    bound = _BOUND.get(url)
    return bound[-1] if bound else None


def _fingerprint(files: list[Path]) -> tuple[tuple[str, int, int], ...]:
    out = []
    for path in sorted(set(files)):
        try:
            st = os.stat(path)
        except OSError:
            out.append((str(path), -1, -1))
            continue
        out.append((str(path), st.st_mtime_ns, st.st_size))
    return tuple(out)


class ReleaseBinding:
    """See the module docstring. Build it with ``open``; ``close`` unbinds its release."""

    def __init__(
        self, store: Store, settings: Settings, project: ProjectConfig, release: Release | None
    ) -> None:
        self.store, self.settings, self.project, self.release = store, settings, project, release
        self.base = project_dir(settings)
        self._loaded: tuple[dict[str, Any], str] | None = None
        self._disk: tuple[dict[str, Any], str] | None = None
        self._fp: tuple[tuple[str, int, int], ...] | None = None
        self._lock = asyncio.Lock()
        self._known: dict[str, Release] = {}
        self._bound = False

    @property
    def release_id(self) -> str | None:
        """The id of the release this process runs under, or None."""
        return self.release.id if self.release is not None else None

    @classmethod
    async def open(cls, store: Store, settings: Settings, project: ProjectConfig) -> ReleaseBinding:
        """The binding of a process starting with ``project``: ``ReleaseMismatch`` (naming
        what differs) when a release applies and the files are not its; ``ReleaseNotFound``
        when ``ELEVENFACTOR_RELEASE`` names none."""
        binding = cls(store, settings, project, await applicable_release(store, settings))
        if binding.release is not None or await _any_release(store):
            binding._loaded = await binding._build(project)
            binding._disk = binding._loaded
            if binding.release is not None and binding._loaded[1] != binding.release.files_hash:
                raise mismatch(binding.release, binding._loaded[0])
        if binding.release is not None:
            _BOUND.setdefault(store.url, []).append(binding.release.id)
            binding._bound = True
        return binding

    def close(self) -> None:
        """Stop being the default release of runs submitted to this store from this process."""
        if self._bound and self.release is not None:
            bound = _BOUND.get(self.store.url, [])
            if self.release.id in bound:
                bound.reverse()
                bound.remove(self.release.id)
                bound.reverse()
            if not bound:
                _BOUND.pop(self.store.url, None)
            self._bound = False

    async def _build(self, project: ProjectConfig) -> tuple[dict[str, Any], str]:
        self._fp = _fingerprint(watched_files(self.settings, project, self.base))
        manifest = await build_manifest(self.settings, project, self.base, store=self.store)
        return manifest, files_hash(manifest)

    async def _current(self) -> tuple[dict[str, Any], str]:
        """The manifest of the files on disk now (rebuilt when a watched file changed)."""
        async with self._lock:
            files = watched_files(self.settings, self.project, self.base)
            if self._disk is not None and _fingerprint(files) == self._fp:
                return self._disk
            try:
                project = load_project(self.settings.resolved_config_file())
                self._disk = await self._build(project)
            except ElevenFactorError as exc:
                release = self.release.label if self.release is not None else "the release"
                raise ReleaseMismatch(
                    f"the files on disk no longer load ({exc.message}); this process runs"
                    f" release {release}",
                    hint="fix the files, or restart the process with the release's files",
                ) from None
            return self._disk

    async def check_disk(self) -> None:
        """``ReleaseMismatch`` if this process runs a release and the files on disk are not
        its files any more."""
        if self.release is None:
            return
        manifest, digest = await self._current()
        if digest != self.release.files_hash:
            raise mismatch(self.release, manifest)

    async def check_run(self, run_id: str) -> None:
        """``ReleaseMismatch`` unless the run ``run_id`` may execute in this process: it has no
        release, or the files this process loaded and the files on disk are its release's."""
        row = await self.store.fetchone("SELECT release_id FROM runs WHERE id = ?", (run_id,))
        rid = None if row is None else row[0]
        if rid is None:
            return
        if self.release is not None and rid == self.release.id:
            await self.check_disk()
            return
        release = self._known.get(rid)
        if release is None:
            release = self._known[rid] = await get_release(self.store, rid)
        if self._loaded is None:  # no release existed at start: the files then were these
            self._loaded = await self._current()
        runs = self.release.label if self.release is not None else "the files it loaded at start"
        if self._loaded[1] != release.files_hash:
            raise mismatch(release, self._loaded[0], f" (run {run_id}; this process runs {runs})")
        manifest, digest = await self._current()
        if digest != release.files_hash:
            raise mismatch(release, manifest, f" (run {run_id})")


async def _any_release(store: Store) -> bool:
    return await store.fetchone("SELECT 1 FROM releases LIMIT 1") is not None


class _Checked:
    """A program that checks its run's release before it runs (``ReleaseBinding.check_run``);
    everything else (an agent's ``spec``, ``breakers``) is the program's."""

    def __init__(self, program: Program, binding: ReleaseBinding) -> None:
        self._program, self._binding = program, binding

    async def __call__(self, ctx: Any, payload: Any) -> Any:
        await self._binding.check_run(ctx.run_id)
        return await self._program(ctx, payload)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._program, name)


class ReleasePrograms(Programs):
    """``programs`` as a worker runs them under ``binding``: each checks its run's release
    when it starts. Registering goes to ``programs``."""

    def __init__(self, programs: Programs, binding: ReleaseBinding) -> None:
        super().__init__()
        self._inner, self._binding = programs, binding
        self._checked: dict[str, _Checked] = {}

    def register(self, name: str, program: Program) -> None:
        """Register ``program`` in the wrapped registry."""
        self._inner.register(name, program)

    def get(self, name: str) -> Program:
        """The program called ``name``, checking its run's release first."""
        program = self._inner.get(name)
        checked = self._checked.get(name)
        if checked is None or checked._program is not program:
            checked = self._checked[name] = _Checked(program, self._binding)
        return checked

    def __contains__(self, name: object) -> bool:
        return name in self._inner

    def __iter__(self) -> Iterator[str]:
        return iter(self._inner)
