"""The client-side send-rate limiter, on a fake clock."""

from __future__ import annotations

import pytest
from milequest.services.email.ratelimit import RateLimiter


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
