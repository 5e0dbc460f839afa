"""The circuit breaker: its states on a fake clock, one probe at a time, and around real calls."""

from __future__ import annotations

import threading
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st
from milequest.services.email import (
    CircuitOpenError,
    EmailError,
    EmailErrorCode,
    create_email_service,
)
from milequest.services.email.breaker import BreakerOpen, BreakerState, CircuitBreaker
from milequest.services.metrics import InMemorySink

from .ses_server import SesServer

MESSAGE = {"to": "walker@example.com", "subject": "Hi", "text": "Hello"}


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _breaker(failures: int = 3, reset: float = 10.0) -> tuple[CircuitBreaker, Clock, list[str]]:
    clock = Clock()
    changes: list[str] = []
    breaker = CircuitBreaker(
        failures, reset, clock=clock, on_change=lambda state: changes.append(state.value)
    )
    return breaker, clock, changes


def test_consecutive_failures_open_it_and_a_success_resets_the_count() -> None:
    breaker, _, changes = _breaker(failures=3)
    for ok in (False, False, True, False, False):
        breaker.record(breaker.before_call(), ok)
    assert breaker.state is BreakerState.CLOSED
    breaker.record(breaker.before_call(), False)
    assert breaker.state is BreakerState.OPEN
    assert changes == ["open"]


def test_open_refuses_then_lets_exactly_one_probe_through() -> None:
    breaker, clock, changes = _breaker(failures=1, reset=10.0)
    breaker.record(breaker.before_call(), False)
    with pytest.raises(BreakerOpen) as refused:
        breaker.before_call()
    assert refused.value.retry_in == pytest.approx(10.0)
    clock.now += 10.0
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.before_call() is True  # the probe
    with pytest.raises(BreakerOpen):
        breaker.before_call()  # everyone else, while the probe runs
    breaker.record(True, True)
    assert breaker.state is BreakerState.CLOSED
    assert breaker.before_call() is False
    assert changes == ["open", "open", "half_open", "open", "closed"]


def test_a_failed_or_interrupted_probe_waits_a_full_period_again() -> None:
    breaker, clock, _ = _breaker(failures=1, reset=5.0)
    breaker.record(breaker.before_call(), False)
    for outcome in (False, None):
        clock.now += 5.0
        probe = breaker.before_call()
        assert probe
        breaker.record(probe, outcome)
        assert breaker.state is BreakerState.OPEN
        clock.now += 4.9
        with pytest.raises(BreakerOpen):
            breaker.before_call()
        clock.now -= 4.9


def test_late_outcomes_of_calls_admitted_before_it_opened_change_nothing() -> None:
    breaker, _clock, _ = _breaker(failures=1, reset=5.0)
    early = breaker.before_call()
    breaker.record(breaker.before_call(), False)  # opens
    breaker.record(early, True)  # a call that started before: stale news
    assert breaker.state is BreakerState.OPEN


def test_only_one_probe_among_many_threads() -> None:
    breaker, clock, _ = _breaker(failures=1, reset=1.0)
    breaker.record(breaker.before_call(), False)
    clock.now += 1.0
    admitted: list[bool] = []
    lock = threading.Lock()
    start = threading.Barrier(16)

    def call() -> None:
        start.wait()
        try:
            probe = breaker.before_call()
        except BreakerOpen:
            return
        with lock:
            admitted.append(probe)

    threads = [threading.Thread(target=call) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert admitted == [True]


def test_impossible_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(0, 1.0)
    with pytest.raises(ValueError):
        CircuitBreaker(1, 0.0)


@given(
    failures=st.integers(1, 4),
    steps=st.lists(
        st.tuples(st.sampled_from(["ok", "fail", "interrupt"]), st.floats(0, 3)), max_size=40
    ),
)
def test_property_the_breaker_follows_its_state_machine(
    failures: int, steps: list[tuple[str, float]]
) -> None:
    """A model of the documented rules, checked step by step against the breaker."""
    breaker, clock, _ = _breaker(failures=failures, reset=2.0)
    model_state, count, opened_at = "closed", 0, 0.0
    for outcome, pause in steps:
        clock.now += pause
        if model_state == "open" and clock.now - opened_at >= 2.0:
            model_state = "half_open"
        try:
            probe = breaker.before_call()
        except BreakerOpen:
            assert model_state == "open"
            continue
        assert probe == (model_state == "half_open")
        ok = {"ok": True, "fail": False, "interrupt": None}[outcome]
        breaker.record(probe, ok)
        if probe:
            model_state, count = ("closed", 0) if ok else ("open", 0)
            opened_at = clock.now if not ok else opened_at
        elif ok is True:
            count = 0
        elif ok is False:
            count += 1
            if count >= failures:
                model_state, count, opened_at = "open", 0, clock.now
        expected = model_state
        if expected == "open" and clock.now - opened_at >= 2.0:
            expected = "half_open"
        assert breaker.state.value == expected


# -- around real provider calls --------------------------------------------------------------


def test_503s_open_the_circuit_then_calls_fail_fast_and_a_probe_recovers(
    ses_server: SesServer,
) -> None:
    metrics = InMemorySink()
    service = create_email_service(
        "ses",
        ses_max_send_rate=1000.0,
        ses_max_attempts=2,
        email_breaker_failures=2,
        email_breaker_reset=0.5,
        metrics=metrics,
    )
    ses_server.state.unavailable_sends = -1
    for _ in range(2):
        with pytest.raises(EmailError) as failed:
            service.send_email(MESSAGE)
        assert failed.value.code is EmailErrorCode.PROVIDER_UNAVAILABLE
        assert failed.value.not_accepted  # 503 to every attempt: nothing was taken
    assert ses_server.state.sends() == 4  # two calls of two attempts
    with pytest.raises(CircuitOpenError) as refused:
        service.send_email(MESSAGE)
    assert refused.value.retryable
    assert refused.value.not_accepted
    assert refused.value.code is EmailErrorCode.PROVIDER_UNAVAILABLE
    assert ses_server.state.sends() == 4  # failed fast: no call
    ses_server.state.unavailable_sends = 0
    time.sleep(0.5)
    result = service.send_email(MESSAGE)  # the probe
    assert result.accepted == ["walker@example.com"]
    assert service.breaker.state is BreakerState.CLOSED
    states = metrics.values("CircuitOpen", Provider="ses")
    assert states[0] == 1
    assert states[-1] == 0


def test_rejections_and_throttling_count_as_answers(ses_server: SesServer) -> None:
    service = create_email_service(
        "ses", ses_max_send_rate=1000.0, ses_max_attempts=1, email_breaker_failures=1
    )
    ses_server.state.rejected.add("walker@example.com")
    ses_server.state.throttle_sends = 1
    for code in (EmailErrorCode.RATE_LIMITED, EmailErrorCode.MESSAGE_REJECTED):
        with pytest.raises(EmailError) as failed:
            service.send_email(MESSAGE)
        assert failed.value.code is code
    assert service.breaker.state is BreakerState.CLOSED


def test_bad_input_never_reaches_the_breaker(ses_server: SesServer) -> None:
    service = create_email_service("ses", email_breaker_failures=1)
    for _ in range(3):
        with pytest.raises(EmailError):
            service.send_email({"to": "not an address", "subject": "s", "text": "t"})
    assert service.breaker.state is BreakerState.CLOSED
    assert ses_server.state.sends() == 0
