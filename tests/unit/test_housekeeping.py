"""The housekeeper on SQLite and PostgreSQL: expired memories and cached answers are deleted
physically, live ones stay, a failing job neither stops the others nor the loop."""

from __future__ import annotations

import asyncio
import time

from elevenfactor.memory import MemoryActor, Scope, list_memories, remember
from elevenfactor.models import StoreCache
from elevenfactor.runtime import Housekeeper
from elevenfactor.store import Store
from tests.support.principals import member
from tests.unit.test_memory_doubles import WordHashEmbedderDouble

ALICE = MemoryActor(member("alice"))


async def _rows(store: Store, table: str) -> int:
    rows = await store.fetchall(f"SELECT COUNT(*) FROM {table}", ())
    return int(rows[0][0])


async def test_tick_deletes_what_expired_and_keeps_the_rest(store: Store) -> None:
    emb = WordHashEmbedderDouble()
    me = Scope.user(ALICE.principal.user_id)
    now = time.time()
    await remember(store, emb, ALICE, me, "parking spot 42 today", ttl=60, now=now - 120)
    await remember(store, emb, ALICE, me, "Alice drinks green tea", now=now)
    cache = StoreCache(store)
    await cache.put("old", b'{"x": 1}', 1, "m")
    await cache.put("new", b'{"x": 2}', 3600, "m")
    await store.execute("UPDATE response_cache SET expires_at = ? WHERE key = 'old'", (now - 1,))

    done = await Housekeeper(store, 0).tick(now)

    assert done == {
        "memories": 1,
        "response_cache": 1,
        "semantic_cache": 0,
        "guard_vault": 0,
        "ui_sessions": 0,
        "cost_rollup": 0,
    }
    left = await list_memories(store, ALICE, [me], include_inactive=True)
    assert [m.text for m in left] == ["Alice drinks green tea"]
    assert await cache.get("new") is not None
    assert await _rows(store, "response_cache") == 1
    assert await Housekeeper(store, 0).tick(now) == {
        "memories": 0,
        "response_cache": 0,
        "semantic_cache": 0,
        "guard_vault": 0,
        "ui_sessions": 0,
        "cost_rollup": 0,
    }


async def test_a_failing_job_is_logged_and_the_others_still_run(store: Store) -> None:
    calls: list[str] = []

    async def broken(db: Store, now: float) -> int:
        calls.append("broken")
        raise RuntimeError("boom")

    async def fine(db: Store, now: float) -> int:
        calls.append("fine")
        return 3

    keeper = Housekeeper(store, 0.01, {"broken": broken, "fine": fine})
    assert await keeper.tick() == {"fine": 3}
    keeper.start()
    await asyncio.sleep(0.1)
    await keeper.aclose()
    assert calls.count("fine") >= 3 and calls.count("broken") == calls.count("fine")


async def test_interval_zero_never_starts(store: Store) -> None:
    keeper = Housekeeper(store, 0)
    keeper.start()
    assert keeper._task is None
    await keeper.aclose()
