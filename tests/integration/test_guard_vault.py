"""The guard vault on SQLite and PostgreSQL: a run's placeholder map is encrypted at rest,
readable only by its organisation and run, expires a TTL after the run ends and is purged;
a bad key is refused at start-up without echoing it."""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from elevenfactor.config import ProjectConfig, Settings
from elevenfactor.errors import ConfigError
from elevenfactor.governance._guard_redact import PlaceholderMap, restore
from elevenfactor.governance._guard_vault import (
    GuardVault,
    dump_map,
    load_map,
    parse_vault_key,
    purge_guard_vault,
)
from elevenfactor.runtime import Housekeeper, build_runtime, submit_run
from elevenfactor.store import Store

pytestmark = pytest.mark.integration

KEY = bytes(range(32))
EMAIL, CARD = "grace.hopper@example.com", "4111 1111 1111 1111"
PROPERTY = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def issued() -> PlaceholderMap:
    mapping = PlaceholderMap()
    mapping.placeholder_for("EMAIL", EMAIL)
    mapping.placeholder_for("CARD", CARD, avoid="[CARD_1] appears in the text already")
    return mapping


async def all_bytes(store: Store) -> bytes:
    """Every value of every table, as bytes."""
    if store.dialect == "sqlite":
        rows = await store.fetchall("SELECT name FROM sqlite_master WHERE type = 'table'")
    else:
        rows = await store.fetchall(
            "SELECT table_name FROM information_schema.tables"
            " WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'"
        )
    out = bytearray()
    for (table,) in rows:
        for row in await store.fetchall(f"SELECT * FROM {table}"):
            for value in row:
                out += (
                    bytes(value) if isinstance(value, (bytes, memoryview)) else str(value).encode()
                )
    return bytes(out)


async def test_a_map_is_encrypted_at_rest_and_comes_back_whole(store: Store) -> None:
    vault = GuardVault(KEY)
    await submit_run(store, "helper", "hello", run_id="r1")
    await vault.save(store, "org_a", "r1", issued())
    stored = await all_bytes(store)
    assert EMAIL.encode() not in stored and CARD.encode() not in stored
    assert b"[CARD_2]" not in stored  # not even the placeholders are in clear
    back = await vault.load(store, "org_a", "r1")
    assert back.placeholders == ("[CARD_2]", "[EMAIL_1]")
    assert restore("to [EMAIL_1], card [CARD_2]", back) == f"to {EMAIL}, card {CARD}"
    assert back.placeholder_for("CARD", "5500 0000 0000 0004") == "[CARD_3]"  # numbering goes on
    assert EMAIL not in repr(back) and "KEY" not in repr(vault)


async def test_another_org_or_run_reads_nothing(store: Store) -> None:
    vault = GuardVault(KEY)
    await vault.save(store, "org_a", "r1", issued())
    assert len(await vault.load(store, "org_b", "r1")) == 0  # the same run id, another org
    assert len(await vault.load(store, "org_a", "r2")) == 0
    await vault.save(store, "org_a", "r2", PlaceholderMap())
    await store.execute(  # a row copied onto another run does not decrypt there
        "UPDATE guard_vault SET ciphertext = (SELECT ciphertext FROM guard_vault WHERE run_id ="
        " 'r1'), nonce = (SELECT nonce FROM guard_vault WHERE run_id = 'r1') WHERE run_id = 'r2'"
    )
    with pytest.raises(ConfigError, match="cannot be decrypted"):
        await vault.load(store, "org_a", "r2")
    with pytest.raises(ConfigError, match="cannot be decrypted"):
        await GuardVault(bytes(32)).load(store, "org_a", "r1")  # another key


async def test_entries_expire_after_the_run_and_are_purged(store: Store) -> None:
    vault = GuardVault(KEY, ttl=60)
    now = time.time()
    for run_id, status, updated in (
        ("ended", "succeeded", now),
        ("failed_long_ago", "failed", now - 120),
        ("failed_now", "failed", now),
        ("waiting", "waiting", now - 10_000),
    ):
        await submit_run(store, "helper", "hi", run_id=run_id)
        await store.execute(
            "UPDATE runs SET status = ?, updated_at = ? WHERE id = ?", (status, updated, run_id)
        )
        await vault.save(store, "org_a", run_id, issued())
    await vault.save(store, "org_a", "deleted_run", issued())
    await vault.finish(store, "org_a", "ended", ended_at=now)
    assert len(await vault.load(store, "org_a", "ended", now=now + 59)) == 2
    assert len(await vault.load(store, "org_a", "ended", now=now + 61)) == 0  # expired

    assert await purge_guard_vault(store, now + 30) == 2  # failed long ago; no run any more
    done = await Housekeeper(store, 0).tick(now + 61)
    assert done["guard_vault"] == 2  # the ended run's, and the failed one's TTL after its end
    left = await store.fetchall("SELECT run_id FROM guard_vault")
    assert [r[0] for r in left] == ["waiting"]  # a run that still lives keeps its map


async def test_keys_are_checked_without_being_echoed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    good = base64.b64encode(KEY).decode()
    assert parse_vault_key(good) == KEY and parse_vault_key(None) is None
    assert parse_vault_key("  ") is None
    for bad in ("not base64!", base64.b64encode(b"short").decode()):
        with pytest.raises(ConfigError) as refused:
            parse_vault_key(bad)
        assert "ELEVENFACTOR_GUARD_VAULT_KEY" in str(refused.value) and bad not in str(
            refused.value
        )
    (tmp_path / "elevenfactor.yaml").write_text("{}\n")
    monkeypatch.setenv("ELEVENFACTOR_CONFIG_FILE", str(tmp_path / "elevenfactor.yaml"))
    monkeypatch.setenv("ELEVENFACTOR_GUARD_VAULT_KEY", good)
    monkeypatch.setenv("ELEVENFACTOR_GUARD_VAULT_TTL", "90")
    env = Settings()
    assert env.masked()["guard_vault_key"] == "***"
    runtime = build_runtime(env, ProjectConfig())
    await runtime.aclose()
    assert runtime.deps is not None and runtime.deps.guard_vault is not None
    assert runtime.deps.guard_vault.ttl == 90
    monkeypatch.setenv("ELEVENFACTOR_GUARD_VAULT_KEY", "c2hvcnQ=")
    with pytest.raises(ConfigError, match="ELEVENFACTOR_GUARD_VAULT_KEY"):
        build_runtime(Settings(), ProjectConfig())


LABELS = st.sampled_from(["EMAIL", "CARD", "PHONE", "SECRET", "PII7"])
VALUES = st.text(min_size=1, max_size=12)


@PROPERTY
@given(st.lists(st.tuples(LABELS, VALUES, st.integers(0, 3)), max_size=12))
@example([("EMAIL", "a@b.c", 2), ("EMAIL", "d@e.f", 0), ("EMAIL", "a@b.c", 1)])
@example([("CARD", "[CARD_1]", 1)])  # a value that looks like a placeholder
def test_a_dumped_map_loads_identical(issues: list[tuple[str, str, int]]) -> None:
    """Any map (numbers skipped where the text held them) loads with the same placeholders
    and values, and the next placeholder of each label is the same."""
    mapping = PlaceholderMap()
    for label, value, skipped in issues:
        n = sum(1 for p in mapping.placeholders if p.startswith(f"[{label}_"))
        avoid = "".join(f"[{label}_{i}]" for i in range(n + 1, n + 1 + skipped))
        mapping.placeholder_for(label, value, avoid)
    back = load_map(dump_map(mapping))
    pairs: Any = {p: mapping.value_of(p) for p in mapping.placeholders}
    assert {p: back.value_of(p) for p in back.placeholders} == pairs
    for label in ("EMAIL", "CARD", "PHONE", "SECRET", "PII7"):
        assert back.placeholder_for(label, "new!") == mapping.placeholder_for(label, "new!")
