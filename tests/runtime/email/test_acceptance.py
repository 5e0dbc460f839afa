"""Whether a failed send can have been accepted: by failure, across attempts, on the wire."""

from __future__ import annotations

import smtplib
import socket
import time
import urllib.error

import pytest
import urllib3.exceptions
from botocore import exceptions as botocore_errors
from milequest.services.email import EmailError, EmailErrorCode, create_email_service
from milequest.services.email.acceptance import (
    note_failed_attempt,
    refused_before_acceptance,
    tracking,
)
from milequest.services.email.deadline import DeadlineExceeded
from milequest.services.email.http_api import ApiError, ApiResponse

from tests.conftest import free_port

from .api_server import ApiServer
from .conftest import SmtpServer
from .resend_server import ResendState
from .ses_server import SesServer

MESSAGE = {"to": "walker@example.com", "subject": "Hi", "text": "Hello"}


def _client_error(status: int, code: str = "X") -> botocore_errors.ClientError:
    return botocore_errors.ClientError(
        {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "SendEmail",
    )


REFUSED = [
    _client_error(429, "TooManyRequestsException"),
    _client_error(503, "ServiceUnavailable"),
    botocore_errors.EndpointConnectionError(endpoint_url="http://127.0.0.1:1"),
    botocore_errors.ConnectTimeoutError(endpoint_url="http://127.0.0.1:1"),
    ApiError(ApiResponse(429), "rate_limit_exceeded", "slow down"),
    ApiError(ApiResponse(503), "", "unavailable"),
    urllib3.exceptions.NewConnectionError(None, "refused"),  # type: ignore[arg-type]
    urllib.error.URLError(ConnectionRefusedError(111, "refused")),
    ConnectionRefusedError(111, "Connection refused"),
    socket.gaierror(-2, "Name or service not known"),
    smtplib.SMTPConnectError(554, b"no service"),
    smtplib.SMTPResponseException(421, b"closing"),
    smtplib.SMTPRecipientsRefused({"a@b.example": (450, b"try later")}),
    DeadlineExceeded(15.0, 3, _client_error(503)),
]
MAYBE_ACCEPTED = [
    _client_error(500, "InternalFailure"),
    _client_error(502),
    _client_error(400, "MessageRejected"),
    botocore_errors.ReadTimeoutError(endpoint_url="http://127.0.0.1:1"),
    botocore_errors.ConnectionClosedError(endpoint_url="http://127.0.0.1:1"),
    ApiError(ApiResponse(500), "internal_server_error", "oops"),
    urllib3.exceptions.ReadTimeoutError(None, "/emails", "read timed out"),  # type: ignore[arg-type]
    urllib3.exceptions.ProtocolError("connection reset"),
    TimeoutError("timed out"),
    smtplib.SMTPServerDisconnected("lost"),
    smtplib.SMTPRecipientsRefused({"a@b.example": (550, b"no such user")}),
    smtplib.SMTPDataError(554, b"rejected"),
    DeadlineExceeded(15.0, 1),  # cut off in the middle of an attempt
    DeadlineExceeded(15.0, 2, botocore_errors.ReadTimeoutError(endpoint_url="x")),
    EmailError(EmailErrorCode.PROVIDER_UNAVAILABLE, "no flag"),
]


@pytest.mark.parametrize("failure", REFUSED, ids=lambda e: type(e).__name__)
def test_refusals_before_acceptance(failure: BaseException) -> None:
    assert refused_before_acceptance(failure)


@pytest.mark.parametrize("failure", MAYBE_ACCEPTED, ids=lambda e: type(e).__name__)
def test_anything_else_may_have_been_accepted(failure: BaseException) -> None:
    assert not refused_before_acceptance(failure)


def test_one_attempt_that_may_have_been_accepted_taints_the_whole_call() -> None:
    with tracking() as attempts:
        note_failed_attempt(status=503)
        note_failed_attempt(status=429)
        assert not attempts.maybe_accepted
        note_failed_attempt(botocore_errors.ReadTimeoutError(endpoint_url="x"))
        note_failed_attempt(status=503)
    assert attempts.failed == 4
    assert attempts.maybe_accepted
    note_failed_attempt(status=500)  # outside a tracked call: ignored
    assert attempts.failed == 4


# -- on the wire ---------------------------------------------------------------------------


def test_ses_503_on_every_attempt_was_not_accepted(ses_server: SesServer) -> None:
    ses_server.state.unavailable_sends = -1
    with pytest.raises(EmailError) as failed:
        create_email_service("ses", ses_max_send_rate=1000.0, ses_max_attempts=3).send_email(
            MESSAGE
        )
    assert failed.value.not_accepted
    assert ses_server.state.sends() == 3


def test_ses_rejection_and_read_timeouts_may_have_been(ses_server: SesServer) -> None:
    service = create_email_service("ses", ses_max_send_rate=1000.0, email_call_timeout=1.0)
    ses_server.state.rejected.add("walker@example.com")
    with pytest.raises(EmailError) as rejected:
        service.send_email(MESSAGE)
    assert rejected.value.code is EmailErrorCode.MESSAGE_REJECTED
    assert not rejected.value.not_accepted
    ses_server.state.rejected.clear()
    ses_server.state.delay = 2.0  # past the read timeout: SES may have taken it
    with pytest.raises(EmailError) as timed_out:
        service.send_email(MESSAGE)
    assert timed_out.value.code is EmailErrorCode.PROVIDER_UNAVAILABLE
    assert not timed_out.value.not_accepted
    deadline = time.monotonic() + 10
    while not ses_server.state.sent and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(ses_server.state.sent) == 1  # and indeed SES took it after the timeout


def test_an_endpoint_refusing_connections_was_not_accepted(
    monkeypatch: pytest.MonkeyPatch, fast_retries: None
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_SESV2", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(EmailError) as failed:
        create_email_service("ses", ses_max_send_rate=1000.0, ses_max_attempts=2).send_email(
            MESSAGE
        )
    assert failed.value.code is EmailErrorCode.PROVIDER_UNAVAILABLE
    assert failed.value.not_accepted


def test_resend_503_was_not_accepted_but_500_after_acceptance_may_have_been(
    resend_api: ApiServer[ResendState], no_waits: list[float]
) -> None:
    service = create_email_service("resend", email_api_max_attempts=2)
    resend_api.state.unavailable = 2
    with pytest.raises(EmailError) as unavailable:
        service.send_email(MESSAGE)
    assert unavailable.value.not_accepted
    resend_api.state.server_errors = 1
    once = create_email_service("resend", email_api_max_attempts=1)
    with pytest.raises(EmailError) as server_error:
        once.send_email(MESSAGE)
    assert server_error.value.code is EmailErrorCode.PROVIDER_UNAVAILABLE
    assert not server_error.value.not_accepted


def test_smtp_refused_connection_and_temporary_refusal(smtp_plain: SmtpServer) -> None:
    down = create_email_service(
        "smtp", smtp_host="127.0.0.1", smtp_port=free_port(), smtp_security="none"
    )
    with pytest.raises(EmailError) as refused:
        down.send_email(MESSAGE)
    assert refused.value.not_accepted
    service = create_email_service("smtp", **smtp_plain.settings())
    smtp_plain.handler.drop.add("walker@example.com")  # 421 at the end of DATA
    with pytest.raises(EmailError) as dropped:
        service.send_email(MESSAGE)
    assert dropped.value.not_accepted
    assert smtp_plain.handler.messages == []
