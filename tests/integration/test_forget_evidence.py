"""Forgetting a user erases their run evidence too (SQLite and PostgreSQL): after a forget
through the real gateway, a marker the user sent in a chat request, a run input and a step
output is in no column of any table, another user's content stays, and ``audit`` verifies."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import openai

from elevenfactor.config import Settings, parse_project
from elevenfactor.governance import create_key, create_user, local_admin, principal_for_user
from elevenfactor.memory import forget_user
from elevenfactor.runtime import Worker, audit, submit_run
from elevenfactor.store import Store, migrate, open_store
from tests.support.server import running_gateway
from tests.unit.test_retention import programs, scan_for

PROJECT = parse_project(
    {
        "providers": {"t": {"type": "test"}},
        "models": {"echo": {"provider": "t", "model": "echo-1"}},
        "routes": {"default": {"chain": ["echo"]}},
    }
)
ADA, BOB = "ada-forget-marker-91e2", "bob-keeps-marker-5d70"


async def _seed(url: str) -> tuple[dict[str, str], list[str]]:
    """Ada and Bob (members, each with a finished run carrying their marker) and the boss
    (an admin): key secrets by name, and the run ids."""
    db = await open_store(url)
    try:
        await migrate(db)
        admin = local_admin("cli")
        secrets, runs = {}, []
        for name, roles in {"ada": ("member",), "bob": ("member",), "boss": ("admin",)}.items():
            await create_user(db, admin, name, roles=roles)
            _, secrets[name] = await create_key(db, admin, f"key-{name}", user=name)
        for name, text in (("ada", ADA), ("bob", BOB)):
            owner = await principal_for_user(db, name)
            runs.append(await submit_run(db, "echo", text, owner=owner))
        await Worker(db, programs()).run_until_idle()
        return secrets, runs
    finally:
        await db.close()


async def _calls_recorded(url: str, n: int) -> None:
    db = await open_store(url)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            row = await db.fetchone(
                "SELECT COUNT(*) FROM model_calls WHERE request_hash IS NOT NULL"
            )
            if row is not None and int(row[0]) >= n:
                return
            await asyncio.sleep(0.05)
        raise AssertionError("the gateway did not record its calls")
    finally:
        await db.close()


async def _after(url: str) -> tuple[list[str], list[str], bool, list[str]]:
    db: Store = await open_store(url)
    try:
        report = await audit(db)
        return (
            await scan_for(db, ADA),
            await scan_for(db, BOB),
            report.ok,
            [f.message for f in report.findings],
        )
    finally:
        await db.close()


def test_a_forgotten_users_run_evidence_is_in_no_table(store_url: str, tmp_path: Path) -> None:
    secrets, _runs = asyncio.run(_seed(store_url))
    settings = Settings(database_url=store_url, data_dir=tmp_path, dev=False)
    with running_gateway(settings, PROJECT) as (base, _):
        for who, text in (("ada", ADA), ("bob", BOB)):
            client = openai.OpenAI(base_url=base + "/v1", api_key=secrets[who], max_retries=0)
            answer = client.chat.completions.create(
                model="default", messages=[{"role": "user", "content": f"hello {text}"}]
            )
            assert text in (answer.choices[0].message.content or "")
        asyncio.run(_calls_recorded(store_url, 2))
        with httpx.Client(base_url=base, timeout=60) as http:
            done = http.post(
                "/v1/admin/memory/forget",
                json={"user": "ada"},
                headers={"Authorization": f"Bearer {secrets['boss']}"},
            )
    assert done.status_code == 200, done.text
    counts = done.json()
    assert counts["runs"] == 1 and counts["run_payloads"] >= 4, counts
    assert counts["call_records"] == 1 and counts["call_payloads"] == 2, counts
    assert counts["active_runs"] == 0
    ada, bob, ok, findings = asyncio.run(_after(store_url))
    assert ada == [], f"the forgotten user's content is still in {ada}"
    assert "blobs.content" in bob and "model_calls" not in " ".join(bob)
    assert ok, findings


async def test_forget_twice_erases_nothing_more_and_still_verifies(store: Store) -> None:
    admin = local_admin("cli")
    await create_user(store, admin, "ada", roles=("member",))
    owner = await principal_for_user(store, "ada")
    await submit_run(store, "echo", ADA, owner=owner)
    await Worker(store, programs()).run_until_idle()
    first = await forget_user(store, admin, owner.user_id)
    assert first.runs == 1 and first.run_payloads >= 4
    row = await store.fetchone(
        "SELECT body FROM ledger WHERE kind = 'admin.memory.forget_user' ORDER BY seq DESC"
    )
    assert row is not None and '"erasure"' in row[0] and ADA not in row[0]
    second = await forget_user(store, admin, owner.user_id)
    assert second.runs == 0 and second.run_payloads == 0
    assert await scan_for(store, ADA) == []
    report = await audit(store)
    assert report.ok, report.findings
    assert report.erased == first.run_payloads
