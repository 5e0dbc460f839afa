"""A client-side send-rate limiter.

Hand-written because the runtime's dependencies offer none for synchronous code and the
need is small: keep the account under SES's ``MaxSendRate``, counting each recipient.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class RateLimiter:
    """Reserve ``n`` sends at ``rate`` per second; callers sleep for their reservation.

    A reservation larger than the remaining budget goes into debt, so a 50-recipient batch
    at 14/s waits about 3.6 s instead of never fitting.
    """

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
        self._capacity = max(rate, 1.0)
        self._tokens = self._capacity
        self._stamp = clock()
        self._lock = threading.Lock()

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
