"""The semantic cache seen from clients of the real gateway (real keys, outside dev mode, on
SQLite and PostgreSQL, the real local embedder), through the official ``openai`` client: the
cache headers, a replayed stream, another user's paraphrase, the call records, and an admin
forgetting a user."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from elevenfactor.config import Settings, parse_project
from elevenfactor.governance import create_key, create_user, local_admin
from elevenfactor.store import Store, migrate, open_store
from tests.support.server import running_gateway

pytestmark = pytest.mark.integration

PROJECT = parse_project(
    {
        "providers": {"t": {"type": "test"}},
        "models": {
            "echo": {
                "provider": "t",
                "model": "echo-1",
                "price": {"input_per_mtok": 1000, "output_per_mtok": 2000},
            }
        },
        "routes": {
            "default": {
                "chain": ["echo"],
                "cache": {"ttl": 600, "semantic": {"threshold": 0.95, "timeout": 30}},
            }
        },
    }
)
RESET = "How do I reset my password?"
RESET_2 = "How can I reset my password?"  # cosine 0.99 with RESET
RESET_3 = "How could I reset my password?"  # 0.98
SYSTEM = {"role": "system", "content": "You are the help desk of Example Corp."}


async def _seed(url: str) -> dict[str, str]:
    db = await open_store(url)
    try:
        await migrate(db)
        admin = local_admin("cli")
        secrets = {}
        for name, roles in {"alice": ("member",), "bob": ("member",), "boss": ("admin",)}.items():
            await create_user(db, admin, name, roles=roles)
            _, secrets[name] = await create_key(db, admin, f"key-{name}", user=name)
        return secrets
    finally:
        await db.close()


async def _records(url: str, n: int) -> list[tuple[Any, ...]]:
    db: Store = await open_store(url)
    try:
        deadline = time.monotonic() + 10
        while True:
            rows = await db.fetchall(
                "SELECT u.name, c.cache_hit, c.failover_path, c.stream, c.cost, c.saved"
                " FROM model_calls c JOIN users u ON u.id = c.user_id ORDER BY c.created_at"
            )
            if len(rows) >= n:
                return rows
            assert time.monotonic() < deadline, f"{len(rows)} of {n} call records written"
            await asyncio.sleep(0.05)
    finally:
        await db.close()


def test_clients_see_semantic_hits_and_forgetting_a_user_removes_theirs(
    store_url: str, tmp_path: Path
) -> None:
    secrets = asyncio.run(_seed(store_url))
    settings = Settings(database_url=store_url, data_dir=tmp_path, dev=False)
    with running_gateway(settings, PROJECT) as (base, _):

        def client(who: str) -> openai.OpenAI:
            return openai.OpenAI(base_url=base + "/v1", api_key=secrets[who], max_retries=0)

        def chat(who: str, text: str) -> tuple[str, httpx.Headers]:
            raw = client(who).chat.completions.with_raw_response.create(
                model="default",
                messages=[SYSTEM, {"role": "user", "content": text}],  # type: ignore[list-item]
                temperature=0,
            )
            return raw.parse().choices[0].message.content or "", raw.headers

        text, headers = chat("alice", RESET)
        assert text == f"echo: {RESET}" and "x-elevenfactor-cache" not in headers
        text, headers = chat("alice", RESET_2)  # the answer to alice's first question
        assert text == f"echo: {RESET}" and headers["x-elevenfactor-cache"] == "semantic"
        similarity = float(headers["x-elevenfactor-cache-similarity"])
        assert 0.95 <= similarity <= 1.0
        text, headers = chat("alice", RESET)
        assert headers["x-elevenfactor-cache"] == "hit"  # the exact cache answers first

        raw = client("alice").chat.completions.with_raw_response.create(
            model="default",
            messages=[SYSTEM, {"role": "user", "content": RESET_2}],  # type: ignore[list-item]
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
        assert raw.headers["x-elevenfactor-cache"] == "semantic"
        chunks = list(raw.parse())
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == (
            f"echo: {RESET}"
        )
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0

        text, headers = chat("bob", RESET_3)  # user scope: alice's answers are not bob's
        assert text == f"echo: {RESET_3}" and "x-elevenfactor-cache" not in headers

        rows = asyncio.run(_records(store_url, 5))
        paths = [(r[0], r[1], json.loads(r[2]), r[3]) for r in rows]
        assert paths == [
            ("alice", 0, ["echo:ok"], 0),
            ("alice", 1, [f"echo:semantic_hit@{similarity:.4f}"], 0),
            ("alice", 1, ["echo:cache_hit"], 0),
            ("alice", 1, [f"echo:semantic_hit@{similarity:.4f}"], 1),
            ("bob", 0, ["echo:ok"], 0),
        ]
        # a hit is free and saves what the model would have cost
        assert rows[0][4] > 0 and rows[1][4] == 0 and rows[1][5] == pytest.approx(rows[0][4])

        with httpx.Client(base_url=base, timeout=60) as http:
            done = http.post(
                "/v1/admin/memory/forget",
                json={"user": "alice"},
                headers={"Authorization": f"Bearer {secrets['boss']}"},
            )
        assert done.status_code == 200, done.text
        assert done.json()["cache_entries"] == 1  # her question, embedded, and its answer
        text, headers = chat("bob", RESET_2)  # bob's entry stays
        assert text == f"echo: {RESET_3}" and headers["x-elevenfactor-cache"] == "semantic"
        text, headers = chat("alice", RESET_2)  # alice's is gone, from this process's memory too
        assert text == f"echo: {RESET_2}" and "x-elevenfactor-cache" not in headers
