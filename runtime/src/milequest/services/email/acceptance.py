"""Whether a failed provider call can have been accepted: what makes failover safe.

No provider takes an idempotency token that another provider would honour, so a message
handed to a second provider after the first accepted it is delivered twice. A call is
*refused before acceptance* only when every attempt of it was:

- never made (the circuit breaker was open);
- refused at connection time (connection refused, DNS or TLS failure, connect timeout);
- answered 429 or 503 (SMTP: a 421 or 45x reply), which says "not now" and takes nothing.

A read timeout, a connection dropped after the request was written, or any other 5xx may
follow acceptance. The base service tracks the attempts of each provider call
(:func:`tracking`); transports that retry report each failed attempt
(:func:`note_failed_attempt`), since a call that ends in a 503 after a read timeout may
still have been accepted by its first attempt.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

REFUSED_STATUSES = frozenset({429, 503})
"""HTTP answers that take nothing: throttled, or unavailable."""
_REFUSED_SMTP = frozenset({421, 450, 451, 452})
_REFUSED_ERRNOS = frozenset({errno.ECONNREFUSED, errno.ENETUNREACH, errno.EHOSTUNREACH})


@dataclass
class Attempts:
    """The failed attempts of one provider call so far."""

    failed: int = 0
    maybe_accepted: bool = False


_CURRENT: ContextVar[Attempts | None] = ContextVar("milequest_email_attempts", default=None)


@contextmanager
def tracking() -> Iterator[Attempts]:
    """Track the attempts of the provider call made inside the block (this thread)."""
    attempts = Attempts()
    token = _CURRENT.set(attempts)
    try:
        yield attempts
    finally:
        _CURRENT.reset(token)


def note_failed_attempt(failure: BaseException | None = None, *, status: int | None = None) -> None:
    """Record one failed attempt (an exception, or an error answer's HTTP ``status``)."""
    attempts = _CURRENT.get()
    if attempts is None:
        return
    attempts.failed += 1
    if status is not None:
        refused = status in REFUSED_STATUSES
    else:
        refused = failure is not None and refused_before_acceptance(failure)
    if not refused:
        attempts.maybe_accepted = True


def refused_before_acceptance(exc: BaseException) -> bool:
    """Whether ``exc``, the failure of a provider call, shows the message was not taken."""
    from .deadline import DeadlineExceeded
    from .errors import EmailError

    if isinstance(exc, EmailError):
        return exc.not_accepted
    if isinstance(exc, DeadlineExceeded):
        # Raised between attempts (the last one is known) or in the middle of one.
        return exc.last is not None and refused_before_acceptance(exc.last)
    status = _http_status(exc)
    if status is not None:
        return status in REFUSED_STATUSES
    return _refused_connection(exc) or _refused_smtp(exc)


def _http_status(exc: BaseException) -> int | None:
    from botocore.exceptions import ClientError

    from .http_api import ApiError

    if isinstance(exc, ClientError):
        return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    if isinstance(exc, ApiError):
        return exc.status
    return None


def _refused_connection(exc: BaseException) -> bool:
    import urllib.error

    import urllib3.exceptions
    from botocore import exceptions as botocore_errors

    if isinstance(exc, botocore_errors.ConnectionError):
        return True  # connect failures and timeouts, TLS and proxy failures: nothing sent
    if isinstance(exc, urllib3.exceptions.ConnectTimeoutError):
        return True  # NewConnectionError and NameResolutionError included
    if isinstance(exc, urllib.error.URLError) and isinstance(exc.reason, BaseException):
        return _refused_connection(exc.reason)
    if isinstance(exc, ConnectionRefusedError | socket.gaierror):
        return True
    return isinstance(exc, OSError) and exc.errno in _REFUSED_ERRNOS


def _refused_smtp(exc: BaseException) -> bool:
    import smtplib

    if isinstance(exc, smtplib.SMTPConnectError):
        return True
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in exc.recipients.values()]
        return bool(codes) and all(code in _REFUSED_SMTP for code in codes)
    return isinstance(exc, smtplib.SMTPResponseException) and exc.smtp_code in _REFUSED_SMTP
