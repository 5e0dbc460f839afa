"""Client-side send-rate limiters.

Hand-written because the runtime's dependencies offer none for synchronous code and the
need is small: keep the account under SES's ``MaxSendRate``, counting each recipient
(:class:`RateLimiter`), and space a queue consumer's sends at its share of a provider's
rate (:class:`Pacer`).
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable

FLEET_MARGIN = 0.95
"""Queue consumers pace at most at this share of their part of a provider's rate: sends
leave evenly spaced but reach the provider with some jitter (see :func:`fleet_pace`)."""


def fleet_pace(rate: float, share: float) -> float:
    """The pace of one of ``1 / share`` consumers that together must stay under ``rate``.

    A pacer at ``r`` per second can put ``ceil(r)`` sends in a one-second window (one more
    than ``r`` when the window starts on a send), so N pacers stay under ``rate`` in every
    window only at ``(rate - N) / N`` each; 5 % is kept for jitter as well. Where the rate
    is too small for that (``rate <= N``), half the share is the pace: no independent
    pacers can then keep every window under the rate, and the provider's 429s are retried.
    """
    consumers = 1 / share
    budget = min(rate * FLEET_MARGIN, rate - consumers)
    if budget <= 0:
        budget = rate / 2
    return budget * share


class _Limiter(ABC):
    """What both limiters hold: a positive rate, a clock, a way to sleep, a lock."""

    def __init__(
        self,
        rate: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._start(clock())

    @abstractmethod
    def _start(self, now: float) -> None:
        """Set the limiter's own state, at ``now`` on its clock."""


class RateLimiter(_Limiter):
    """Reserve ``n`` sends at ``rate`` per second; callers sleep for their reservation.

    A reservation larger than the remaining budget goes into debt, so a 50-recipient batch
    at 14/s waits about 3.6 s instead of never fitting.
    """

    def _start(self, now: float) -> None:
        self._capacity = max(self.rate, 1.0)
        self._tokens = self._capacity
        self._stamp = now

    def acquire(self, n: float = 1.0) -> float:
        """Take ``n`` tokens, sleeping as long as needed; returns the seconds waited."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self._capacity, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            self._tokens -= n
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
        if wait > 0:
            self._sleep(wait)
        return wait


class Pacer(_Limiter):
    """Space sends evenly at ``rate`` units per second, with no burst.

    A send of ``n`` units holds the next one back ``n / rate`` seconds, so any one-second
    window holds at most ``rate`` units plus those of its last send (one message's
    recipients). Unlike :class:`RateLimiter`, nothing builds up while idle: a fleet of
    pacers at ``rate / N`` each never exceeds ``rate`` together.
    """

    def _start(self, now: float) -> None:
        self._next = float("-inf")

    def acquire(self, n: float = 1.0) -> float:
        """Wait for this send's turn and book ``n`` units; returns the seconds waited."""
        with self._lock:
            now = self._clock()
            start = max(now, self._next)
            self._next = start + n / self.rate
        wait = start - now
        if wait > 0:
            self._sleep(wait)
        return wait
