"""Rate limits shared through the real Redis on 127.0.0.1:6379: three OS processes hammering one
limit never get more than it admits, tokens are reconciled, waiters of several processes are
served at the predicted times, and with Redis down each process enforces the limits itself."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from elevenfactor.config import Settings
from elevenfactor.errors import LimitExceeded
from elevenfactor.models import Limiter, LimitKey, open_limiter
from elevenfactor.models._limits_redis import RedisLimits
from tests.conftest import free_port

pytestmark = pytest.mark.integration

REDIS_URL = "redis://127.0.0.1:6379/0"
ROOT = Path(__file__).resolve().parents[2]


def _hammer(prefix: str, *, kind: str, value: int, tokens: int, seconds: float) -> list[float]:
    """Three processes x 10 tasks acquiring one limit for ``seconds``; the admissions' times."""
    start = time.time() + 1.5  # all three start together, once imported
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [
        sys.executable,
        "-m",
        "tests.support.limits_hammer",
        "--url",
        REDIS_URL,
        "--prefix",
        prefix,
        "--kind",
        kind,
        "--value",
        str(value),
        "--window",
        "1",
        "--tokens",
        str(tokens),
        "--start",
        str(start),
        "--seconds",
        str(seconds),
    ]
    procs = [
        subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(3)
    ]
    admitted: list[float] = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err.decode()
        result = json.loads(out)
        assert result["admitted"], "every process got some admissions"
        admitted += result["admitted"]
    return sorted(admitted)


def _assert_never_over(times: list[float], units: int, limit: int) -> None:
    """GCRA's guarantee, checked on Redis's clock: over any span of ``t`` seconds at most
    ``limit + limit * t`` units (window 1 s), and the limit was used, not starved."""
    n = len(times)
    for i in range(n):
        for j in range(i, n):
            taken = (j - i + 1) * units
            assert taken <= limit + limit * (times[j] - times[i]) + 1e-6, (i, j, taken)
    span = times[-1] - times[0]
    assert n * units >= limit + limit * span - 3 * units  # hammered: close to the bound


@pytest.mark.timeout(120)
async def test_three_processes_never_exceed_an_rpm_limit(prefix: str) -> None:
    times = await asyncio.to_thread(_hammer, prefix, kind="rpm", value=30, tokens=0, seconds=2.5)
    _assert_never_over(times, 1, 30)


@pytest.mark.timeout(120)
async def test_three_processes_never_exceed_a_tpm_limit(prefix: str) -> None:
    times = await asyncio.to_thread(
        _hammer, prefix, kind="tpm", value=3000, tokens=250, seconds=2.0
    )
    _assert_never_over(times, 250, 3000)


async def test_reconcile_refunds_and_adds_across_clients(prefix: str) -> None:
    one = Limiter(RedisLimits(REDIS_URL, prefix=prefix))
    two = Limiter(RedisLimits(REDIS_URL, prefix=prefix))  # another process, as far as Redis knows
    keys = [LimitKey("key:k", "tpm", 1000), LimitKey("key:k", "rpm", 100)]
    try:
        permit = await one.acquire(keys, 900, deadline=time.monotonic())
        with pytest.raises(LimitExceeded):
            await two.acquire(keys, 200, deadline=time.monotonic())
        await one.reconcile(permit, 100)  # 800 back
        second = await two.acquire(keys, 800, deadline=time.monotonic())
        await two.reconcile(second, 1200)  # 400 more than reserved
        with pytest.raises(LimitExceeded) as info:
            await one.acquire(keys, 100, deadline=time.monotonic())
        # 100 + 1200 + 100 against 1000 per 60 s: 400 must refill, 24 s
        assert info.value.retry_after == pytest.approx(24.0, abs=0.5)
        assert info.value.details == {"limit": "key:k", "kind": "tpm", "value": 1000}
        client = aioredis.Redis.from_url(REDIS_URL)
        try:
            ttl = await client.pttl(prefix + "key:k:tpm")
            # 1300 tokens are counted against 1000 per 60 s: the bucket is full again in 78 s,
            # and the key goes then
            assert 76_000 < ttl <= 79_000
        finally:
            await client.aclose()
    finally:
        await one.aclose()
        await two.aclose()


async def test_waiters_in_two_clients_are_served_at_the_predicted_times(prefix: str) -> None:
    a = Limiter(RedisLimits(REDIS_URL, prefix=prefix))
    b = Limiter(RedisLimits(REDIS_URL, prefix=prefix))
    key = LimitKey("model:m", "rpm", 4, window=0.8)  # a burst of 4, then one per 0.2 s
    try:
        start = time.monotonic()
        permits = await asyncio.gather(
            *(lim.acquire([key], 0, deadline=start + 5) for lim in (a, b) for _ in range(5))
        )
        times = sorted(p.at for p in permits)
        first = times[0]
        for i in range(4, 10):  # on Redis's clock: the n-th beyond the burst at n * 0.2 s
            assert times[i] - first >= (i - 3) * 0.2 - 0.01
        assert time.monotonic() - start < 1.2 + 1.0
    finally:
        await a.aclose()
        await b.aclose()


async def test_redis_down_each_process_enforces_the_limits(
    caplog: pytest.LogCaptureFixture,
) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    limiter = open_limiter(Settings(redis_url=dead), prefix="test:limits:down:")
    backend = limiter.backend
    assert isinstance(backend, RedisLimits)
    key = LimitKey("user:u", "rpm", 2)
    caplog.set_level(logging.WARNING, logger="elevenfactor.limits")
    try:
        for _ in range(2):
            permit = await limiter.acquire([key], 0, deadline=time.monotonic())
            assert permit.backend is backend.fallback
        with pytest.raises(LimitExceeded) as info:
            await limiter.acquire([key], 0, deadline=time.monotonic())
        assert info.value.retry_after == pytest.approx(30.0, abs=0.5)
        assert backend.degraded
        warnings = [r for r in caplog.records if r.name == "elevenfactor.limits"]
        assert len(warnings) == 1  # logged once, not for every call
        assert "each process enforces the limits on its own" in warnings[0].getMessage()
    finally:
        await limiter.aclose()


class _Proxy:
    """A TCP forwarder to the real Redis that can be cut and restored, on a fixed port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.transport.abort()
        self.writers.clear()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", 6379)
        self.writers += [writer, up_writer]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except OSError:
                pass
            finally:
                dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


async def test_limits_are_shared_again_when_redis_is_back(
    prefix: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import elevenfactor.models._limits_redis as module

    monkeypatch.setattr(module, "_RETRY_AFTER_FAILURE", 0.05)
    caplog.set_level(logging.WARNING, logger="elevenfactor.limits")
    proxy = _Proxy()
    await proxy.start()
    backend = RedisLimits(f"redis://127.0.0.1:{proxy.port}/0", prefix=prefix)
    limiter = Limiter(backend)
    key = LimitKey("user:u", "rpm", 1000)
    try:
        await limiter.acquire([key], 0, deadline=time.monotonic())
        assert not backend.degraded
        await proxy.stop()
        permit = await limiter.acquire([key], 0, deadline=time.monotonic())
        assert backend.degraded and permit.backend is backend.fallback
        await proxy.start()
        deadline = time.monotonic() + 5
        while backend.degraded:  # one call a retry interval probes Redis
            assert time.monotonic() < deadline, "Redis never came back"
            await limiter.acquire([key], 0, deadline=time.monotonic())
            await asyncio.sleep(0.01)
        permit = await limiter.acquire([key], 0, deadline=time.monotonic())
        assert permit.backend is backend
        events = [getattr(r, "event", None) for r in caplog.records]
        assert events == ["limits_redis_down", "limits_redis_back"]
    finally:
        await limiter.aclose()
        await proxy.stop()


async def test_open_limiter_without_redis_is_in_process() -> None:
    limiter = open_limiter(Settings(redis_url=None))
    assert not isinstance(limiter.backend, RedisLimits)
    await limiter.aclose()
