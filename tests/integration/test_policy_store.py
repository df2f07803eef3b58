"""Guard policy versions in the store (SQLite and PostgreSQL): recorded once, listed, found
again after the file changed, and never served when the stored text was tampered with."""

from __future__ import annotations

from pathlib import Path

import pytest

from elevenfactor.config import GuardsConfig
from elevenfactor.errors import ConfigError
from elevenfactor.governance._policy_book import SHIPPED_DEFAULT, PolicyBook
from elevenfactor.governance._policy_store import (
    load_stored_policy,
    record_policy_version,
    stored_policy_ids,
    stored_policy_versions,
)
from elevenfactor.store import Store, applied, open_store

pytestmark = pytest.mark.integration

V1 = "description: strict\nstages:\n  input: [{rule: injection, action: block}]\n"
V2 = "description: stricter\nstages:\n  input: [{rule: injection, action: block, threshold: 0.3}]\n"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "strict.yaml").write_text(V1)
    return tmp_path


def _book(project: Path, **guards: object) -> PolicyBook:
    return PolicyBook.load(GuardsConfig.model_validate(guards), project)


async def _rows(store: Store) -> list[tuple[object, ...]]:
    rows = await store.fetchall(
        "SELECT policy_id, hash, version, path, content, first_used_at FROM policy_versions"
        " ORDER BY first_used_at, hash"
    )
    return [tuple(r) for r in rows]


async def test_the_migration_is_applied(store: Store) -> None:
    assert "m018_policies" in await applied(store)


async def test_a_version_is_recorded_once_and_listed(
    store: Store, store_url: str, project: Path
) -> None:
    policy = _book(project).get("strict")
    await record_policy_version(store, policy)
    await record_policy_version(store, policy)
    rows = await _rows(store)
    assert len(rows) == 1
    pid, full, short, path, content, first = rows[0]
    assert (pid, full, short, path, content) == (
        "strict",
        policy.full_hash,
        policy.version,
        "policies/strict.yaml",
        V1,
    )
    assert isinstance(first, float)
    [listed] = await stored_policy_versions(store, "strict")
    assert (listed.full_hash, listed.version, listed.file) == (
        policy.full_hash,
        policy.version,
        "policies/strict.yaml",
    )
    assert await stored_policy_ids(store) == ["strict"]
    # another process (another connection, nothing remembered) keeps the first use
    other = await open_store(store_url)
    try:
        await record_policy_version(other, _book(project).get("strict"))
        assert await _rows(other) == rows
    finally:
        await other.close()


async def test_the_hot_path_writes_a_version_once_per_process(store: Store, project: Path) -> None:
    book = _book(project, keys={"bot": "strict"})
    await book.record_used(store, book.for_call("bot", None, None))
    await store.execute("DELETE FROM policy_versions")
    await book.record_used(store, book.for_call("bot", None, None))  # no statement at all
    assert await _rows(store) == []


async def test_the_shipped_default_is_recorded_and_loads_back(store: Store, project: Path) -> None:
    book = _book(project)
    [default] = book.for_call(None, None, None)
    await book.record_used(store, [default])
    [stored] = await load_stored_policy(store, "default", default.version)
    assert stored.file == SHIPPED_DEFAULT and stored.full_hash == default.full_hash
    assert stored.spec == default.spec


async def test_an_older_version_resolves_from_the_store_after_the_file_changed(
    store: Store, project: Path
) -> None:
    v1 = _book(project).get("strict")
    await record_policy_version(store, v1)
    (project / "policies" / "strict.yaml").write_text(V2)
    book = _book(project)
    v2 = book.get("strict")
    assert v2.version != v1.version
    with pytest.raises(ConfigError, match="is not the file on disk"):
        book.get(f"strict@{v1.version}")
    old = await book.resolve(f"strict@{v1.version}", store)
    assert (old.full_hash, old.source, old.file) == (v1.full_hash, V1, "policies/strict.yaml")
    assert old.spec == v1.spec
    assert book.get(f"strict@{v1.version[:8]}") is old  # kept for the process from now on
    assert await book.resolve("strict", store) is v2  # no version: the file on disk
    assert await book.resolve(f"strict@{v2.version}", store) is v2
    with pytest.raises(ConfigError, match="not recorded"):
        await book.resolve("strict@0123456789abcdef", store)
    with pytest.raises(ConfigError, match="unknown policy 'gone'"):
        await book.resolve("gone@0123456789ab", store)
    assert await load_stored_policy(store, "strict", "%") == []  # not a version: no match


async def test_open_serves_a_labelled_version_that_is_no_longer_on_disk(
    store: Store, project: Path
) -> None:
    v1 = _book(project).get("strict")
    await record_policy_version(store, v1)
    (project / "policies" / "strict.yaml").write_text(V2)
    config = GuardsConfig(
        keys={"prod-bot": "strict@production", "dev-bot": "strict"},
        routes={"judge": f"strict@{v1.version}"},
        labels={"strict": {"production": v1.version}},
    )
    with pytest.raises(ConfigError) as info:
        PolicyBook.load(config, project)  # without the store the pinned version is unknown
    assert info.value.key == "guards.keys.prod-bot"
    book = await PolicyBook.open(config, project, store)
    [prod] = book.for_call("prod-bot", None, None)
    assert prod.full_hash == v1.full_hash and prod.source == V1
    assert [p.source for p in book.for_call("dev-bot", None, "judge")] == [V2, V1]
    assert book.for_agent("strict@production") == [prod]


async def test_open_refuses_a_label_pinning_a_version_found_nowhere(
    store: Store, project: Path
) -> None:
    config = GuardsConfig(labels={"strict": {"prod": "0123456789ab"}})
    with pytest.raises(ConfigError) as info:
        await PolicyBook.open(config, project, store, source="elevenfactor.yaml")
    assert info.value.key == "guards.labels.strict.prod"
    assert "neither the file on disk nor a version recorded in the store" in info.value.message


async def test_a_tampered_row_is_refused(store: Store, project: Path) -> None:
    v1 = _book(project).get("strict")
    await record_policy_version(store, v1)
    await store.execute(
        "UPDATE policy_versions SET content = ? WHERE policy_id = ?",
        (V1.replace("block", "monitor"), "strict"),
    )
    with pytest.raises(ConfigError, match="does not match its hash") as info:
        await load_stored_policy(store, "strict", v1.version)
    assert info.value.details["file"] == f"policies/strict.yaml (stored version {v1.version})"
    (project / "policies" / "strict.yaml").write_text(V2)
    with pytest.raises(ConfigError, match="does not match its hash"):
        await _book(project).resolve(f"strict@{v1.version}", store)
