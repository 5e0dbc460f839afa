"""SES events through SNS: parsing the documented samples, suppression, the Lambda handler."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from milequest.handlers.ses_events import handler
from milequest.services import override_service
from milequest.services.email import (
    EmailError,
    EmailErrorCode,
    SuppressionReason,
    create_email_service,
)
from milequest.services.email.events import (
    MalformedEvent,
    SesEventType,
    parse_ses_message,
    process_sns_event,
    sample_sns_event,
)
from milequest.services.email.mock import MockEmailService
from milequest.services.metrics import InMemorySink

from tests.runtime.email.ses_server import SesServer

FIXTURES = Path(__file__).parent / "fixtures"


def _fixture(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return data


def _sns(*messages: Any) -> dict[str, Any]:
    """The documented SNS -> Lambda event with one record per message."""
    template = _fixture("sns-lambda-event.json")["Records"][0]
    records = []
    for message in messages:
        record = copy.deepcopy(template)
        record["Sns"]["Message"] = message if isinstance(message, str) else json.dumps(message)
        records.append(record)
    return {"Records": records}


@pytest.fixture
def mock_email() -> Any:
    service = create_email_service("mock", metrics=InMemorySink())
    assert isinstance(service, MockEmailService)
    with override_service("email", service):
        yield service


EXPECTED = [
    ("event-bounce.json", SesEventType.BOUNCE, ["recipient@example.com"], "Permanent", True),
    ("event-bounce-transient.json", SesEventType.BOUNCE, ["full@example.com"], "Transient", False),
    ("event-complaint.json", SesEventType.COMPLAINT, ["recipient@example.com"], None, True),
    ("event-delivery.json", SesEventType.DELIVERY, ["recipient@example.com"], None, False),
    ("event-reject.json", SesEventType.REJECT, ["recipient@example.com"], None, False),
    (
        "event-rendering-failure.json",
        SesEventType.RENDERING_FAILURE,
        ["recipient@example.com"],
        None,
        False,
    ),
    (
        "event-delivery-delay.json",
        SesEventType.DELIVERY_DELAY,
        ["recipient@example.com"],
        None,
        False,
    ),
    ("notification-bounce.json", SesEventType.BOUNCE, ["jane@example.com"], "Permanent", True),
    ("notification-complaint.json", SesEventType.COMPLAINT, ["richard@example.com"], None, True),
    ("notification-delivery.json", SesEventType.DELIVERY, ["jane@example.com"], None, False),
]


@pytest.mark.parametrize(
    ("name", "kind", "recipients", "bounce_type", "suppresses"),
    EXPECTED,
    ids=[e[0] for e in EXPECTED],
)
def test_documented_samples_are_normalized(
    name: str, kind: SesEventType, recipients: list[str], bounce_type: str | None, suppresses: bool
) -> None:
    events = parse_ses_message(json.dumps(_fixture(name)))
    assert [e.recipient for e in events] == recipients
    for event in events:
        assert event.type is kind
        assert event.bounce_type == bounce_type
        assert event.suppresses is suppresses
        assert event.message_id
        assert event.timestamp.tzinfo is not None


def test_details_are_kept() -> None:
    [bounce] = parse_ses_message(_fixture("event-bounce.json"))
    assert bounce.bounce_subtype == "General"
    assert bounce.diagnostic == "smtp; 550 5.1.1 user unknown"
    assert bounce.configuration_set == "ConfigSet"
    assert bounce.source == "Sender Name <sender@example.com>"
    [failure] = parse_ses_message(_fixture("event-rendering-failure.json"))
    assert failure.template == "MyTemplate"
    assert failure.reason is not None
    assert "attributeName" in failure.reason
    [delay] = parse_ses_message(_fixture("event-delivery-delay.json"))
    assert delay.reason == "TransientCommunicationFailure"


@pytest.mark.parametrize(
    "message",
    [
        "not json",
        "[]",
        json.dumps({"eventType": "Bounce"}),
        json.dumps({"eventType": "Teleport", "mail": _fixture("event-bounce.json")["mail"]}),
        json.dumps({"eventType": "Bounce", "mail": _fixture("event-bounce.json")["mail"]}),
    ],
)
def test_malformed_messages_raise_malformed_event(message: str) -> None:
    with pytest.raises(MalformedEvent):
        parse_ses_message(message)


def test_handler_suppresses_permanent_bounces_and_complaints(mock_email: MockEmailService) -> None:
    event = _sns(
        _fixture("event-bounce.json"),
        _fixture("event-bounce-transient.json"),
        _fixture("notification-complaint.json"),
        _fixture("event-delivery.json"),
    )
    summary = handler(event, None)
    assert summary == {
        "events": 4,
        "suppressed": 2,
        "skipped": 0,
        "unusable": 0,
        "failed_suppressions": 0,
    }
    listed = {e.address: e.reason for e in mock_email.get_suppressed_emails()}
    assert listed == {
        "recipient@example.com": SuppressionReason.BOUNCE,
        "richard@example.com": SuppressionReason.COMPLAINT,
    }
    sink = mock_email.metrics
    assert isinstance(sink, InMemorySink)
    assert sink.total("SesEvents", EventType="bounce") == 2
    assert sink.total("SesEvents", EventType="bounce", BounceType="Transient") == 1
    assert sink.total("SesEvents", EventType="complaint") == 1


def test_malformed_records_are_skipped_not_fatal(mock_email: MockEmailService) -> None:
    event = _sns("{broken", _fixture("event-bounce.json"), {"eventType": "Nope", "mail": {}})
    event["Records"].insert(0, {"EventSource": "aws:sqs", "body": "x"})
    summary = handler(event, None)
    assert summary["skipped"] == 3
    assert summary["suppressed"] == 1
    assert [e.address for e in mock_email.get_suppressed_emails()] == ["recipient@example.com"]
    assert handler({"nothing": True}, None)["skipped"] == 1


def test_failed_suppression_fails_the_invocation_after_the_others(
    mock_email: MockEmailService, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = mock_email.suppression.add

    def flaky(entry: Any) -> None:
        if entry.address == "recipient@example.com":
            raise OSError("network down")  # the store is unreachable: transient
        original(entry)

    monkeypatch.setattr(mock_email.suppression, "add", flaky)
    event = _sns(_fixture("event-bounce.json"), _fixture("notification-complaint.json"))
    with pytest.raises(EmailError) as info:
        handler(event, None)
    assert info.value.retryable
    assert info.value.code is EmailErrorCode.PROVIDER_UNAVAILABLE
    assert "recipient@example.com" in info.value.message
    assert [e.address for e in mock_email.get_suppressed_emails()] == ["richard@example.com"]


def _bounce_for(recipient: str) -> dict[str, Any]:
    message = _fixture("event-bounce.json")
    message["bounce"]["bouncedRecipients"][0]["emailAddress"] = recipient
    return message


@pytest.mark.parametrize("recipient", ["not-an-email", "user@localhost", "a b@example.com", " "])
def test_an_unusable_recipient_is_skipped_not_retried(
    mock_email: MockEmailService, recipient: str
) -> None:
    # A permanent bounce for an address the list cannot hold: the error is permanent
    # (INVALID_EMAIL), so the handler must not make Lambda retry and dead-letter it.
    event = _sns(_bounce_for(recipient), _fixture("notification-complaint.json"))
    summary = handler(event, None)
    assert summary == {
        "events": 2,
        "suppressed": 1,
        "skipped": 0,
        "unusable": 1,
        "failed_suppressions": 0,
    }
    assert [e.address for e in mock_email.get_suppressed_emails()] == ["richard@example.com"]
    sink = mock_email.metrics
    assert isinstance(sink, InMemorySink)
    assert sink.total("EmailEventsUnusable") == 1


def _deep(levels: int) -> str:
    return "[" * levels + "]" * levels


@pytest.mark.parametrize(
    "bad",
    [
        {"Sns": None},
        {"Sns": 5},
        {"Sns": []},
        {"Sns": {"Message": None}},
        {"Sns": {"Message": 5}},
        None,
        "a string",
        17,
        [],
        {"EventSource": "aws:sns", "Sns": {"Message": _deep(5000), "Type": "Notification"}},
    ],
    ids=["null", "int", "list", "no-message", "int-message", "none", "str", "num", "empty", "deep"],
)
def test_a_hostile_record_never_stops_the_valid_one(mock_email: MockEmailService, bad: Any) -> None:
    event = _sns(_fixture("event-bounce.json"))
    event["Records"].insert(0, bad)
    event["Records"].append(bad)
    summary = handler(event, None)
    assert summary["skipped"] == 2
    assert summary["suppressed"] == 1
    assert [e.address for e in mock_email.get_suppressed_emails()] == ["recipient@example.com"]


@pytest.mark.parametrize(
    "message",
    [
        _deep(5000),
        json.dumps({"eventType": "Bounce", "mail": {"messageId": "m", "timestamp": "\ud800"}}),
        json.dumps({"eventType": ["Bounce"], "mail": {}}),
        '{"eventType": "Bounce", "mail": ' + "[" * 3000 + "]" * 3000 + "}",
        '{"n": ' + "9" * 5000 + "}",
        "NaN",
    ],
)
def test_hostile_messages_are_malformed_events(message: str) -> None:
    with pytest.raises(MalformedEvent):
        parse_ses_message(message)


def test_events_not_an_sns_event(mock_email: MockEmailService) -> None:
    for event in (None, [], "x", {"Records": None}, {"Records": {"a": 1}}):
        assert handler(event, None)["skipped"] == 1


@pytest.mark.parametrize(
    "kind", ["bounce", "complaint", "delivery", "reject", "delivery_delay", "rendering_failure"]
)
def test_sample_events_go_through_the_same_path(kind: str, mock_email: MockEmailService) -> None:
    report = process_sns_event(sample_sns_event(kind, "walker@example.com"))
    assert report.skipped == 0
    [event] = report.events
    assert event.type.value == kind
    assert event.recipient == "walker@example.com"
    suppressed = [e.address for e in mock_email.get_suppressed_emails()]
    assert suppressed == (["walker@example.com"] if kind in ("bounce", "complaint") else [])


def test_sample_transient_bounce_and_notification_format(mock_email: MockEmailService) -> None:
    transient = sample_sns_event("bounce", "a@example.com", bounce_type="Transient")
    assert handler(transient, None)["suppressed"] == 0
    note = sample_sns_event("complaint", "b@example.com", notification=True)
    assert json.loads(note["Records"][0]["Sns"]["Message"])["notificationType"] == "Complaint"
    assert handler(note, None)["suppressed"] == 1
    with pytest.raises(ValueError, match="unknown event kind"):
        sample_sns_event("open-sesame", "a@example.com")


def test_ses_provider_suppresses_with_put_suppressed_destination(
    ses_server: SesServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EMAIL_PROVIDER", "ses")
    handler(_sns(_fixture("event-bounce.json"), _fixture("event-complaint.json")), None)
    assert ses_server.state.count("PUT", "/v2/email/suppression/addresses") == 2
    reason, _ = ses_server.state.suppressed["recipient@example.com"]
    assert reason == "COMPLAINT"  # the later complaint replaced the bounce, as in SES
