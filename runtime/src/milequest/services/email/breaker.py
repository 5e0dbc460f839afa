"""A circuit breaker for provider calls: fail fast while a provider is down.

Closed, it counts consecutive failures that say the provider is unreachable
(``PROVIDER_UNAVAILABLE``, timeouts); ``failures`` of them open it. Open, it refuses calls
at once for ``reset_seconds``; then it lets exactly one call through as a probe
(half-open) while every other call is still refused. The probe's success closes it, its
failure opens it for another ``reset_seconds``. Any answer from the provider, a rejection
or a 429 included, counts as a success: the provider is up.

Hand-written rather than PyPI ``pybreaker``: pybreaker 1.x runs every guarded call while
holding the breaker's lock, so concurrent sends through one provider (bulk workers, the
queue's threads) would run one at a time; and its half-open state admits every caller
instead of a single probe. The state is per process and provider: each Lambda instance
opens its own breaker after ``failures`` failures, at no cost per send.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from enum import StrEnum


class BreakerState(StrEnum):
    """Where a circuit breaker stands."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class BreakerOpen(Exception):
    """A call refused because the circuit is open; ``retry_in`` seconds until a probe."""

    def __init__(self, retry_in: float) -> None:
        super().__init__(f"circuit open; next probe in {retry_in:.1f} s")
        self.retry_in = retry_in


class CircuitBreaker:
    """Thread-safe breaker; ``on_change(state)`` hears every transition and refusal."""

    def __init__(
        self,
        failures: int = 5,
        reset_seconds: float = 30.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[BreakerState], None] | None = None,
    ) -> None:
        if failures < 1 or reset_seconds <= 0:
            raise ValueError("failures must be at least 1 and reset_seconds positive")
        self.failures = failures
        self.reset_seconds = reset_seconds
        self._clock = clock
        self._on_change = on_change
        self._lock = threading.Lock()
        self._state = BreakerState.CLOSED
        self._count = 0
        self._opened_at = 0.0
        self._probing = False

    @property
    def state(self) -> BreakerState:
        """The current state (an open circuit past its reset time reads as half-open)."""
        with self._lock:
            if self._state is BreakerState.OPEN and self._reset_due():
                return BreakerState.HALF_OPEN
            return self._state

    def before_call(self) -> bool:
        """Admit a call or raise :class:`BreakerOpen`; True when the call is the probe."""
        with self._lock:
            if self._state is BreakerState.CLOSED:
                return False
            if self._state is BreakerState.OPEN and self._reset_due():
                self._state = BreakerState.HALF_OPEN
            if self._state is BreakerState.HALF_OPEN and not self._probing:
                self._probing = True
                changed = BreakerState.HALF_OPEN
            else:
                elapsed = self._clock() - self._opened_at
                retry_in = max(0.0, self.reset_seconds - elapsed)
                changed = None
        if changed is None:
            self._notify(BreakerState.OPEN)
            raise BreakerOpen(retry_in)
        self._notify(changed)
        return True

    def record(self, probe: bool, ok: bool | None) -> None:
        """The outcome of an admitted call: ``ok`` (the provider answered), a failure that
        counts (False), or None when the call ended without an outcome (interrupted)."""
        with self._lock:
            changed = self._transition(probe, ok)
        if changed is not None:
            self._notify(changed)

    def _transition(self, probe: bool, ok: bool | None) -> BreakerState | None:
        if probe:
            self._probing = False
            if ok:
                self._state, self._count = BreakerState.CLOSED, 0
                return BreakerState.CLOSED
            self._open()  # a failed or interrupted probe: wait a full period again
            return BreakerState.OPEN
        if self._state is not BreakerState.CLOSED or ok is None:
            return None  # a call admitted before the circuit opened: no news
        if ok:
            self._count = 0
            return None
        self._count += 1
        if self._count < self.failures:
            return None
        self._open()
        return BreakerState.OPEN

    def _open(self) -> None:
        self._state = BreakerState.OPEN
        self._opened_at = self._clock()
        self._count = 0

    def _reset_due(self) -> bool:
        return self._clock() - self._opened_at >= self.reset_seconds

    def _notify(self, state: BreakerState) -> None:
        if self._on_change is not None:
            self._on_change(state)
