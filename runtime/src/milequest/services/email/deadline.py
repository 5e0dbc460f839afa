"""A total deadline for one provider call, retries and waits included (``EMAIL_CALL_TIMEOUT``).

Each provider applies it in its own transport, because no client library offers it:
botocore, urllib3 and smtplib only bound each socket operation. The rule everywhere: an
attempt (or a wait before one) starts only if it can end before the deadline, and each
attempt's socket timeouts are capped so that it does.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class DeadlineExceeded(Exception):
    """A provider call used up its deadline; ``last`` is the last attempt's failure, if any."""

    def __init__(self, seconds: float, attempts: int, last: BaseException | None = None) -> None:
        detail = f"; last error: {last}" if last is not None else ""
        super().__init__(
            f"no answer within the {seconds:g} s call deadline (EMAIL_CALL_TIMEOUT) "
            f"after {attempts} attempt(s){detail}"
        )
        self.seconds = seconds
        self.attempts = attempts
        self.last = last


class Deadline:
    """``seconds`` from now, on a monotonic clock."""

    __slots__ = ("_clock", "_end", "seconds")

    def __init__(self, seconds: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self._clock = clock
        self._end = clock() + seconds

    def remaining(self) -> float:
        """Seconds left (0 once passed)."""
        return max(0.0, self._end - self._clock())

    def allows(self, seconds: float) -> bool:
        """Whether something taking up to ``seconds`` still ends before the deadline."""
        return self._end - self._clock() >= seconds
