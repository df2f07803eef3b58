"""A release's manifest as something to run with: its project config (with this deployment's
secrets put back), its agent specs, and references to its prompt and policy versions — for
what-if replays "under release R" and anything else that must act as a release did.

```python
release = await get_release(store, "v41")
project = release_project(release, current_project)   # models, routes, params of v41
agents = release_agents(release)                       # AgentSpec by name, as v41 had them
refs = release_prompt_refs(release)                    # {"support": "support@<full hash>"}
prompt = await registry.resolve(refs["support"], store)  # its text, kept in the store
```

Prompt and policy texts are kept in the store when the release is created (``keep_versions``),
so their versions resolve after the files changed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from elevenfactor.config import ProjectConfig, Settings, parse_project
from elevenfactor.context import load_prompts, record_version
from elevenfactor.governance._policy_book import PolicyBook
from elevenfactor.runtime._agent_spec import AgentSpec
from elevenfactor.runtime._release import Release
from elevenfactor.runtime._release_manifest import SECRET, project_dir
from elevenfactor.store import Store

__all__ = [
    "keep_versions",
    "release_agents",
    "release_policy_refs",
    "release_project",
    "release_prompt_refs",
]


def _restore(frozen: Any, current: Any) -> Any:
    """``frozen`` with each ``<secret>`` (or masked URL) replaced by ``current``'s value at
    the same place, when it has one."""
    if isinstance(frozen, dict):
        cur = current if isinstance(current, dict) else {}
        return {k: _restore(v, cur.get(k)) for k, v in frozen.items()}
    if isinstance(frozen, list):
        cur_list = current if isinstance(current, list) else []
        return [
            _restore(v, cur_list[i] if i < len(cur_list) else None) for i, v in enumerate(frozen)
        ]
    if isinstance(frozen, str) and SECRET in frozen:
        return current if current is not None else None
    return frozen


def release_project(release: Release, current: ProjectConfig) -> ProjectConfig:
    """The release's project config (providers, models, routes, parameters, guards...) with
    the secrets of ``current`` (this deployment's) where the manifest has ``<secret>``."""
    frozen = (release.manifest or {}).get("config") or {}
    live = current.model_dump(mode="python")
    _unwrap_secrets(live)
    return parse_project(_restore(frozen, live), source=f"release {release.label}", env={})


def _unwrap_secrets(value: Any) -> None:
    """Replace pydantic ``SecretStr`` values in a dumped config by their text (in place)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if hasattr(item, "get_secret_value"):
                value[key] = item.get_secret_value()
            else:
                _unwrap_secrets(item)
    elif isinstance(value, list):
        for item in value:
            _unwrap_secrets(item)


def release_agents(release: Release) -> dict[str, AgentSpec]:
    """The release's agent specs, by name (``instructions_file`` already read in)."""
    agents = (release.manifest or {}).get("agents") or {}
    return {name: AgentSpec.model_validate(entry["spec"]) for name, entry in agents.items()}


def release_prompt_refs(release: Release) -> dict[str, str]:
    """Per prompt id, ``id@<full hash>`` of the version the release has."""
    prompts = (release.manifest or {}).get("prompts") or {}
    return {pid: f"{pid}@{e['version']}" for pid, e in prompts.items() if e.get("version")}


def release_policy_refs(release: Release) -> dict[str, str]:
    """Per guard policy id, ``id@<full hash>`` of the version the release has."""
    policies = (release.manifest or {}).get("policies") or {}
    return {pid: f"{pid}@{e['version']}" for pid, e in policies.items() if e.get("version")}


async def keep_versions(
    store: Store, settings: Settings, project: ProjectConfig, base: Path | None = None
) -> None:
    """Record the text of every prompt and guard policy version on disk in the store (once per
    version), so a release's versions resolve after the files change."""
    base = base if base is not None else project_dir(settings)
    for prompt in load_prompts(
        base / project.prompts.dir, project.prompts.labels, root=base
    ).list():
        await record_version(store, prompt)
    book = await PolicyBook.open(project.guards, base, store)
    await book.record_used(store, book.all())
