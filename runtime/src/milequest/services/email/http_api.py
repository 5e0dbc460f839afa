"""Calling an ESP's JSON API within the call deadline, retrying what may be retried.

Shared by the Resend and SendGrid providers, whatever client performs one attempt. Written
here because neither client retries at all: urllib3's ``Retry`` can honour ``Retry-After``
but not SendGrid's ``X-RateLimit-Reset`` epoch, nor a total deadline across attempts.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .acceptance import note_failed_attempt
from .deadline import Deadline, DeadlineExceeded

MIN_ATTEMPT_SECONDS = 0.25
"""An attempt is not started with less time than this left."""

sleep = time.sleep  # looked up at each wait, so that tests can record the waits instead


@dataclass(frozen=True)
class ApiResponse:
    """One HTTP answer: status, headers (lower-case names) and the raw body."""

    status: int
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""

    def json(self) -> Any:
        """The body as JSON (None when it is empty or not JSON)."""
        try:
            return json.loads(self.body) if self.body else None
        except ValueError:
            return None

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


class ApiError(Exception):
    """An error answer (4xx/5xx) after any retries; ``name`` is the API's error type."""

    def __init__(self, response: ApiResponse, name: str, message: str) -> None:
        super().__init__(f"HTTP {response.status} {name}: {message}".strip())
        self.response = response
        self.status = response.status
        self.name = name
        self.message = message


def lower_headers(items: Any) -> dict[str, str]:
    """Response headers (a mapping or an ``email.message`` object) with lower-case names."""
    pairs = items.items() if hasattr(items, "items") else items
    return {str(k).lower(): str(v) for k, v in pairs}


def backoff(attempt: int) -> float:
    """Seconds to wait before retry number ``attempt`` (1-based) when the API says nothing."""
    return float(min(4.0, 0.25 * 2 ** (attempt - 1)))


def call(
    attempt: Callable[[float], ApiResponse],
    *,
    seconds: float,
    max_attempts: int,
    wait_before_retry: Callable[[ApiResponse, int], float | None],
    error: Callable[[ApiResponse], ApiError],
    transport_errors: tuple[type[BaseException], ...],
    retry_transport: bool,
) -> ApiResponse:
    """Run ``attempt(timeout)`` until it succeeds, within ``seconds`` in all.

    ``wait_before_retry(response, n)`` says how long to wait before retrying an error
    answer (None: do not retry). A retry that could not start, with
    :data:`MIN_ATTEMPT_SECONDS` left, before the deadline is not made: the call then raises
    :class:`DeadlineExceeded` carrying the last failure. Each attempt gets the time left as
    its timeout, so the call ends by the deadline.
    """
    deadline = Deadline(seconds)
    for number in range(1, max_attempts + 1):
        failure: BaseException
        try:
            response = attempt(max(deadline.remaining(), 0.001))
        except transport_errors as exc:
            note_failed_attempt(exc)
            if not retry_transport or number == max_attempts:
                raise
            failure, wait = exc, backoff(number)
        else:
            if response.status < 400:
                return response
            note_failed_attempt(status=response.status)
            failure = error(response)
            answer_wait = wait_before_retry(response, number)
            if answer_wait is None or number == max_attempts:
                raise failure
            wait = answer_wait
        if not deadline.allows(wait + MIN_ATTEMPT_SECONDS):
            raise DeadlineExceeded(seconds, number, failure)
        sleep(wait)
    raise AssertionError("unreachable: the last attempt returns or raises")
