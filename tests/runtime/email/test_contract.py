"""The email contract: the same behaviour from every provider (mock, ses, smtp, resend,
sendgrid), each against a real local component speaking its protocol."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from milequest.services.email import (
    Attachment,
    EmailError,
    EmailErrorCode,
    EmailMessage,
    RecipientStatus,
    SuppressionReason,
    ValidationReason,
    VerificationStatus,
    create_email_service,
)
from milequest.services.email.templates import load_template_sources
from milequest.services.health import HealthState
from milequest.services.metrics import InMemorySink

from tests.runtime.email.api_server import ApiServer
from tests.runtime.email.conftest import SENDER, SmtpServer
from tests.runtime.email.harness import (
    Harness,
    MockHarness,
    ResendHarness,
    SendGridHarness,
    SesHarness,
    SmtpHarness,
)
from tests.runtime.email.resend_server import ResendState
from tests.runtime.email.sendgrid_server import SendGridState
from tests.runtime.email.ses_server import SesServer

PROVIDERS = ["mock", "ses", "smtp", "resend", "sendgrid"]
WITH_IDENTITIES = ["mock", "ses", "resend", "sendgrid"]


def _deploy_templates(server: SesServer) -> None:
    # What the CDK app does: the packaged template files become SES templates.
    for name, src in load_template_sources().items():
        server.state.templates[name] = {"Subject": src.subject, "Html": src.html, "Text": src.text}


@pytest.fixture
def harness(
    request: pytest.FixtureRequest,
    ses_server: SesServer,
    smtp_plain: SmtpServer,
    resend_api: ApiServer[ResendState],
    sendgrid_api: ApiServer[SendGridState],
) -> Iterator[Harness]:
    sink = InMemorySink()
    name = request.param
    if name == "mock":
        yield MockHarness(create_email_service("mock", metrics=sink))
    elif name == "ses":
        _deploy_templates(ses_server)
        yield SesHarness(create_email_service("ses", metrics=sink), ses_server)
    elif name == "resend":
        yield ResendHarness(create_email_service("resend", metrics=sink), resend_api)
    elif name == "sendgrid":
        yield SendGridHarness(create_email_service("sendgrid", metrics=sink), sendgrid_api)
    else:
        service = create_email_service("smtp", metrics=sink, **smtp_plain.settings())
        yield SmtpHarness(service, smtp_plain)


def providers(names: list[str]) -> Any:
    return pytest.mark.parametrize("harness", names, indirect=True)


# -- sending ---------------------------------------------------------------------------------


@providers(PROVIDERS)
def test_seed_usage_sends_and_reports_each_recipient(harness: Harness) -> None:
    result = harness.service.send_email(
        {
            "to": "user@example.com",
            "subject": "Welcome to Mile Quest",
            "html": "<h1>Welcome!</h1>",
            "text": "Welcome!",
        }
    )
    assert result.message_id
    assert result.provider == harness.name
    # SendGrid answers 202 without per-recipient results: its recipients are "accepted".
    expected = RecipientStatus.ACCEPTED if harness.name == "sendgrid" else RecipientStatus.SENT
    assert [(r.address, r.status) for r in result.recipients] == [("user@example.com", expected)]
    assert result.accepted == ["user@example.com"]
    sent = harness.last()
    assert sent.to == ["user@example.com"]
    assert sent.subject == "Welcome to Mile Quest"
    assert sent.html is not None
    assert "<h1>Welcome!</h1>" in sent.html
    assert sent.text is not None
    assert sent.text.strip() == "Welcome!"


@providers(PROVIDERS)
def test_model_with_cc_bcc_reply_to_headers_and_utf8(harness: Harness) -> None:
    message = EmailMessage(
        to=["a@example.com"],
        cc=["Bob Builder <b@example.com>"],
        bcc=["c@example.com"],
        reply_to=["help@milequest.example"],
        subject="Grüße — 5 km 🏃",
        text="Schön, dass du dabei bist.",
        headers={"X-Campaign": "spring"},
    )
    result = harness.service.send_email(message)
    assert sorted(r.address for r in result.recipients) == [
        "a@example.com",
        "b@example.com",
        "c@example.com",
    ]
    sent = harness.last()
    assert sent.subject == "Grüße — 5 km 🏃"
    assert sent.to == ["a@example.com"]
    assert sent.cc == ["b@example.com"]
    assert sent.bcc == ["c@example.com"]
    assert sent.text is not None
    assert "Schön" in sent.text
    assert sent.headers.get("X-Campaign") == "spring"


@providers(PROVIDERS)
def test_attachments_arrive_intact(harness: Harness) -> None:
    payload = bytes(range(256)) * 4
    harness.service.send_email(
        {
            "to": "a@example.com",
            "subject": "Your route",
            "text": "attached",
            "html": "<p>attached</p>",
            "attachments": [
                Attachment(
                    filename="route.gpx", content=payload, content_type="application/gpx+xml"
                )
            ],
        }
    )
    assert harness.last().attachments == {"route.gpx": payload}


@providers(PROVIDERS)
def test_templated_email_renders_the_packaged_template(harness: Harness) -> None:
    result = harness.service.send_templated_email(
        "welcome", "user@example.com", {"name": "John Doe", "team": "Trail Blazers"}
    )
    assert result.accepted == ["user@example.com"]
    sent = harness.last()
    assert sent.subject == "Welcome to Mile Quest, John Doe!"
    assert sent.html is not None
    assert "<strong>Trail Blazers</strong>" in sent.html
    assert sent.text is not None
    assert "You have joined Trail Blazers." in sent.text


@providers(PROVIDERS)
def test_template_missing_variable_fails_before_sending(harness: Harness) -> None:
    with pytest.raises(EmailError) as info:
        harness.service.send_templated_email("team-invite", "user@example.com", {"team": "X"})
    assert info.value.code is EmailErrorCode.TEMPLATE_RENDER_FAILED
    assert "inviter" in info.value.message
    assert "invite_url" in info.value.message
    assert harness.network_calls() == 0


@providers(PROVIDERS)
def test_unknown_template(harness: Harness) -> None:
    with pytest.raises(EmailError) as info:
        harness.service.send_templated_email("no-such-template", "user@example.com", {})
    assert info.value.code is EmailErrorCode.TEMPLATE_NOT_FOUND
    assert harness.delivered() == []


# -- bad input -------------------------------------------------------------------------------

BAD_INPUT = [
    ({"to": "not-an-address", "subject": "s", "text": "t"}, EmailErrorCode.INVALID_EMAIL),
    ({"to": [], "subject": "s", "text": "t"}, EmailErrorCode.INVALID_EMAIL),
    ({"subject": "s", "text": "t"}, EmailErrorCode.INVALID_EMAIL),
    ({"to": 42, "subject": "s", "text": "t"}, EmailErrorCode.INVALID_EMAIL),
    (
        {"to": [f"u{i}@example.com" for i in range(51)], "subject": "s", "text": "t"},
        EmailErrorCode.TOO_MANY_RECIPIENTS,
    ),
    (
        {
            "to": [f"u{i}@example.com" for i in range(30)],
            "bcc": [f"b{i}@example.com" for i in range(21)],
            "subject": "s",
            "text": "t",
        },
        EmailErrorCode.TOO_MANY_RECIPIENTS,
    ),
    ({"to": "a@example.com", "text": "t"}, EmailErrorCode.INVALID_MESSAGE),
    ({"to": "a@example.com", "subject": "   ", "text": "t"}, EmailErrorCode.INVALID_MESSAGE),
    ({"to": "a@example.com", "subject": "s"}, EmailErrorCode.INVALID_MESSAGE),
    (
        {"to": "a@example.com", "subject": "Hi\r\nBcc: x@evil.test", "text": "t"},
        EmailErrorCode.INVALID_MESSAGE,
    ),
    (
        {"to": "a@example.com\nBcc: x@evil.test", "subject": "s", "text": "t"},
        EmailErrorCode.INVALID_EMAIL,
    ),
    (
        {"to": "a@example.com", "subject": "s", "text": "t", "headers": {"X-A": "1\r\nBcc: x"}},
        EmailErrorCode.INVALID_MESSAGE,
    ),
    (
        {"to": "a@example.com", "subject": "s", "text": "t", "headers": {"Bcc": "x@evil.test"}},
        EmailErrorCode.INVALID_MESSAGE,
    ),
    (
        {"to": "a@example.com", "subject": "s", "text": "t", "colour": "red"},
        EmailErrorCode.INVALID_MESSAGE,
    ),
    (
        {"to": "a@example.com", "subject": "s", "text": "x" * (31 * 1024 * 1024)},
        EmailErrorCode.MESSAGE_TOO_LARGE,
    ),
    (
        {
            "to": "a@example.com",
            "subject": "s",
            "text": "t",
            "attachments": [{"filename": "big.bin", "content": b"\0" * (30 * 1024 * 1024)}],
        },
        EmailErrorCode.MESSAGE_TOO_LARGE,
    ),
    ("just a string", EmailErrorCode.INVALID_MESSAGE),
    (["a@example.com"], EmailErrorCode.INVALID_MESSAGE),
    (None, EmailErrorCode.INVALID_MESSAGE),
]


@providers(PROVIDERS)
@pytest.mark.parametrize(("message", "code"), BAD_INPUT, ids=range(len(BAD_INPUT)))
def test_bad_input_is_refused_before_any_call(
    harness: Harness, message: Any, code: EmailErrorCode
) -> None:
    with pytest.raises(EmailError) as info:
        harness.service.send_email(message)
    assert info.value.code is code
    assert info.value.provider == harness.name
    assert type(info.value.__cause__) is not TypeError
    assert harness.network_calls() == 0


@providers(PROVIDERS)
def test_bad_arguments_of_other_methods_are_typed_errors(harness: Harness) -> None:
    service = harness.service
    with pytest.raises(EmailError) as info:
        service.suppress_email("not an address")
    assert info.value.code is EmailErrorCode.INVALID_EMAIL
    with pytest.raises(EmailError) as info:
        service.suppress_email("a@example.com", "SPAM")
    assert info.value.code is EmailErrorCode.INVALID_MESSAGE
    with pytest.raises(EmailError) as info:
        service.remove_suppressed_email(None)  # type: ignore[arg-type]
    assert info.value.code is EmailErrorCode.INVALID_EMAIL
    with pytest.raises(EmailError) as info:
        service.verify_domain("not a domain!")
    assert info.value.code is EmailErrorCode.INVALID_DOMAIN
    with pytest.raises(EmailError) as info:
        service.send_bulk_emails({"to": "a@example.com"})  # type: ignore[arg-type]
    assert info.value.code is EmailErrorCode.INVALID_MESSAGE
    with pytest.raises(EmailError) as info:
        service.send_bulk_emails([])
    assert info.value.code is EmailErrorCode.INVALID_MESSAGE
    with pytest.raises(EmailError) as info:
        service.send_templated_email("welcome", "bad", {"name": "x"})
    assert info.value.code is EmailErrorCode.INVALID_EMAIL
    assert harness.network_calls() == 0


# -- bulk ------------------------------------------------------------------------------------


@providers(PROVIDERS)
def test_bulk_reports_each_message_in_input_order(harness: Harness) -> None:
    messages: list[Any] = [
        {"to": f"user{i}@example.com", "subject": "Weekly news", "text": "Walk on!"}
        for i in range(120)
    ]
    messages.insert(7, {"to": "broken", "subject": "Weekly news", "text": "Walk on!"})
    messages.insert(60, "not a message")
    result = harness.service.send_bulk_emails(messages)
    assert result.total == 122
    assert [r.index for r in result.results] == list(range(122))
    failed = {r.index: r.error.code for r in result.failures() if r.error}
    assert failed == {7: EmailErrorCode.INVALID_EMAIL, 60: EmailErrorCode.INVALID_MESSAGE}
    assert result.succeeded == 120
    assert result.results[0].recipients == ("user0@example.com",)
    assert all(r.message_id for r in result.results if r.ok)
    delivered = sorted(a for d in harness.delivered() for a in d.to)
    assert delivered == sorted(f"user{i}@example.com" for i in range(120))


@providers(PROVIDERS)
def test_bulk_fills_each_provider_call_to_its_documented_maximum(harness: Harness) -> None:
    # Two full calls and one more message tell a chunk size of 50 from 49 or 51.
    size = harness.service.bulk_batch_size
    expected = {"mock": 50, "ses": 50, "smtp": 50, "resend": 100, "sendgrid": 1000}
    assert size == expected[harness.name]
    messages = [
        {"to": f"u{i}@example.com", "subject": "Weekly news", "text": "Walk on!"}
        for i in range(2 * size + 1)
    ]
    result = harness.service.send_bulk_emails(messages)
    assert result.succeeded == 2 * size + 1
    assert sorted(harness.bulk_sizes()) == [1, size, size]


@providers(["mock", "ses"])
def test_bulk_groups_only_messages_one_call_can_carry(harness: Harness) -> None:
    same = {"subject": "News", "text": "Walk on!"}
    result = harness.service.send_bulk_emails(
        [
            {**same, "to": "a@example.com", "tags": {"campaign": "spring"}},
            {**same, "to": "b@example.com", "tags": {"campaign": "autumn"}},
            {**same, "to": "e@example.com", "tags": {"campaign": "spring"}},
            {"to": "c@example.com", "subject": "s", "text": "literal {{braces}}"},
            {
                **same,
                "to": "d@example.com",
                "attachments": [{"filename": "a.txt", "content": b"x"}],
            },
        ]
    )
    assert result.succeeded == 5
    # SES shares a call per tag set; braces (SES would render them) and attachments go alone.
    assert sorted(harness.bulk_sizes()) == [1, 1, 1, 2]


@providers(PROVIDERS)
def test_bulk_templated_messages_get_their_own_data(harness: Harness) -> None:
    names = ["Ann", "Bo", "Cy"]
    result = harness.service.send_bulk_emails(
        [
            {"to": f"{n.lower()}@example.com", "template": "welcome", "template_data": {"name": n}}
            for n in names
        ]
    )
    assert result.succeeded == 3
    subjects = {d.to[0]: d.subject for d in harness.delivered()}
    assert subjects == {f"{n.lower()}@example.com": f"Welcome to Mile Quest, {n}!" for n in names}


@providers(PROVIDERS)
def test_bulk_where_every_message_fails_raises(harness: Harness) -> None:
    with pytest.raises(EmailError) as info:
        harness.service.send_bulk_emails([{"to": "x", "subject": "s", "text": "t"}] * 3)
    assert info.value.code is EmailErrorCode.INVALID_EMAIL
    assert "all 3 messages failed" in info.value.message


@providers(PROVIDERS)
def test_iter_bulk_streams_results(harness: Harness) -> None:
    stream = harness.service.iter_bulk_emails(
        {"to": f"u{i}@example.com", "subject": "s", "text": "t"} for i in range(10)
    )
    indexes = [item.index for item in stream if item.ok]
    assert indexes == list(range(10))


# -- suppression and validation ------------------------------------------------------------


@providers(PROVIDERS)
def test_suppression_list_round_trip(harness: Harness) -> None:
    service = harness.service
    service.suppress_email("Gone@Example.com", SuppressionReason.BOUNCE)
    service.suppress_email("angry@example.com", "complaint")
    listed = {e.address: e.reason for e in service.get_suppressed_emails()}
    assert listed == {
        "gone@example.com": SuppressionReason.BOUNCE,
        "angry@example.com": SuppressionReason.COMPLAINT,
    }
    check = service.validate_email("gone@example.com")
    assert (check.valid, check.reason) == (False, ValidationReason.SUPPRESSED)

    mixed = service.send_email(
        {"to": ["gone@example.com", "ok@example.com"], "subject": "s", "text": "t"}
    )
    assert {r.address: r.status for r in mixed.recipients} == {
        "ok@example.com": harness.service.recipient_status,
        "gone@example.com": RecipientStatus.SUPPRESSED,
    }
    assert harness.last().recipients == ["ok@example.com"]

    with pytest.raises(EmailError) as info:
        service.send_email({"to": "gone@example.com", "subject": "s", "text": "t"})
    assert info.value.code is EmailErrorCode.SUPPRESSED

    assert service.remove_suppressed_email("gone@example.com") is True
    assert service.remove_suppressed_email("gone@example.com") is False
    assert service.validate_email("gone@example.com").valid
    assert service.send_email({"to": "gone@example.com", "subject": "s", "text": "t"}).accepted


@providers(PROVIDERS)
def test_validate_email_syntax(harness: Harness) -> None:
    good = harness.service.validate_email("Walker <walker@EXAMPLE.com>")
    assert (good.valid, good.reason, good.normalized) == (
        True,
        ValidationReason.OK,
        "walker@example.com",
    )
    for bad in ["walker", "walker@", "a b@example.com", "", "x@exa mple.com"]:
        result = harness.service.validate_email(bad)
        assert (result.valid, result.reason) == (False, ValidationReason.INVALID_SYNTAX), bad


# -- identities ------------------------------------------------------------------------------


@providers(WITH_IDENTITIES)
def test_unverified_sender_is_refused(harness: Harness) -> None:
    with pytest.raises(EmailError) as info:
        harness.service.send_email(
            {
                "from": "someone@unverified.example",
                "to": "a@example.com",
                "subject": "s",
                "text": "t",
            }
        )
    assert info.value.code is EmailErrorCode.NOT_VERIFIED
    assert harness.delivered() == []


def _verified_sender(harness: Harness, address: str) -> list[str]:
    """Register ``address`` as a verified sender where the provider has such identities;
    what ``get_verified_emails`` must then answer."""
    if harness.name == "mock":
        harness.service.add_verified_email(address)  # type: ignore[attr-defined]
        return sorted([SENDER, address])
    if harness.name == "ses":
        harness.server.state.verify(address)  # type: ignore[attr-defined]
        return [address]
    if harness.name == "sendgrid":
        senders = harness.server.state.senders  # type: ignore[attr-defined]
        senders.append({"id": 1, "from_email": address, "verified": True})
        senders.append({"id": 2, "from_email": "pending@trails.example", "verified": False})
        return [address]
    if harness.name == "resend":
        return []  # Resend verifies domains only
    return [SENDER]  # SMTP: the configured sender


@providers(PROVIDERS)
def test_verified_identities_are_what_the_provider_verified(harness: Harness) -> None:
    expected = _verified_sender(harness, "walker@trails.example")
    assert harness.service.get_verified_emails() == expected
    assert harness.service.get_verified_domains() == ["milequest.example"]


@providers(WITH_IDENTITIES)
def test_verify_domain_gives_dkim_and_return_path_records(harness: Harness) -> None:
    service = harness.service
    first = service.verify_domain("Walkers.Example")
    assert first.domain == "walkers.example"
    assert first.status is VerificationStatus.PENDING
    # What each provider asks its customers to publish (kinds and purposes).
    expected = {
        "mock": [("CNAME", "dkim")] * 3 + [("MX", "return_path"), ("TXT", "spf")],
        "ses": [("CNAME", "dkim")] * 3 + [("MX", "return_path"), ("TXT", "spf")],
        "resend": [("MX", "return_path"), ("TXT", "spf"), ("TXT", "dkim")],
        "sendgrid": [("CNAME", "return_path"), ("CNAME", "dkim"), ("CNAME", "dkim")],
    }
    assert [(r.type, r.purpose) for r in first.records] == expected[harness.name]
    for record in first.records:
        assert record.name.endswith(".walkers.example")
        assert record.value
    again = service.verify_domain("walkers.example")  # idempotent
    assert again.records == first.records
    assert "walkers.example" not in service.get_verified_domains()


@providers(["smtp"])
def test_verify_domain_is_not_supported_without_an_identity_api(harness: Harness) -> None:
    with pytest.raises(EmailError) as info:
        harness.service.verify_domain("walkers.example")
    assert info.value.code is EmailErrorCode.NOT_SUPPORTED


@providers(WITH_IDENTITIES)
def test_an_unverified_sending_domain_is_unhealthy(harness: Harness) -> None:
    if harness.name == "mock":  # the mock counts its sender as verified until told otherwise
        unverified = create_email_service("mock", default_from_email="noreply@unverified.example")
        unverified.verified_domains.clear()  # type: ignore[attr-defined]
        unverified.verified_emails.clear()  # type: ignore[attr-defined]
    else:
        unverified = create_email_service(
            harness.name, default_from_email="noreply@unverified.example"
        )
    health = unverified.health_check()
    assert health.status is HealthState.UNHEALTHY
    assert health.details["sender_verified"] is False
    assert "unverified.example" in health.details["error"]


# -- cross-cutting ---------------------------------------------------------------------------


@providers(PROVIDERS)
def test_health_and_metrics(harness: Harness) -> None:
    health = harness.service.health_check()
    assert health.healthy, health.details
    assert health.details["sender_verified"] is True
    assert (health.service, health.provider) == ("email", harness.name)
    harness.service.send_email({"to": "a@example.com", "subject": "s", "text": "t"})
    with pytest.raises(EmailError):
        harness.service.send_email({"to": "bad", "subject": "s", "text": "t"})
    sink = harness.service.metrics
    assert isinstance(sink, InMemorySink)
    assert sink.total("Calls", Operation="send_email", Provider=harness.name) == 2
    assert sink.total("Errors", Operation="send_email") == 1


@providers(PROVIDERS)
def test_default_sender_is_used(harness: Harness) -> None:
    harness.service.send_email({"to": "a@example.com", "subject": "s", "text": "t"})
    assert harness.service.default_from == SENDER
