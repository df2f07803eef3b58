"""A stream's deadline runs one timer for many chunks: each gap is bounded, the whole is not."""

from __future__ import annotations

import asyncio

import pytest

from elevenfactor.errors import ModelTimeout
from elevenfactor.models import Call, StreamChunk
from tests.unit.test_wrappers import FINISH, MESSAGES, SETTINGS, StreamScript, dep, drain, text


async def test_many_short_gaps_outlast_the_gap_timeout() -> None:
    inner = StreamScript([text("a"), *[x for i in range(8) for x in (0.05, text(str(i)))], FINISH])
    call = Call()
    assert await drain(dep(inner, timeout=0.15), call) == "a01234567"
    assert call.path == ["streamer:ok"]


async def test_a_slow_consumer_is_not_the_upstream_timing_out() -> None:
    inner = StreamScript([text("a"), text("b"), FINISH])
    call, got = Call(), list[StreamChunk]()
    async for chunk in dep(inner, timeout=0.1).request_stream(MESSAGES, SETTINGS, call):
        got.append(chunk)
        await asyncio.sleep(0.25)  # the client is slow; the upstream is not
    assert [c.text for c in got] == ["a", "b", ""]
    assert call.path == ["streamer:ok"]


async def test_a_long_gap_after_short_ones_times_out() -> None:
    inner = StreamScript([text("a"), 0.05, text("b"), 0.05, text("c"), 0.4, text("d"), FINISH])
    call, got = Call(), list[StreamChunk]()
    with pytest.raises(ModelTimeout, match=r"no chunk within 0\.15s"):
        await drain(dep(inner, timeout=0.15), call, got)
    assert [c.text for c in got] == ["a", "b", "c"]
    assert call.path == ["streamer:timeout"]
