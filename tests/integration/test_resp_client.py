"""The fast Lua-script client against the real Redis: scripts load themselves on NOSCRIPT,
pipelined calls are answered in order, error replies and dead or silent servers raise
redis-py's own exceptions, and a dropped connection is replaced on the next call. On asyncio's
loop and on uvloop (which ``serve`` runs)."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import Iterator

import pytest
import redis
import uvloop
from redis.exceptions import ConnectionError, ResponseError, TimeoutError

from elevenfactor.store import script_client

pytestmark = pytest.mark.integration
URL = "redis://127.0.0.1:6379/0"


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Iterator[object]:
    def runner(coro: object) -> object:
        if request.param == "uvloop":
            return uvloop.run(coro)  # type: ignore[arg-type]
        return asyncio.run(coro)  # type: ignore[arg-type]

    yield runner


@pytest.fixture
def key() -> Iterator[str]:
    name = f"ef-test-resp-{uuid.uuid4().hex[:8]}"
    yield name
    redis.Redis.from_url(URL).delete(name)


def test_scripts_run_pipelined_and_in_order(run: object, key: str) -> None:
    async def main() -> list[object]:
        client = script_client(URL, decode=True)
        assert client is not None
        # A script Redis has never seen (a fresh comment): the first call meets NOSCRIPT.
        incr = client.register_script(
            f"-- {uuid.uuid4().hex}\nreturn {{redis.call('INCR', KEYS[1]), ARGV[1]}}"
        )
        try:
            assert await incr([key], ["first"]) == [1, "first"]  # loaded on NOSCRIPT
            return list(await asyncio.gather(*(incr([key], [str(i)]) for i in range(200))))
        finally:
            await client.aclose()

    replies = run(main())  # type: ignore[operator]
    assert replies == [[i + 2, str(i)] for i in range(200)]  # executed in the order sent


def test_errors_are_redis_py_exceptions(run: object, key: str) -> None:
    async def main() -> None:
        client = script_client(URL)
        assert client is not None
        broken = client.register_script("return redis.call('NOSUCHCOMMAND')")
        with pytest.raises(ResponseError):
            await broken([key])
        ok = client.register_script("return 7")
        assert await ok() == 7  # the connection survives an error reply
        await client.aclose()

        dead = script_client("redis://127.0.0.1:1/0", timeout=0.5)
        assert dead is not None
        with pytest.raises(ConnectionError):
            await dead.register_script("return 1")()

    run(main())  # type: ignore[operator]


def test_a_silent_server_times_out_and_the_next_call_reconnects(run: object) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]

    async def main() -> None:
        client = script_client(f"redis://127.0.0.1:{port}/0", timeout=0.3)
        assert client is not None
        script = client.register_script("return 1")
        with pytest.raises(TimeoutError):
            await script()
        with pytest.raises(TimeoutError):  # a new connection, still silent: fails again
            await script()
        await client.aclose()

    try:
        run(main())  # type: ignore[operator]
    finally:
        listener.close()


def test_other_url_schemes_are_left_to_redis_py() -> None:
    assert script_client("rediss://127.0.0.1:6380/0") is None
    assert script_client("unix:///tmp/redis.sock") is None


def test_clients_of_one_url_share_a_connection(run: object) -> None:
    async def main() -> tuple[object, object]:
        a, b = script_client(URL), script_client(URL, decode=True)
        assert a is not None and b is not None
        try:
            return await a.execute("CLIENT", "ID"), await b.execute("CLIENT", "ID")
        finally:
            await a.aclose()
            await b.aclose()

    first, second = run(main())  # type: ignore[operator]
    assert first == second  # one connection: a request's scripts travel together
