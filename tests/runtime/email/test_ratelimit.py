"""The client-side send-rate limiters, on a fake clock."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from milequest.services.email.ratelimit import Pacer, RateLimiter


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
