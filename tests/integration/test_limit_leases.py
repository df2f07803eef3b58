"""Rate-limit leases on the real Redis (``models._limit_leases``): far from a limit, calls are
admitted from capacity taken ahead (no round trip); several processes' leases never let a limit
admit more than it allows; what is left of a lease goes back; busy and small limits are never
leased from."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis.asyncio as aioredis

from elevenfactor.errors import LimitExceeded
from elevenfactor.models import Limiter, LimitKey
from elevenfactor.models._limit_leases import LEASE_CALLS
from elevenfactor.models._limits_redis import RedisLimits

pytestmark = pytest.mark.integration

REDIS_URL = "redis://127.0.0.1:6379/0"


async def _tat(prefix: str, key: LimitKey) -> int:
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        raw = await client.get(prefix + key.id)
    finally:
        await client.aclose()
    return int(raw or 0)


async def _settled(backend: RedisLimits) -> None:
    while backend._background:
        await asyncio.gather(*list(backend._background), return_exceptions=True)


async def test_calls_far_from_the_limit_are_admitted_from_a_lease(prefix: str) -> None:
    backend = RedisLimits(REDIS_URL, prefix=prefix)
    key = LimitKey("user:u", "rpm", 100_000)
    try:
        assert (await backend.try_acquire([key], [1])).ok  # checked in Redis; a lease taken
        await _settled(backend)
        assert backend.leases.held
        tat = await _tat(prefix, key)
        for _ in range(LEASE_CALLS):
            assert (await backend.try_acquire([key], [1])).ok
        assert await _tat(prefix, key) == tat  # from the lease: Redis untouched
        assert (await backend.try_acquire([key], [1])).ok  # used up: to Redis, a new lease
    finally:
        await backend.aclose()


async def test_leases_of_several_processes_never_admit_more_than_the_limit(prefix: str) -> None:
    key = LimitKey("team:t", "rpm", 640, window=600.0)  # no refill worth counting in the test
    backends = [RedisLimits(REDIS_URL, prefix=prefix) for _ in range(3)]
    limiters = [Limiter(b) for b in backends]
    admitted = 0

    async def one(i: int) -> None:
        nonlocal admitted
        try:
            await limiters[i % 3].acquire([key], 0, deadline=time.monotonic())
        except LimitExceeded:
            return
        admitted += 1

    try:
        for wave in range(20):
            await asyncio.gather(*(one(wave * 100 + i) for i in range(100)))
            for backend in backends:
                await _settled(backend)
        assert 0 < admitted <= 640 + 1  # a limit of N admits at most N at once (+ refill)
        left = [sum(lease.left) for b in backends for lease in b.leases.held.values()]
        assert admitted + sum(left) >= 600  # what was taken was admitted or is still leased
    finally:
        for limiter in limiters:
            await limiter.aclose()


async def test_what_is_left_of_a_lease_goes_back(prefix: str) -> None:
    key = LimitKey("user:u", "tpm", 1_000_000, window=3600.0)  # slow refill: see below
    backend = RedisLimits(REDIS_URL, prefix=prefix)
    await backend.try_acquire([key], [100])
    await _settled(backend)
    assert backend.leases.held
    with_lease = await _tat(prefix, key)
    await backend.aclose()  # gives the unused 3,200 tokens back
    after = await _tat(prefix, key)
    per_token_us = 3_600_000_000 / 1_000_000
    assert with_lease - after == pytest.approx(LEASE_CALLS * 100 * per_token_us, abs=2)


async def test_busy_and_small_limits_are_not_leased_from(prefix: str) -> None:
    busy = LimitKey("user:busy", "rpm", 1000)
    small = LimitKey("user:small", "rpm", 20)
    backend = RedisLimits(REDIS_URL, prefix=prefix)
    try:
        assert (await backend.try_acquire([busy], [600])).ok  # more than half of it used
        await backend.try_acquire([busy], [1])
        await _settled(backend)
        assert not backend.leases.held  # refused: the limit would keep less than half free
        await backend.try_acquire([small], [1])
        await _settled(backend)
        assert not backend.leases.held  # 20/min: a lease could not cover two calls
    finally:
        await backend.aclose()


async def test_token_corrections_stay_in_the_lease_until_it_goes_back(prefix: str) -> None:
    # A slow refill (an hour's window) keeps the lease's units ahead of the clock for seconds:
    # on a loaded machine the key must not expire before the lease goes back.
    key = LimitKey("user:u", "tpm", 1_000_000, window=3600.0)
    backend = RedisLimits(REDIS_URL, prefix=prefix)
    limiter = Limiter(backend)
    await limiter.acquire([key], 100, deadline=time.monotonic())
    await _settled(backend)
    lease = next(iter(backend.leases.held.values()))
    permit = await limiter.acquire([key], 100, deadline=time.monotonic())  # from the lease
    tat = await _tat(prefix, key)
    await limiter.reconcile(permit, 40)  # 60 tokens refunded
    assert await _tat(prefix, key) == tat  # no round trip
    assert lease.left == [LEASE_CALLS * 100 - 100 + 60]
    await limiter.aclose()  # the lease goes back with the refund
    per_token_us = 3_600_000_000 / 1_000_000
    expected = tat - (LEASE_CALLS * 100 - 40) * per_token_us
    assert await _tat(prefix, key) == pytest.approx(expected, abs=2)
