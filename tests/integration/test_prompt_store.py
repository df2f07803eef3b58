"""Prompt versions in the store (SQLite and PostgreSQL): recorded once, found again after the
file changed or was deleted, and the prompt each model call used, covered by the audit."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from elevenfactor.context._prompt_store import record_version, stored_versions
from elevenfactor.context._prompts import PromptRegistry, load_prompts
from elevenfactor.errors import PromptError, PromptNotFound
from elevenfactor.observe import CallRecord, CallRecorder
from elevenfactor.runtime._audit import audit
from elevenfactor.store import Store, open_store

pytestmark = pytest.mark.integration

DATA = Path(__file__).parent.parent / "data" / "prompts"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "prompts").mkdir()
    shutil.copy(DATA / "support.md", tmp_path / "prompts" / "support.md")
    return tmp_path


def _load(project: Path, labels: dict[str, dict[str, str]] | None = None) -> PromptRegistry:
    return load_prompts(project / "prompts", labels, root=project)


async def _rows(store: Store) -> list[tuple[object, ...]]:
    rows = await store.fetchall(
        "SELECT prompt_id, hash, version, path, content, first_used_at FROM prompt_versions"
        " ORDER BY first_used_at"
    )
    return [tuple(r) for r in rows]


async def test_a_version_is_recorded_once(store: Store, store_url: str, project: Path) -> None:
    prompt = _load(project).get("support")
    await record_version(store, prompt)
    await record_version(store, prompt)
    rows = await _rows(store)
    assert len(rows) == 1
    pid, full, short, path, content, first = rows[0]
    assert isinstance(first, float)
    assert (pid, full, short, path) == (
        "support",
        prompt.full_hash,
        prompt.version,
        "prompts/support.md",
    )
    assert content == (DATA / "support.md").read_text()
    # another process (another connection, nothing cached) keeps the first use
    other = await open_store(store_url)
    try:
        await record_version(other, _load(project).get("support"))
        assert await _rows(other) == rows
    finally:
        await other.close()


async def test_a_hot_path_writes_a_version_once_per_process(store: Store, project: Path) -> None:
    prompt = _load(project).get("support")
    await record_version(store, prompt)
    await store.execute("DELETE FROM prompt_versions")
    await record_version(store, prompt)  # known to this process: no statement at all
    assert await _rows(store) == []


async def test_an_old_version_resolves_from_the_store_after_the_file_changed(
    store: Store, project: Path
) -> None:
    v1 = _load(project).get("support")
    await record_version(store, v1)
    file = project / "prompts" / "support.md"
    file.write_text(v1.source.replace("with billing", "with invoices and refunds"))
    registry = _load(project, {"support": {"production": v1.version}})
    v2 = registry.get("support")
    assert v2.version != v1.version
    with pytest.raises(PromptNotFound, match="is not the file on disk"):
        registry.get("support@production")
    for ref in ("support@production", v1.ref, f"support@{v1.full_hash[:8]}"):
        old = await registry.resolve(ref, store=store)
        assert old.origin == "store" and old.full_hash == v1.full_hash
        assert old.file == "prompts/support.md"
        assert old.render({"customer": "Ann"}) == "You help Ann, with billing."
    assert (await registry.resolve("support", store=store)).full_hash == v2.full_hash
    assert (await registry.resolve(v2.ref, store=store)) is v2
    # what `prompts versions` shows: the recorded one with its label, then the file on disk
    await record_version(store, v2)
    versions = await registry.versions("support", store)
    assert [(v.version, v.labels, v.on_disk) for v in versions] == [
        (v1.version, ("production",), False),
        (v2.version, (), True),
    ]
    assert all(v.first_used_at is not None for v in versions)


async def test_a_version_neither_on_disk_nor_stored_is_not_found(
    store: Store, project: Path
) -> None:
    registry = _load(project, {"support": {"staging": "9b1c44d2e0aa"}})
    current = registry.get("support")
    await record_version(store, current)
    with pytest.raises(PromptNotFound) as err:
        await registry.resolve("support@staging", store=store)
    assert "neither the file on disk nor recorded in the store" in err.value.message
    assert err.value.hint == f"known versions: {current.version}"
    with pytest.raises(PromptNotFound, match="unknown prompt 'billing'") as err:
        await registry.resolve("billing@0123abcd", store=store)
    assert err.value.hint is not None and err.value.hint.endswith(": support")


async def test_a_deleted_prompt_is_still_explained_by_its_recorded_versions(
    store: Store, project: Path
) -> None:
    old = _load(project).get("support")
    await record_version(store, old)
    (project / "prompts" / "support.md").unlink()
    registry = _load(project)
    assert registry.list() == []
    again = await registry.resolve(old.ref, store=store)
    assert again.source == old.source and again.origin == "store"
    with pytest.raises(PromptNotFound, match="unknown prompt 'support'"):
        await registry.resolve("support", store=store)  # no file: only versions resolve
    assert [v.version for v in await registry.versions("support", store)] == [old.version]


async def test_a_stored_version_edited_in_the_database_is_refused(
    store: Store, project: Path
) -> None:
    old = _load(project).get("support")
    await record_version(store, old)
    await store.execute(
        "UPDATE prompt_versions SET content = ? WHERE hash = ?",
        (old.source.replace("billing", "anything"), old.full_hash),
    )
    (project / "prompts" / "support.md").write_text("changed\n")
    with pytest.raises(PromptError, match="does not match its hash"):
        await _load(project).resolve(old.ref, store=store)


async def test_model_calls_record_their_prompt_and_the_audit_covers_it(
    store: Store, project: Path
) -> None:
    prompt = _load(project).get("support")
    recorder = CallRecorder(store)
    for trace, used in (("t1", prompt.ref), ("t2", None)):
        recorder.record(
            CallRecord(
                trace_id=trace,
                route="default",
                stream=False,
                status="ok",
                tokens_in=3,
                tokens_out=4,
                latency_ms=1.0,
                prompt=used,
            )
        )
    assert await recorder.flush() == 2
    rows = await store.fetchall("SELECT trace_id, prompt FROM model_calls ORDER BY trace_id")
    assert [tuple(r) for r in rows] == [("t1", prompt.ref), ("t2", None)]
    report = await audit(store)
    assert report.ok and report.calls == 2, report.findings
    # a prompt changed, set on a call that had none, or cleared: each is caught
    for sql, trace in (
        ("UPDATE model_calls SET prompt = 'support@000000000000' WHERE trace_id = 't1'", "t1"),
        ("UPDATE model_calls SET prompt = 'support@000000000000' WHERE trace_id = 't2'", "t2"),
    ):
        await store.execute(sql)
        report = await audit(store)
        assert [f.message for f in report.findings] == [
            "the call record was changed (hash mismatch)"
        ]
        await store.execute(
            "UPDATE model_calls SET prompt = ? WHERE trace_id = ?",
            (prompt.ref if trace == "t1" else None, trace),
        )
    assert (await audit(store)).ok
    await store.execute("UPDATE model_calls SET prompt = NULL WHERE trace_id = 't1'")
    assert len((await audit(store)).findings) == 1


async def test_stored_versions_are_listed_oldest_first(store: Store, project: Path) -> None:
    first = _load(project).get("support")
    await record_version(store, first)
    (project / "prompts" / "support.md").write_text(first.source + "Be brief.\n")
    second = _load(project).get("support")
    await record_version(store, second)
    listed = await stored_versions(store, "support")
    assert [(v.version, v.file) for v in listed] == [
        (first.version, "prompts/support.md"),
        (second.version, "prompts/support.md"),
    ]
    assert listed[0].first_used_at <= listed[1].first_used_at
