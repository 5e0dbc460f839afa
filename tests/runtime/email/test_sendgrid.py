"""The SendGrid provider against a local server speaking SendGrid's v3 Web API."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from milequest.services.email import (
    EmailError,
    EmailErrorCode,
    RecipientStatus,
    SuppressionReason,
    VerificationStatus,
    create_email_service,
)
from milequest.services.email.sendgrid import group_category

from tests.runtime.email.api_server import ApiServer
from tests.runtime.email.conftest import SENDER
from tests.runtime.email.sendgrid_server import SendGridState

Server = ApiServer[SendGridState]
UNSUBSCRIBE = {
    "email_unsubscribe_url": "https://api.milequest.example/email/unsubscribe",
    "email_unsubscribe_secret": "s3cret",
}


def _message(to: str = "a@example.com", **extra: Any) -> dict[str, Any]:
    return {"to": to, "subject": "Hello", "text": "Walk on!", **extra}


def test_request_shape_auth_and_202_reported_as_accepted(sendgrid_api: Server) -> None:
    service = create_email_service("sendgrid")
    result = service.send_email(
        {
            "to": "Ann <ann@example.com>",
            "cc": "bo@example.com",
            "reply_to": "Help <help@milequest.example>",
            "subject": "Your route",
            "html": "<p>Hi</p>",
            "text": "Hi",
            "headers": {"X-Campaign": "spring"},
            "tags": {"campaign": "spring"},
            "attachments": [{"filename": "r.gpx", "content": b"<gpx/>"}],
        }
    )
    [request] = sendgrid_api.state.calls("POST", "/v3/mail/send")
    assert request.headers["authorization"] == "Bearer SG.test-key.0123456789"
    assert request.body == {
        "personalizations": [
            {
                "to": [{"email": "ann@example.com", "name": "Ann"}],
                "cc": [{"email": "bo@example.com"}],
                "custom_args": {"campaign": "spring"},
            }
        ],
        "from": {"email": SENDER},
        "subject": "Your route",
        "content": [
            {"type": "text/plain", "value": "Hi"},
            {"type": "text/html", "value": "<p>Hi</p>"},
        ],
        "reply_to_list": [{"email": "help@milequest.example", "name": "Help"}],
        "headers": {"X-Campaign": "spring"},
        "attachments": [
            {
                "content": base64.b64encode(b"<gpx/>").decode(),
                "filename": "r.gpx",
                "type": "application/octet-stream",
                "disposition": "attachment",
            }
        ],
    }
    assert result.message_id == sendgrid_api.state.mails[0]["_id"]
    # SendGrid says nothing per recipient: they are accepted, outcomes come as events.
    assert [(r.address, r.status) for r in result.recipients] == [
        ("ann@example.com", RecipientStatus.ACCEPTED),
        ("bo@example.com", RecipientStatus.ACCEPTED),
    ]
    assert result.accepted == ["ann@example.com", "bo@example.com"]


def test_rate_limited_then_sent_after_the_reset_header(
    sendgrid_api: Server, no_waits: list[float]
) -> None:
    sendgrid_api.state.throttle = 1
    sendgrid_api.state.reset_in = 7
    create_email_service("sendgrid").send_email(_message())
    [wait] = no_waits
    assert 5.0 < wait <= 7.0  # X-RateLimit-Reset is an epoch second
    assert sendgrid_api.state.count("POST", "/v3/mail/send") == 2
    assert len(sendgrid_api.state.mails) == 1


def test_a_send_answered_5xx_is_not_retried(sendgrid_api: Server, no_waits: list[float]) -> None:
    sendgrid_api.state.server_errors = 1
    with pytest.raises(EmailError) as info:
        create_email_service("sendgrid").send_email(_message())
    assert info.value.code is EmailErrorCode.PROVIDER_UNAVAILABLE
    assert info.value.retryable
    assert sendgrid_api.state.count("POST", "/v3/mail/send") == 1
    assert no_waits == []


def test_an_unverified_sender_and_a_wrong_key(sendgrid_api: Server) -> None:
    with pytest.raises(EmailError) as info:
        create_email_service("sendgrid").send_email(_message(**{"from": "x@elsewhere.example"}))
    assert info.value.code is EmailErrorCode.NOT_VERIFIED
    with pytest.raises(EmailError) as info:
        create_email_service("sendgrid", sendgrid_api_key="SG.wrong").send_email(_message())
    assert info.value.code is EmailErrorCode.CONFIGURATION


def test_over_30_mb_is_refused_before_the_call(sendgrid_api: Server) -> None:
    big = {"filename": "big.bin", "content": b"\0" * (25 * 1024 * 1024)}  # ~34 MB encoded
    with pytest.raises(EmailError) as info:
        create_email_service("sendgrid").send_email(_message(attachments=[big]))
    assert info.value.code is EmailErrorCode.MESSAGE_TOO_LARGE
    assert f"sendgrid takes at most {30 * 1024 * 1024}" in info.value.message
    assert sendgrid_api.state.count("POST", "/v3/mail/send") == 0


# -- bulk through personalizations --------------------------------------------------------------


def test_bulk_requests_respect_sendgrids_limits(sendgrid_api: Server) -> None:
    service = create_email_service("sendgrid")
    # 40 messages of 50 recipients each: 1,000 recipients per request at most.
    wide = [
        {"to": [f"r{m}-{i}@example.com" for i in range(50)], "subject": "s", "text": "t"}
        for m in range(40)
    ]
    assert service.send_bulk_emails(wide).succeeded == 40
    assert sendgrid_api.state.batch_sizes() == [20, 20]
    sendgrid_api.state.mails.clear()
    # The same address twice may not share a request.
    twice = [
        _message("same@example.com"),
        _message("other@example.com"),
        _message("same@example.com"),
    ]
    assert service.send_bulk_emails(twice).succeeded == 3
    assert sendgrid_api.state.batch_sizes() == [2, 1]


def test_per_message_subjects_and_unsubscribe_headers_go_per_personalization(
    sendgrid_api: Server,
) -> None:
    service = create_email_service("sendgrid", **UNSUBSCRIBE)
    data = {"total_miles": 3, "activities": []}
    messages = [
        {"to": "ann@example.com", "subject": "Hi Ann", "text": "Same body", "category": "news"},
        {"to": "bo@example.com", "subject": "Hi Bo", "text": "Same body", "category": "news"},
        {
            "to": "cy@example.com",
            "template": "weekly-summary",
            "template_data": {"name": "Cy", **data},
        },
    ]
    assert service.send_bulk_emails(messages).succeeded == 3
    # Two requests, sent concurrently: in either order.
    [news] = [m for m in sendgrid_api.state.mails if m.get("categories") == ["news"]]
    [weekly] = [m for m in sendgrid_api.state.mails if m is not news]
    assert news["categories"] == ["news"]
    assert news["tracking_settings"] == {"subscription_tracking": {"enable": False}}
    subjects = [p.get("subject", news["subject"]) for p in news["personalizations"]]
    assert subjects == ["Hi Ann", "Hi Bo"]
    links = [p["headers"]["List-Unsubscribe"] for p in news["personalizations"]]
    assert len(set(links)) == 2
    for person in news["personalizations"]:
        assert person["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert weekly["categories"] == ["weekly-summary"]


# -- domains, senders, suppressions -------------------------------------------------------------


def test_verify_domain_uses_domain_authentication(sendgrid_api: Server) -> None:
    service = create_email_service("sendgrid")
    verification = service.verify_domain("walkers.example")
    assert verification.status is VerificationStatus.PENDING
    assert [(r.type, r.name, r.value, r.purpose) for r in verification.records] == [
        ("CNAME", "em1002.walkers.example", "u1234567.wl.sendgrid.net", "return_path"),
        ("CNAME", "s1._domainkey.walkers.example", "s1.domainkey.u1234567.wl.sendgrid.net", "dkim"),
        ("CNAME", "s2._domainkey.walkers.example", "s2.domainkey.u1234567.wl.sendgrid.net", "dkim"),
    ]
    assert sendgrid_api.state.count("POST", "/v3/whitelabel/domains/2/validate") == 1
    assert service.verify_domain("walkers.example").records == verification.records
    assert sendgrid_api.state.count("POST", "/v3/whitelabel/domains") == 1


def test_import_maps_every_sendgrid_list(sendgrid_api: Server) -> None:
    lists = sendgrid_api.state.suppressions
    lists["/suppression/bounces"] = [
        {"email": f"b{i}@example.com", "created": 1_700_000_000} for i in range(600)
    ]  # two pages of 500
    lists["/suppression/blocks"] = [{"email": "blocked@example.com", "created": 1}]
    lists["/suppression/invalid_emails"] = [{"email": "invalid@example.com", "created": 1}]
    lists["/suppression/spam_reports"] = [{"email": "spam@example.com", "created": 1}]
    lists["/suppression/unsubscribes"] = [{"email": "left@example.com", "created": 1}]
    sendgrid_api.state.group_suppressions = [
        {"email": "grp@example.com", "group_id": 7, "group_name": "Weekly Summary", "created_at": 1}
    ]
    service = create_email_service("sendgrid")
    assert service.import_provider_suppressions() == 605
    listed = {(e.address, e.reason, e.category) for e in service.get_suppressed_emails()}
    assert ("b599@example.com", SuppressionReason.BOUNCE, None) in listed
    assert {
        ("blocked@example.com", SuppressionReason.BOUNCE, None),
        ("invalid@example.com", SuppressionReason.BOUNCE, None),
        ("spam@example.com", SuppressionReason.COMPLAINT, None),
        ("left@example.com", SuppressionReason.UNSUBSCRIBE, "*"),
        ("grp@example.com", SuppressionReason.UNSUBSCRIBE, "sendgrid-group-7"),
    } <= listed
    pages = sendgrid_api.state.calls("GET", "/v3/suppression/bounces")
    assert [p.query["offset"] for p in pages] == ["0", "500"]


def test_group_categories() -> None:
    assert group_category(7) == "sendgrid-group-7"
    assert group_category("a b") == "sendgrid-group-a-b"
