"""The client-side send-rate limiters, on a fake clock."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from milequest.services.email.ratelimit import Pacer, RateLimiter, fleet_pace


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_reservations_wait_for_their_share() -> None:
    clock = FakeClock()
    limiter = RateLimiter(10, clock=clock.time, sleep=clock.sleep)
    assert limiter.acquire(10) == 0
    assert limiter.acquire(5) == pytest.approx(0.5)
    assert limiter.acquire(1) == pytest.approx(0.1)
    clock.now += 5  # idle time refills up to one second's worth only
    assert limiter.acquire(10) == 0
    assert limiter.acquire(1) == pytest.approx(0.1)
    assert clock.sleeps == [pytest.approx(0.5), pytest.approx(0.1), pytest.approx(0.1)]


def test_batches_larger_than_the_rate_go_into_debt() -> None:
    clock = FakeClock()
    limiter = RateLimiter(14, clock=clock.time, sleep=clock.sleep)
    assert limiter.acquire(50) == pytest.approx(36 / 14)
    total = sum(limiter.acquire(50) for _ in range(3))
    assert total == pytest.approx(150 / 14)


def test_rate_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        RateLimiter(0)


def test_a_pacer_spaces_sends_and_builds_up_nothing_while_idle() -> None:
    clock = FakeClock()
    pacer = Pacer(4, clock=clock.time, sleep=clock.sleep)
    assert [pacer.acquire() for _ in range(3)] == [0, pytest.approx(0.25), pytest.approx(0.25)]
    clock.now += 10  # idle: the next send goes at once, the one after waits its turn
    assert pacer.acquire() == 0
    assert pacer.acquire(2) == pytest.approx(0.25)
    assert pacer.acquire() == pytest.approx(0.5)  # after two units, two quarters


@given(
    rate=st.floats(0.5, 200),
    sends=st.lists(st.tuples(st.floats(0, 2), st.integers(1, 3)), min_size=1, max_size=60),
)
def test_property_no_one_second_window_holds_more_than_the_rate(
    rate: float, sends: list[tuple[float, int]]
) -> None:
    """Whatever arrives when, the units started in any one-second window stay within the
    rate plus the last send's own units."""
    clock = FakeClock()
    pacer = Pacer(rate, clock=clock.time, sleep=clock.sleep)
    started: list[tuple[float, int]] = []
    for pause, units in sends:
        clock.now += pause
        pacer.acquire(units)
        started.append((clock.now, units))
    for i, (first, _) in enumerate(started):
        window = [u for at, u in started[i:] if at - first < 1.0 - 1e-9]
        assert sum(window[:-1]) <= rate + 1e-6


def test_pacer_rate_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        Pacer(-1)


@given(
    rate=st.integers(3, 200),
    consumers=st.integers(1, 8),
    phases=st.lists(st.floats(0, 1), min_size=8, max_size=8),
)
def test_property_a_fleet_of_pacers_keeps_every_window_under_the_rate(
    rate: int, consumers: int, phases: list[float]
) -> None:
    """N consumers, each pacing one-recipient sends at ``fleet_pace``, starting at any
    phase and sending as fast as they may: no one-second window anywhere holds more than
    the rate (where the rate leaves room for the pacers: rate > N)."""
    if rate <= consumers:
        return
    pace = fleet_pace(rate, 1 / consumers)
    assert pace <= rate * 0.95 / consumers
    sends: list[float] = []
    for phase in phases[:consumers]:
        clock = FakeClock()
        clock.now = phase
        pacer = Pacer(pace, clock=clock.time, sleep=clock.sleep)
        while clock.now < 6:
            pacer.acquire(1)
            sends.append(clock.now)
    sends.sort()
    for i, first in enumerate(sends):
        in_window = sum(1 for at in sends[i:] if at < first + 1.0 - 1e-9)
        assert in_window <= rate, (rate, consumers, pace)


def test_the_fleet_pace_leaves_room_for_each_pacers_extra_send() -> None:
    assert fleet_pace(50, 1 / 2) == pytest.approx(23.75)  # 5 % margin binds
    assert fleet_pace(10, 1 / 2) == pytest.approx(4.0)  # (10 - 2) / 2
    assert fleet_pace(14, 1 / 4) == pytest.approx(2.5)  # (14 - 4) / 4
    assert fleet_pace(1, 1 / 2) == pytest.approx(0.25)  # no room: half the share
