"""The ESP API call loop: retries within the deadline, shrinking timeouts, what it raises."""

from __future__ import annotations

import pytest
from milequest.services.email import http_api
from milequest.services.email.deadline import DeadlineExceeded
from milequest.services.email.http_api import ApiError, ApiResponse, call


def _error(response: ApiResponse) -> ApiError:
    return ApiError(response, "error", response.body.decode())


def _run(answers: list[ApiResponse | Exception], **options: object) -> tuple[object, list[float]]:
    timeouts: list[float] = []

    def attempt(timeout: float) -> ApiResponse:
        timeouts.append(timeout)
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    settings: dict[str, object] = {
        "seconds": 10.0,
        "max_attempts": 4,
        "wait_before_retry": lambda response, n: 0.0 if response.status == 429 else None,
        "error": _error,
        "transport_errors": (OSError,),
        "retry_transport": True,
        **options,
    }
    try:
        return call(attempt, **settings), timeouts  # type: ignore[arg-type]
    except Exception as exc:
        return exc, timeouts


def test_each_attempt_gets_what_is_left(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http_api, "sleep", lambda seconds: None)
    result, timeouts = _run([ApiResponse(429), OSError("reset"), ApiResponse(202)])
    assert isinstance(result, ApiResponse)
    assert result.status == 202
    assert len(timeouts) == 3
    assert timeouts[0] <= 10.0
    assert timeouts == sorted(timeouts, reverse=True)


def test_what_is_not_retried_is_raised_as_is() -> None:
    result, timeouts = _run([ApiResponse(400, body=b"bad")])
    assert isinstance(result, ApiError)
    assert (result.status, result.message) == (400, "bad")
    result, timeouts = _run([OSError("refused")], retry_transport=False)
    assert isinstance(result, OSError)
    assert len(timeouts) == 1


def test_the_last_attempt_raises_its_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http_api, "sleep", lambda seconds: None)
    result, timeouts = _run([ApiResponse(429)] * 3, max_attempts=3)
    assert isinstance(result, ApiError)
    assert result.status == 429
    assert len(timeouts) == 3


def test_a_wait_that_would_pass_the_deadline_ends_the_call() -> None:
    result, timeouts = _run(
        [ApiResponse(429), ApiResponse(202)],
        seconds=1.0,
        wait_before_retry=lambda response, n: 5.0,
    )
    assert isinstance(result, DeadlineExceeded)
    assert isinstance(result.last, ApiError)
    assert (result.seconds, result.attempts) == (1.0, 1)
    assert len(timeouts) == 1
