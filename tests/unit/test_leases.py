"""``Leases``: which lease serves a call, when the next is asked for, how big it is."""

from __future__ import annotations

import pytest

from elevenfactor.governance import _leases
from elevenfactor.governance._leases import (
    LEASE_CALLS,
    LEASE_SECONDS,
    MAX_LEASE_CALLS,
    Lease,
    Leases,
)

SIG = (("bud_1", "total", 100.0, False),)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(_leases.time, "monotonic", c)
    return c


def _lease(clock: Clock, name: str, calls: int, amount: float = 1.0) -> Lease:
    return Lease(name, (("bud_1", "total"),), calls * amount, 0.0, clock.now + LEASE_SECONDS)


def test_a_call_is_served_once_and_settled_once(clock: Clock) -> None:
    leases = Leases()
    leases.add(SIG, _lease(clock, "l1", 4))
    lease, ended = leases.take(SIG, 1.0, "c1")
    assert lease is not None and not ended
    again, _ = leases.take(SIG, 1.0, "c1")  # the same call id in flight: not served twice
    assert again is None
    assert leases.settle("c1", "l1", 1.0, 0.5) == (True, None)
    assert leases.settle("c1", "l1", 1.0, 0.5) == (False, None)  # settled before
    assert lease.amount == pytest.approx(3.5) and lease.used == 0.0


def test_the_next_lease_is_asked_for_ahead(clock: Clock) -> None:
    leases = Leases()
    assert leases.wants(SIG)
    leases.add(SIG, _lease(clock, "l1", 4))
    assert not leases.wants(SIG)
    leases.take(SIG, 1.0, "c1")
    assert not leases.wants(SIG)
    leases.take(SIG, 1.0, "c2")
    leases.take(SIG, 1.0, "c3")  # 3 of 4 in flight: running low
    assert leases.wants(SIG)
    leases.pending.add(SIG)
    assert not leases.wants(SIG)  # asked already


def test_half_its_time_gone_asks_for_the_next(clock: Clock) -> None:
    leases = Leases()
    leases.add(SIG, _lease(clock, "l1", 4))
    clock.now += LEASE_SECONDS / 2 + 0.01
    assert leases.wants(SIG)


def test_a_lease_used_up_quickly_doubles_the_next_and_an_idle_one_halves_it(
    clock: Clock,
) -> None:
    leases = Leases()
    assert leases.calls_for(SIG) == LEASE_CALLS
    first = _lease(clock, "l1", LEASE_CALLS)
    leases.add(SIG, first)
    clock.now += 0.1  # replaced within a quarter of its time: busy
    ended = leases.add(SIG, _lease(clock, "l2", LEASE_CALLS))
    assert ended == [first]  # no call left in it: given back
    assert leases.calls_for(SIG) == 2 * LEASE_CALLS
    clock.now += LEASE_SECONDS + 0.01  # aged out with nothing used
    lease, ended = leases.take(SIG, 1.0, "c1")
    assert lease is None and [e.id for e in ended] == ["l2"]
    assert leases.calls_for(SIG) == LEASE_CALLS


def test_lease_size_is_capped(clock: Clock) -> None:
    leases = Leases()
    for i in range(20):
        leases.add(SIG, _lease(clock, f"l{i}", LEASE_CALLS))
    assert leases.calls_for(SIG) == MAX_LEASE_CALLS


def test_a_retired_lease_is_given_back_after_its_last_call(clock: Clock) -> None:
    leases = Leases()
    leases.add(SIG, _lease(clock, "l1", 4))
    leases.take(SIG, 1.0, "c1")
    clock.now += 1.9
    ended = leases.add(SIG, _lease(clock, "l2", 4))
    assert ended == []  # c1 still runs in it
    first, last = leases.settle("c1", "l1", 1.0, 1.0)
    assert first and last is not None and last.id == "l1"
