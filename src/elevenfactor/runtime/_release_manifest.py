"""A release's manifest: what the code and the project files are, as one canonical JSON object.

``build_manifest`` reads what a process would run with and freezes it:

- ``code``: the elevenfactor version, the SHA-256 of its installed package files (``source``),
  and of the project's own Python modules named by ``programs:`` and ``toolsets:`` (the
  top-level package folder or module file inside the project folder);
- ``config``: the resolved project file (``${VAR}`` substituted) with every secret removed:
  values under keys that name a credential (``api_key``, ``token``, ``password``,
  ``authorization``...), passwords in URLs, and anything the guard secret finders recognise are
  ``<secret>``. Model ids and parameters are ``config.models`` and ``config.routes``;
- ``prompts``: every prompt file's version (full hash) and file, and what each label resolves
  to; ``policies``: every guard policy's version (the shipped ``default`` included);
- ``prices``: each deployment's price version, and ``price_table``: the hash of all of them;
- ``agents``: every agent spec as loaded (``instructions_file`` read in), with the prompt
  version and guard policy versions it resolves to;
- ``retrieval``: the active version of each index, per organisation (given a store).

Deployment settings (URLs, ports, keys from the environment) are not part of a release: they vary
between processes of one deployment. A release's id is the SHA-256 of the canonical manifest;
``files_hash`` is the SHA-256 of the manifest without ``retrieval`` — index versions are data
in the store, so a process compares only the rest with its files.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

from elevenfactor._version import __version__
from elevenfactor.config import ProjectConfig, Settings
from elevenfactor.context import load_prompts
from elevenfactor.errors import ConfigError, PromptNotFound
from elevenfactor.governance import price_book
from elevenfactor.governance._guard_secrets import find_secrets
from elevenfactor.governance._policy_book import PolicyBook
from elevenfactor.runtime._agent_spec import load_agents
from elevenfactor.store import Store

__all__ = [
    "MANIFEST_FORMAT",
    "SECRET",
    "build_manifest",
    "canonical_manifest",
    "code_version",
    "files_hash",
    "manifest_id",
    "project_dir",
    "scrub",
    "watched_files",
]

MANIFEST_FORMAT = "elevenfactor.release/1"
SECRET = "<secret>"
"""What a secret in the project config becomes in a manifest."""

_WORD = re.compile(r"[^A-Za-z0-9]+|(?<=[a-z0-9])(?=[A-Z])")
_SECRET_LAST = {
    "secret", "password", "passwd", "pass", "token", "credential", "credentials", "cookie",
    "authorization", "auth", "apikey", "dsn",
}  # fmt: skip
_SECRET_KEYS = {"api", "secret", "private", "access", "signing", "encryption", "vault"}
_SECRET_MAPS = {"env", "environment", "headers"}
_URL_CREDS = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*://[^/\s:@]*):[^@\s/]*@")


def canonical_manifest(manifest: dict[str, Any]) -> bytes:
    """The canonical JSON of a manifest (sorted keys, no spaces): what its id hashes."""
    return orjson.dumps(manifest, option=orjson.OPT_SORT_KEYS)


def manifest_id(manifest: dict[str, Any]) -> str:
    """A release's id: the SHA-256 (hex) of its canonical manifest."""
    return hashlib.sha256(canonical_manifest(manifest)).hexdigest()


def files_hash(manifest: dict[str, Any]) -> str:
    """The SHA-256 of the manifest without ``retrieval``: what the files on disk determine."""
    return manifest_id({k: v for k, v in manifest.items() if k != "retrieval"})


def project_dir(settings: Settings) -> Path:
    """The project folder: the project file's, else the working directory."""
    source = settings.resolved_config_file()
    return source.resolve().parent if source is not None else Path.cwd()


def scrub(value: Any, key: str = "") -> Any:
    """``value`` with secrets replaced by ``<secret>``: anything under a key naming a
    credential, every value of ``env`` and ``headers`` mappings, passwords in URLs, and what
    the guard secret finders recognise."""
    if isinstance(value, dict):
        if key.lower() in _SECRET_MAPS:  # every value: environment variables, HTTP headers
            return {str(k): SECRET if v not in (None, "") else v for k, v in value.items()}
        return {str(k): scrub(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub(v, key) for v in value]
    if key and _secret_key(key) and value not in (None, "", {}, []):
        return SECRET
    if not isinstance(value, str):
        return value
    text = _URL_CREDS.sub(lambda m: f"{m.group(1)}:{SECRET}@", value)
    for finding in sorted(find_secrets(text), key=lambda f: f.start, reverse=True):
        if 0 <= finding.start < finding.end:
            text = text[: finding.start] + SECRET + text[finding.end :]
    return text


def _secret_key(key: str) -> bool:
    """Whether a config key names a credential: its last word (``api_key``, ``X-Auth-Token``,
    ``Authorization``, ``db_password``...), not a word inside it (``max_tokens``)."""
    words = [w.lower() for w in _WORD.split(key) if w]
    if not words:
        return False
    if words[-1] in _SECRET_LAST:
        return True
    return len(words) > 1 and words[-1] == "key" and words[-2] in _SECRET_KEYS


def _tree_hash(files: Iterable[Path], base: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(path.relative_to(base).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


@functools.cache
def _package_hash() -> str:
    import elevenfactor

    base = Path(elevenfactor.__file__).resolve().parent
    files = [
        p
        for p in base.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc", ".pyo")
    ]
    return _tree_hash(files, base)


def _module_files(refs: Iterable[str], base: Path) -> dict[str, list[Path]]:
    """Per top-level module of ``package.module:attribute`` references, its files inside the
    project folder (none when it is installed elsewhere)."""
    out: dict[str, list[Path]] = {}
    for ref in refs:
        top = ref.partition(":")[0].split(".")[0]
        if not top or top in out:
            continue
        folder, single = base / top, base / f"{top}.py"
        if folder.is_dir():
            out[top] = [p for p in folder.rglob("*.py") if "__pycache__" not in p.parts]
        elif single.is_file():
            out[top] = [single]
    return out


def code_version(project: ProjectConfig, base: Path) -> dict[str, Any]:
    """The ``code`` part of a manifest (see the module docstring)."""
    refs = [*project.programs, *project.toolsets.values()]
    modules = {name: _tree_hash(files, base) for name, files in _module_files(refs, base).items()}
    return {"elevenfactor": __version__, "source": _package_hash(), "project_modules": modules}


def watched_files(settings: Settings, project: ProjectConfig, base: Path) -> list[Path]:
    """The files a manifest is built from (the project file, prompts, policies, agents,
    instruction files, project modules): a change of any of them may change the manifest."""
    files: list[Path] = []
    source = settings.resolved_config_file()
    if source is not None:
        files.append(source.resolve())
    for folder in (project.prompts.dir, project.guards.dir, project.agents_dir):
        path = base / folder
        if path.is_dir():
            files += [p for p in path.iterdir() if p.is_file()]
    refs = [*project.programs, *project.toolsets.values()]
    for found in _module_files(refs, base).values():
        files += found
    return files


def _policies(book: PolicyBook) -> dict[str, Any]:
    return {p.id: {"version": p.full_hash, "file": p.file} for p in book.all()}


def _agents(base: Path, project: ProjectConfig, prompts: Any, book: PolicyBook) -> dict[str, Any]:
    specs = load_agents(base / project.agents_dir)
    out: dict[str, Any] = {}
    for name, spec in sorted(specs.items()):
        entry: dict[str, Any] = {"spec": spec.model_dump(mode="json")}
        if spec.prompt is not None:
            try:
                entry["prompt_version"] = prompts.get(spec.prompt).full_hash
            except PromptNotFound:  # a label pinning a version kept in the store
                entry["prompt_version"] = None
        try:
            entry["policies"] = [p.ref for p in book.for_agent(spec.policy)]
        except ConfigError:  # a version recorded in the store, not on disk
            entry["policies"] = [spec.policy]
        out[name] = scrub(entry)
    return out


def _prompts(registry: Any, labels: dict[str, dict[str, str]]) -> dict[str, Any]:
    out: dict[str, Any] = {
        p.id: {"version": p.full_hash, "file": p.file, "labels": {}} for p in registry.list()
    }
    for pid, pins in labels.items():
        entry = out.setdefault(pid, {"version": None, "file": None, "labels": {}})
        for label, prefix in pins.items():
            on_disk = entry["version"] is not None and str(entry["version"]).startswith(prefix)
            entry["labels"][label] = entry["version"] if on_disk else prefix
    return out


async def build_manifest(
    settings: Settings,
    project: ProjectConfig,
    base: Path | None = None,
    *,
    store: Store | None = None,
) -> dict[str, Any]:
    """The manifest of what ``project`` and the files under ``base`` (default: the project
    folder) are now (see the module docstring). Guard policy versions pinned in ``store`` are
    resolved there; with a store, ``retrieval`` lists the indexes' active versions. An invalid
    prompt, policy or agent file is a ``ConfigError``/``PromptError`` naming it: a release
    cannot freeze broken files."""
    base = base if base is not None else project_dir(settings)
    registry = load_prompts(base / project.prompts.dir, project.prompts.labels, root=base)
    source = str(settings.resolved_config_file() or "the project file")
    if store is not None:
        book = await PolicyBook.open(project.guards, base, store, source=source)
    else:
        book = PolicyBook.load(project.guards, base, source=source)
    prices = {
        p.deployment: {"version": p.version, "model": p.model, "source": p.source}
        for p in price_book(project).versions()
    }
    manifest: dict[str, Any] = {
        "format": MANIFEST_FORMAT,
        "code": code_version(project, base),
        "config": scrub(project.model_dump(mode="json")),
        "prompts": _prompts(registry, project.prompts.labels),
        "policies": _policies(book),
        "prices": prices,
        "price_table": manifest_id(prices),
        "agents": _agents(base, project, registry, book),
    }
    if store is not None:
        manifest["retrieval"] = await _retrieval(store, project)
    return manifest


async def _retrieval(store: Store, project: ProjectConfig) -> dict[str, Any]:
    """Per index name, the active version in each organisation that has one."""
    rows = await store.fetchall(
        "SELECT name, org_id, active_version FROM retrieval_indexes ORDER BY name, org_id"
    )
    out: dict[str, dict[str, int | None]] = {name: {} for name in project.retrieval.indexes}
    for name, org_id, active in rows:
        out.setdefault(str(name), {})[str(org_id)] = None if active is None else int(active)
    return out
