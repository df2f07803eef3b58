"""Run bundles on SQLite and PostgreSQL: exported, verified from the bytes alone, and every edit
caught (or refused as unreadable with a clear error)."""

from __future__ import annotations

import random
import re
import time
from pathlib import Path

import orjson
import pytest

from elevenfactor.errors import RequestError, RunNotFound
from elevenfactor.governance import generate_keypair, local_admin
from elevenfactor.governance._ledger import merkle_root
from elevenfactor.governance._retention import apply_retention
from elevenfactor.runtime._bundle import export_bundle
from elevenfactor.runtime._bundle_verify import (
    MAX_BUNDLE_BYTES,
    merkle_proof,
    proof_root,
    verify_bundle,
    verify_bundle_file,
)
from elevenfactor.store import Store
from tests.support.principals import member
from tests.unit.test_retention import DAY, MARK, MONTH, populate


def _failed(report_or_error: object) -> bool:
    return isinstance(report_or_error, RequestError) or not report_or_error.ok  # type: ignore[attr-defined]


def _verify(data: bytes) -> object:
    try:
        return verify_bundle(data)
    except RequestError as exc:
        assert exc.code == "bundle_invalid" and exc.message
        return exc


def test_merkle_proofs_lead_every_leaf_to_the_root() -> None:
    for n in range(1, 12):
        leaves = [f"{i:064x}" for i in range(n)]
        root = merkle_root(leaves)
        for i, leaf in enumerate(leaves):
            assert proof_root(leaf, merkle_proof(leaves, i)) == root
        if n > 1:
            assert proof_root(f"{99:064x}", merkle_proof(leaves, 0)) != root


async def test_a_bundle_round_trips_and_names_each_check(store: Store) -> None:
    ids = await populate(store)
    data = await export_bundle(store, ids["pay"], member("ann"))
    report = verify_bundle(data)
    assert report.ok, report.checks
    names = {c.name for c in report.checks}
    assert {"form", "manifest", "chain", "payloads", "ledger", "approvals"} <= names
    doc = orjson.loads(data)
    assert doc["release"] is None and doc["signed_head"] is None
    assert doc["run"]["id"] == ids["pay"] and doc["approvals"][0]["decision_state"] == "present"
    assert all(e["proof"] is not None and e["entry"][7] is not None for e in doc["ledger"])


async def test_only_who_may_read_the_run_exports_it(store: Store) -> None:
    ids = await populate(store)
    with pytest.raises(RunNotFound):
        await export_bundle(store, ids["echo"], member("eve"))
    assert verify_bundle(await export_bundle(store, ids["echo"], local_admin("cli"))).ok
    with pytest.raises(RunNotFound):
        await export_bundle(
            store,
            ids["echo"],
            local_admin("cli").__class__(
                org_id="org_other", user_id="u", user_name="u", roles=frozenset({"admin"})
            ),
        )


async def test_erased_payloads_are_proven_by_their_ledger_entry(store: Store) -> None:
    ids = await populate(store)
    await apply_retention(store, MONTH, now=time.time() + 31 * DAY)
    data = await export_bundle(store, ids["pay"], member("ann"))
    assert MARK.encode() not in data
    doc = orjson.loads(data)
    states = {p["state"] for p in doc["payloads"].values()}
    assert states == {"erased"} and doc["approvals"][0]["decision_state"] == "erased"
    report = verify_bundle(data)
    assert report.ok, report.checks
    # an erased payload whose proof no longer matches its purge entry
    first = next(iter(doc["payloads"].values()))
    first["proof"] = [["L", "0" * 64], *first["proof"]]
    assert not verify_bundle(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)).ok


async def test_payloads_are_redacted_by_policy(store: Store) -> None:
    ids = await populate(store, "write to ann.lee@example.com please")
    data = await export_bundle(store, ids["echo"], member("ann"), redact="always")
    assert b"ann.lee@example.com" not in data and b"[REDACTED:email]" in data
    report = verify_bundle(data)
    assert report.ok, report.checks
    assert "redacted" in next(c.detail for c in report.checks if c.name == "payloads")
    plain = await export_bundle(store, ids["echo"], member("ann"))  # no guard ran: as stored
    assert b"ann.lee@example.com" in plain


async def test_a_signed_head_verifies_only_with_the_trusted_key(store: Store) -> None:
    ids = await populate(store)
    private, public = generate_keypair()
    data = await export_bundle(store, ids["echo"], member("ann"), signing_key=private)
    assert verify_bundle(data, public_key=public).ok
    other = generate_keypair()[1]
    report = verify_bundle(data, public_key=other)
    assert not report.ok and any(c.name == "signed head" and not c.ok for c in report.checks)


async def test_every_single_byte_edit_is_caught(store: Store) -> None:
    ids = await populate(store, "x")
    data = await export_bundle(store, ids["pay"], member("ann"))
    assert verify_bundle(data).ok
    rng = random.Random(12)
    positions = {rng.randrange(len(data)) for _ in range(200)}
    text = data.decode()
    for match in re.finditer(r'[{,]"([a-z_]+)":', text):
        positions.add(match.start(1))  # each field name's first byte
        positions.add(match.end())  # and its value's
    for pos in sorted(positions):
        edited = bytearray(data)
        edited[pos] ^= 0x01 if data[pos] != 0x00 else 0x02
        assert _failed(_verify(bytes(edited))), f"an edit at byte {pos} went unnoticed"


async def test_a_recomputed_manifest_does_not_hide_an_edit(store: Store) -> None:
    from elevenfactor.runtime._bundle_verify import manifest_of

    ids = await populate(store)
    doc = orjson.loads(await export_bundle(store, ids["echo"], member("ann")))
    doc["run"]["result_hash"] = "sha256:" + "0" * 64
    doc["manifest"] = manifest_of(doc)
    report = verify_bundle(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS))
    failed = {c.name for c in report.checks if not c.ok}
    assert "run vs ledger" in failed and "form" not in failed and "manifest" not in failed


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty"),
        (b"   \n", "empty"),
        (b'{"format": "elevenfactor.run-bun', "not JSON"),
        (b"PK\x03\x04\x14\x00\x00\x00", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"format": "something/1"}', "its format is"),
    ],
)
def test_malformed_bundles_get_clear_errors(content: bytes, message: str) -> None:
    with pytest.raises(RequestError, match=message) as err:
        verify_bundle(content)
    assert err.value.code == "bundle_invalid"


def test_a_bundle_with_the_right_format_but_no_body_fails_its_checks() -> None:
    report = verify_bundle(b'{"format":"elevenfactor.run-bundle/1"}')
    assert not report.ok and report.checks[0].name == "structure"


def test_huge_and_missing_files_are_refused_before_reading(tmp_path: Path) -> None:
    huge = tmp_path / "huge.json"
    with huge.open("wb") as f:
        f.truncate(MAX_BUNDLE_BYTES + 1)  # sparse: nothing is written
    with pytest.raises(RequestError, match="over the") as err:
        verify_bundle_file(huge)
    assert err.value.code == "bundle_invalid"
    with pytest.raises(RequestError, match="cannot read") as err:
        verify_bundle_file(tmp_path / "nope.json")
    assert err.value.code == "bundle_unreadable"
