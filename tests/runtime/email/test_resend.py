"""The Resend provider against a local server speaking Resend's documented API."""

from __future__ import annotations

import base64
import uuid
from typing import Any

import pytest
from milequest.services.email import (
    EmailError,
    EmailErrorCode,
    SuppressionReason,
    VerificationStatus,
    create_email_service,
)

from tests.conftest import free_port
from tests.runtime.email.api_server import ApiServer
from tests.runtime.email.conftest import SENDER
from tests.runtime.email.resend_server import ResendState

Server = ApiServer[ResendState]


def _message(to: str = "a@example.com", **extra: Any) -> dict[str, Any]:
    return {"to": to, "subject": "Hello", "text": "Walk on!", **extra}


def test_request_shape_and_auth(resend_api: Server) -> None:
    service = create_email_service("resend")
    result = service.send_email(
        {
            "to": "Ann <ann@example.com>",
            "cc": "bo@example.com",
            "bcc": "cy@example.com",
            "reply_to": "help@milequest.example",
            "subject": "Your route",
            "html": "<p>Hi</p>",
            "text": "Hi",
            "headers": {"X-Campaign": "spring"},
            "tags": {"campaign": "spring"},
            "attachments": [{"filename": "r.gpx", "content": b"<gpx/>", "content_id": "route"}],
        }
    )
    [request] = resend_api.state.calls("POST", "/emails")
    assert request.headers["authorization"] == "Bearer re_test_0123456789"
    assert request.headers["content-type"] == "application/json"
    uuid.UUID(request.headers["idempotency-key"])
    assert request.body == {
        "from": SENDER,
        "to": ["Ann <ann@example.com>"],
        "cc": ["bo@example.com"],
        "bcc": ["cy@example.com"],
        "reply_to": ["help@milequest.example"],
        "subject": "Your route",
        "html": "<p>Hi</p>",
        "text": "Hi",
        "headers": {"X-Campaign": "spring"},
        "tags": [{"name": "campaign", "value": "spring"}],
        "attachments": [
            {
                "filename": "r.gpx",
                "content": base64.b64encode(b"<gpx/>").decode(),
                "content_type": "application/octet-stream",
                "content_id": "route",
            }
        ],
    }
    assert result.message_id == resend_api.state.sent[0]["id"]


def test_rate_limited_then_sent_after_the_retry_after_header(
    resend_api: Server, no_waits: list[float]
) -> None:
    resend_api.state.throttle = 2
    resend_api.state.retry_after = "3"
    result = create_email_service("resend").send_email(_message())
    assert result.accepted == ["a@example.com"]
    assert no_waits == [3.0, 3.0]
    assert resend_api.state.count("POST", "/emails") == 3
    assert len(resend_api.state.sent) == 1


def test_a_wait_past_the_deadline_is_not_made(resend_api: Server, no_waits: list[float]) -> None:
    resend_api.state.throttle = 1
    resend_api.state.retry_after = "60"
    with pytest.raises(EmailError) as info:
        create_email_service("resend").send_email(_message())
    assert info.value.code is EmailErrorCode.RATE_LIMITED
    assert info.value.retryable
    assert "EMAIL_CALL_TIMEOUT" in info.value.message
    assert no_waits == []
    assert resend_api.state.count("POST", "/emails") == 1


def test_quota_exceeded_is_not_retried(resend_api: Server, no_waits: list[float]) -> None:
    resend_api.state.daily_quota_exceeded = True
    with pytest.raises(EmailError) as info:
        create_email_service("resend").send_email(_message())
    assert info.value.code is EmailErrorCode.QUOTA_EXCEEDED
    assert not info.value.retryable
    assert resend_api.state.count("POST", "/emails") == 1


def test_a_5xx_is_retried_with_the_same_idempotency_key_and_sent_once(
    resend_api: Server, no_waits: list[float]
) -> None:
    resend_api.state.server_errors = 1  # accepted, then answered 500
    result = create_email_service("resend").send_email(_message())
    first, second = resend_api.state.calls("POST", "/emails")
    assert first.headers["idempotency-key"] == second.headers["idempotency-key"]
    assert len(resend_api.state.sent) == 1
    assert result.message_id == resend_api.state.sent[0]["id"]
    assert no_waits == [0.25]


def test_persistent_5xx_is_provider_unavailable(resend_api: Server, no_waits: list[float]) -> None:
    resend_api.state.unavailable = 10
    with pytest.raises(EmailError) as info:
        create_email_service("resend", email_api_max_attempts=3).send_email(_message())
    assert info.value.code is EmailErrorCode.PROVIDER_UNAVAILABLE
    assert info.value.retryable
    assert resend_api.state.count("POST", "/emails") == 3
    assert no_waits == [0.25, 0.5]
    assert resend_api.state.sent == []


def test_a_refused_key_or_sender_is_refused_without_retry(resend_api: Server) -> None:
    with pytest.raises(EmailError) as info:
        create_email_service("resend", resend_api_key="re_wrong").send_email(_message())
    assert info.value.code is EmailErrorCode.CONFIGURATION
    assert not info.value.retryable
    with pytest.raises(EmailError) as info:
        create_email_service("resend").send_email(_message(**{"from": "x@elsewhere.example"}))
    assert info.value.code is EmailErrorCode.NOT_VERIFIED
    assert resend_api.state.count("POST", "/emails") == 2


def test_an_unreachable_api_is_provider_unavailable(no_waits: list[float]) -> None:
    service = create_email_service(
        "resend", resend_api_key="re_x", resend_api_url=f"http://127.0.0.1:{free_port()}"
    )
    with pytest.raises(EmailError) as info:
        service.send_email(_message())
    assert info.value.code is EmailErrorCode.PROVIDER_UNAVAILABLE
    assert info.value.retryable


# -- batches -------------------------------------------------------------------------------


def _bulk(*recipients: str) -> list[dict[str, Any]]:
    return [_message(r) for r in recipients]


def test_a_strict_batch_is_refused_whole_and_reported_per_message(resend_api: Server) -> None:
    resend_api.state.invalid_recipients = {"bad@example.com"}
    service = create_email_service("resend", resend_batch_validation="strict")
    messages = [
        *_bulk("a@example.com", "bad@example.com", "c@example.com"),
        _message("d@example.com", attachments=[{"filename": "a.txt", "content": b"x"}]),
    ]
    result = service.send_bulk_emails(messages)
    [batch] = resend_api.state.calls("POST", "/emails/batch")
    assert batch.headers["x-batch-validation"] == "strict"
    assert len(batch.body) == 3
    codes = [r.error.code if r.error else None for r in result.results]
    assert codes == [EmailErrorCode.INVALID_MESSAGE] * 3 + [None]
    assert [s["to"] for s in resend_api.state.sent] == [["d@example.com"]]


def test_a_permissive_batch_sends_the_valid_emails(resend_api: Server) -> None:
    resend_api.state.invalid_recipients = {"bad@example.com"}
    service = create_email_service("resend")  # permissive is the default
    result = service.send_bulk_emails(_bulk("a@example.com", "bad@example.com", "c@example.com"))
    [batch] = resend_api.state.calls("POST", "/emails/batch")
    assert batch.headers["x-batch-validation"] == "permissive"
    ok, refused, last = result.results
    sent_ids = {s["to"][0]: s["id"] for s in resend_api.state.sent}
    assert (ok.ok, ok.message_id) == (True, sent_ids["a@example.com"])
    assert (last.ok, last.message_id) == (True, sent_ids["c@example.com"])
    assert not refused.ok
    assert refused.error is not None
    assert refused.error.code is EmailErrorCode.MESSAGE_REJECTED
    assert "bad@example.com" in refused.error.message


def test_batches_carry_different_content_but_no_attachments(resend_api: Server) -> None:
    messages = [
        _message("a@example.com"),
        {"to": "b@example.com", "subject": "Other", "html": "<p>x</p>"},
        _message("c@example.com", attachments=[{"filename": "a.txt", "content": b"x"}]),
    ]
    result = create_email_service("resend").send_bulk_emails(messages)
    assert result.succeeded == 3
    [batch] = resend_api.state.calls("POST", "/emails/batch")
    assert [e["to"] for e in batch.body] == [["a@example.com"], ["b@example.com"]]
    [single] = resend_api.state.calls("POST", "/emails")
    assert single.body["attachments"][0]["filename"] == "a.txt"


# -- domains and suppressions ----------------------------------------------------------------


def test_verify_domain_returns_resends_records_as_full_names(resend_api: Server) -> None:
    service = create_email_service("resend")
    verification = service.verify_domain("walkers.example")
    assert verification.status is VerificationStatus.PENDING
    assert [(r.type, r.name, r.purpose, r.priority) for r in verification.records] == [
        ("MX", "send.walkers.example", "return_path", 10),
        ("TXT", "send.walkers.example", "spf", None),
        ("TXT", "resend._domainkey.walkers.example", "dkim", None),
    ]
    assert verification.records[1].value == '"v=spf1 include:amazonses.com ~all"'
    domain_id = resend_api.state.domains["walkers.example"]["id"]
    assert resend_api.state.count("POST", f"/domains/{domain_id}/verify") == 1
    assert service.verify_domain("walkers.example").records == verification.records
    assert resend_api.state.count("POST", "/domains") == 1


def test_import_copies_resends_suppressions(resend_api: Server) -> None:
    stamp = "2025-01-02T03:04:05Z"
    resend_api.state.suppressions = [
        {"id": "1", "email": "Gone@Example.com", "origin": "bounce", "created_at": stamp},
        {"id": "2", "email": "angry@example.com", "origin": "complaint", "created_at": "bad"},
    ]
    service = create_email_service("resend")
    assert service.import_provider_suppressions() == 2
    listed = {e.address: (e.reason, e.source) for e in service.get_suppressed_emails()}
    assert listed == {
        "gone@example.com": (SuppressionReason.BOUNCE, "resend"),
        "angry@example.com": (SuppressionReason.COMPLAINT, "resend"),
    }
    [gone] = [e for e in service.get_suppressed_emails() if e.address == "gone@example.com"]
    assert gone.last_update.isoformat() == "2025-01-02T03:04:05+00:00"
