"""``Admission``: slots, the express lane, the bounded queue, deadlines and Retry-After."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from elevenfactor.errors import ModelBusy, ModelOverloaded
from elevenfactor.models._admission import Admission


async def test_free_slots_are_taken_at_once_and_express_is_kept_for_short() -> None:
    adm = Admission(1, 1, max_queue=4)
    long = await adm.acquire(short=False, within=1, who="m")
    assert not long.express
    short = await adm.acquire(short=True, within=1, who="m")
    assert short.express
    with pytest.raises(ModelOverloaded):  # a second long request may not take the express slot
        await adm.acquire(short=False, within=0.01, who="m")
    adm.release(short)
    again = await adm.acquire(short=True, within=0.01, who="m")
    assert again is short


async def test_a_short_request_prefers_the_express_slot() -> None:
    adm = Admission(1, 1, max_queue=4)
    slot = await adm.acquire(short=True, within=1, who="m")
    assert slot.express


async def test_waiters_are_served_in_order_released_from_another_thread() -> None:
    adm = Admission(1, 0, max_queue=4)
    held = await adm.acquire(short=False, within=1, who="m")
    first = asyncio.create_task(adm.acquire(short=True, within=5, who="m"))
    await asyncio.sleep(0)
    second = asyncio.create_task(adm.acquire(short=True, within=5, who="m"))
    await asyncio.sleep(0)
    assert adm.waiting == 2
    threading.Thread(target=adm.release, args=(held,)).start()
    got = await first
    assert got is held and not second.done()
    adm.release(got)
    assert await second is held


async def test_a_full_queue_is_refused_at_once_with_retry_after() -> None:
    adm = Admission(1, 0, max_queue=1, prior_service=4.0)
    await adm.acquire(short=True, within=1, who="m")
    waiter = asyncio.create_task(adm.acquire(short=True, within=5, who="m"))
    await asyncio.sleep(0)
    started = time.monotonic()
    with pytest.raises(ModelBusy) as info:
        await adm.acquire(short=True, within=5, who="m")
    assert time.monotonic() - started < 0.1
    assert info.value.http_status == 429 and info.value.code == "model_queue_full"
    assert info.value.retry_after == pytest.approx(4.0 * 2)  # one running + one waiting, 1 slot
    waiter.cancel()


async def test_the_admission_deadline_refuses_with_503_and_leaves_the_queue() -> None:
    adm = Admission(1, 0, max_queue=4)
    held = await adm.acquire(short=True, within=1, who="smol")
    started = time.monotonic()
    with pytest.raises(ModelOverloaded) as info:
        await adm.acquire(short=True, within=0.2, who="smol")
    assert 0.19 <= time.monotonic() - started < 0.5
    assert info.value.http_status == 503 and info.value.error_class == "rate_limit"
    assert info.value.retry_after is not None and info.value.retry_after >= 1
    assert "smol" in str(info.value) and adm.waiting == 0
    adm.release(held)
    assert adm.busy == 0


async def test_retry_after_follows_observed_service_times() -> None:
    adm = Admission(1, 0, max_queue=4, prior_service=1.0)
    slot = await adm.acquire(short=True, within=1, who="m")
    slot.started -= 10  # pretend it was held for ten seconds
    adm.release(slot)
    assert adm.service == pytest.approx(10, abs=0.1)
    await adm.acquire(short=True, within=1, who="m")
    assert adm.retry_after() == pytest.approx(10, abs=0.1)


async def test_a_cancelled_waiter_hands_its_grant_on() -> None:
    adm = Admission(1, 0, max_queue=4)
    held = await adm.acquire(short=True, within=1, who="m")
    gone = asyncio.create_task(adm.acquire(short=True, within=5, who="m"))
    await asyncio.sleep(0)
    nxt = asyncio.create_task(adm.acquire(short=True, within=5, who="m"))
    await asyncio.sleep(0)
    adm.release(held)  # granted to ``gone`` ...
    gone.cancel()  # ... which leaves before it runs
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert await asyncio.wait_for(nxt, 1) is held


async def test_long_waiters_do_not_fill_the_queue_of_short_ones() -> None:
    adm = Admission(1, 1, max_queue=1)
    await adm.acquire(short=False, within=1, who="m")
    await adm.acquire(short=True, within=1, who="m")  # the express slot
    long_waiter = asyncio.create_task(adm.acquire(short=False, within=5, who="m"))
    short_waiter = asyncio.create_task(adm.acquire(short=True, within=5, who="m"))
    await asyncio.sleep(0)
    assert adm.waiting == 2  # one place each
    with pytest.raises(ModelBusy, match="1 long requests"):
        await adm.acquire(short=False, within=5, who="m")
    long_waiter.cancel()
    short_waiter.cancel()
