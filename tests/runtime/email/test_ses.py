"""The SES provider: moto for what moto implements, the local SES v2 endpoint and botocore's
Stubber for the rest (bulk, templates, suppression, GetAccount, throttling)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from email import message_from_string, policy
from typing import Any

import pytest
from botocore.stub import Stubber
from milequest.services.email import (
    EmailError,
    EmailErrorCode,
    RecipientStatus,
    create_email_service,
)
from milequest.services.email.ses import SesEmailService, create_sesv2_client
from milequest.services.email.settings import EmailSettings
from milequest.services.email.templates import load_template_sources
from milequest.services.health import HealthState
from milequest.services.metrics import InMemorySink
from moto import mock_aws
from moto.core import DEFAULT_ACCOUNT_ID

from tests.runtime.email.conftest import SENDER
from tests.runtime.email.ses_server import SesServer

OUTBOUND = ("POST", "/v2/email/outbound-emails")
BULK = ("POST", "/v2/email/outbound-bulk-emails")
ACCOUNT = ("GET", "/v2/email/account")


def _deploy(server: SesServer, prefix: str = "") -> None:
    for name, src in load_template_sources().items():
        server.state.templates[prefix + name] = {
            "Subject": src.subject,
            "Html": src.html,
            "Text": src.text,
        }


# -- moto --------------------------------------------------------------------------------------


@pytest.fixture
def moto_ses() -> Iterator[Any]:
    with mock_aws():
        from moto.ses.models import ses_backends

        service = create_email_service("ses")
        assert isinstance(service, SesEmailService)
        service.client.create_email_identity(EmailIdentity="milequest.example")
        yield service, ses_backends[DEFAULT_ACCOUNT_ID]["us-east-1"]


def test_moto_send_email_simple(moto_ses: Any) -> None:
    service, backend = moto_ses
    result = service.send_email(
        {"to": ["a@example.com", "b@example.com"], "subject": "Hello", "html": "<b>Hi</b>"}
    )
    assert result.message_id
    assert [r.status for r in result.recipients] == [RecipientStatus.SENT] * 2
    sent = backend.sent_messages[-1]
    assert sent.source == SENDER
    assert sent.subject == "Hello"
    assert sent.destinations["ToAddresses"] == ["a@example.com", "b@example.com"]


def test_moto_attachments_go_as_raw_mime(moto_ses: Any) -> None:
    service, backend = moto_ses
    service.send_email(
        {
            "to": "a@example.com",
            "bcc": "hidden@example.com",
            "subject": "Résumé attached",
            "text": "See attachment",
            "attachments": [{"filename": "notes.txt", "content": b"line one\n"}],
        }
    )
    raw = backend.sent_messages[-1]
    parsed = message_from_string(raw.raw_data, policy=policy.default)
    assert parsed["Subject"] == "Résumé attached"
    assert "Bcc" not in parsed
    assert "hidden@example.com" in raw.destinations
    [attachment] = list(parsed.iter_attachments())
    assert attachment.get_filename() == "notes.txt"
    assert attachment.get_payload(decode=True) == b"line one\n"


def test_moto_unverified_sender_maps_to_not_verified(moto_ses: Any) -> None:
    service, _ = moto_ses
    with pytest.raises(EmailError) as info:
        service.send_email(
            {"from": "x@elsewhere.example", "to": "a@example.com", "subject": "s", "text": "t"}
        )
    assert info.value.code is EmailErrorCode.NOT_VERIFIED
    assert info.value.cause is not None


def test_moto_identities(moto_ses: Any) -> None:
    service, _ = moto_ses
    service.client.create_email_identity(EmailIdentity="Walker@Example.net")
    assert service.get_verified_domains() == ["milequest.example"]
    assert service.get_verified_emails() == ["walker@example.net"]


# -- the local SES v2 endpoint ----------------------------------------------------------------


def test_endpoint_variable_is_honoured(ses_server: SesServer) -> None:
    service = create_email_service("ses")
    service.send_email({"to": "a@example.com", "subject": "s", "text": "t"})
    assert ses_server.state.count(*OUTBOUND) == 1


def test_throttled_twice_then_sent(ses_server: SesServer) -> None:
    ses_server.state.throttle_sends = 2
    service = create_email_service("ses")
    result = service.send_email({"to": "a@example.com", "subject": "s", "text": "t"})
    assert result.accepted == ["a@example.com"]
    assert ses_server.state.count(*OUTBOUND) == 3


def test_always_throttled_surfaces_rate_limited(ses_server: SesServer) -> None:
    ses_server.state.throttle_sends = -1
    service = create_email_service("ses", ses_max_attempts=3)
    with pytest.raises(EmailError) as info:
        service.send_email({"to": "a@example.com", "subject": "s", "text": "t"})
    assert info.value.code is EmailErrorCode.RATE_LIMITED
    assert info.value.retryable
    assert ses_server.state.count(*OUTBOUND) == 3


def test_bulk_call_throttled_then_succeeds(ses_server: SesServer) -> None:
    ses_server.state.throttle_sends = 2
    service = create_email_service("ses")
    result = service.send_bulk_emails(
        [{"to": f"u{i}@example.com", "subject": "s", "text": "t"} for i in range(60)]
    )
    assert result.succeeded == 60
    assert ses_server.state.count(*BULK) == 2 + 2


def test_bulk_groups_by_content_in_chunks_of_50(ses_server: SesServer) -> None:
    _deploy(ses_server)
    service = create_email_service("ses")
    messages: list[dict[str, Any]] = []
    for i in range(1000):
        if i % 4 == 0:
            messages.append(
                {
                    "to": f"t{i}@example.com",
                    "template": "welcome",
                    "template_data": {"name": str(i)},
                }
            )
        else:
            messages.append({"to": f"u{i}@example.com", "subject": "News", "text": "Walk!"})
    result = service.send_bulk_emails(messages)
    assert result.succeeded == 1000
    # 250 templated (5 calls) + 750 same-content (15 calls)
    assert ses_server.state.count(*BULK) == 20
    assert ses_server.state.count(*OUTBOUND) == 0
    templated = [s for s in ses_server.state.sent if s["Template"].get("TemplateName")]
    assert len(templated) == 250
    data = [
        json.loads(
            s["Entry"]["ReplacementEmailContent"]["ReplacementTemplate"]["ReplacementTemplateData"]
        )
        for s in templated
    ]
    assert sorted(int(d["name"]) for d in data) == list(range(0, 1000, 4))


def test_bulk_entry_statuses_are_mapped_per_message(ses_server: SesServer) -> None:
    state = ses_server.state
    state.entry_statuses = {
        "u1@example.com": ["MESSAGE_REJECTED"],
        "u2@example.com": ["ACCOUNT_THROTTLED"],  # retried, then SUCCESS
        "u3@example.com": ["ACCOUNT_DAILY_QUOTA_EXCEEDED"],
        "u4@example.com": ["MAIL_FROM_DOMAIN_NOT_VERIFIED"],
    }
    service = create_email_service("ses")
    result = service.send_bulk_emails(
        [{"to": f"u{i}@example.com", "subject": "s", "text": "t"} for i in range(6)]
    )
    codes = {r.index: (r.error.code if r.error else None) for r in result.results}
    assert codes == {
        0: None,
        1: EmailErrorCode.MESSAGE_REJECTED,
        2: None,
        3: EmailErrorCode.QUOTA_EXCEEDED,
        4: EmailErrorCode.NOT_VERIFIED,
        5: None,
    }
    assert state.count(*BULK) == 2  # the throttled entry was sent again, alone


def test_bulk_with_attachments_or_braces_goes_one_by_one(ses_server: SesServer) -> None:
    service = create_email_service("ses")
    result = service.send_bulk_emails(
        [
            {
                "to": "a@example.com",
                "subject": "s",
                "text": "t",
                "attachments": [{"filename": "a.txt", "content": b"x"}],
            },
            {"to": "b@example.com", "subject": "s", "text": "literal {{braces}}"},
        ]
    )
    assert result.succeeded == 2
    assert ses_server.state.count(*OUTBOUND) == 2
    assert ses_server.state.count(*BULK) == 0


def test_rate_limit_comes_from_get_account_once(ses_server: SesServer) -> None:
    ses_server.state.max_send_rate = 5000.0
    service = create_email_service("ses")
    assert isinstance(service, SesEmailService)
    for _ in range(3):
        service.send_email({"to": "a@example.com", "subject": "s", "text": "t"})
    assert ses_server.state.count(*ACCOUNT) == 1
    limiter = service._rate_limiter()
    assert limiter is not None
    assert limiter.rate == 5000.0


def test_configured_send_rate_skips_get_account(ses_server: SesServer) -> None:
    service = create_email_service("ses", ses_max_send_rate=20.0)
    service.send_email({"to": "a@example.com", "subject": "s", "text": "t"})
    assert ses_server.state.count(*ACCOUNT) == 0


def test_sandbox_refuses_unverified_recipients_before_calling_ses(
    ses_server: SesServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SES_SANDBOX", "true")
    ses_server.state.verify("friend@example.com")
    service = create_email_service()  # EMAIL_PROVIDER defaults to ses
    with pytest.raises(EmailError) as info:
        service.send_email(
            {"to": ["friend@example.com", "stranger@example.com"], "subject": "s", "text": "t"}
        )
    assert info.value.code is EmailErrorCode.NOT_VERIFIED
    assert "stranger@example.com" in info.value.message
    assert ses_server.state.count(*OUTBOUND) == 0
    assert service.send_email({"to": "friend@example.com", "subject": "s", "text": "t"}).accepted
    simulator = "bounce@simulator.amazonses.com"
    assert service.send_email({"to": simulator, "subject": "s", "text": "t"}).accepted


def test_configuration_set_and_template_prefix(ses_server: SesServer) -> None:
    _deploy(ses_server, prefix="dev-")
    service = create_email_service(
        "ses", ses_configuration_set="milequest-dev", ses_template_prefix="dev-"
    )
    service.send_templated_email("welcome", "a@example.com", {"name": "Ann"}, tags={"kind": "w"})
    sent = ses_server.state.sent[-1]
    assert sent["ConfigurationSetName"] == "milequest-dev"
    assert sent["Content"]["Template"]["TemplateName"] == "dev-welcome"
    assert json.loads(sent["Content"]["Template"]["TemplateData"]) == {"name": "Ann"}
    assert sent["EmailTags"] == [{"Name": "kind", "Value": "w"}]


def test_template_only_on_ses_is_sent_by_name(ses_server: SesServer) -> None:
    ses_server.state.templates["promo"] = {"Subject": "Promo {{code}}", "Text": "{{code}}"}
    service = create_email_service("ses")
    service.send_templated_email("promo", "a@example.com", {"code": "X1"})
    assert ses_server.state.sent[-1]["Content"]["Template"]["TemplateName"] == "promo"


def test_the_account_list_follows_the_shared_list(ses_server: SesServer) -> None:
    service = create_email_service("ses")
    service.suppress_email("Gone@Example.com", "BOUNCE")
    service.suppress_email("angry@example.com", "COMPLAINT")
    service.suppress_email("quiet@example.com", "UNSUBSCRIBE", "weekly-summary")
    # Bounces and complaints also go to SES's account list; SES has no unsubscribe reason.
    assert {a: r for a, (r, _) in ses_server.state.suppressed.items()} == {
        "gone@example.com": "BOUNCE",
        "angry@example.com": "COMPLAINT",
    }
    assert service.remove_suppressed_email("gone@example.com") is True
    assert "gone@example.com" not in ses_server.state.suppressed
    # Sends check the shared list only: no listing of the account list per send.
    with pytest.raises(EmailError) as info:
        service.send_email({"to": "angry@example.com", "subject": "s", "text": "t"})
    assert info.value.code is EmailErrorCode.SUPPRESSED
    assert ses_server.state.count("GET", "/v2/email/suppression/addresses") == 0


def test_import_copies_the_account_list_in_every_page(ses_server: SesServer) -> None:
    for i in range(2500):
        ses_server.state.suppressed[f"gone{i}@example.com"] = ("BOUNCE", 1.7e9)
    ses_server.state.suppressed["angry@example.com"] = ("COMPLAINT", 1.7e9)
    service = create_email_service("ses")
    assert service.import_provider_suppressions() == 2501
    assert ses_server.state.count("GET", "/v2/email/suppression/addresses") == 3
    listed = {e.address: (e.reason.value, e.source) for e in service.get_suppressed_emails()}
    assert len(listed) == 2501
    assert listed["angry@example.com"] == ("COMPLAINT", "ses")
    assert listed["gone2499@example.com"] == ("BOUNCE", "ses")
    result = service.send_email(
        {"to": ["gone2499@example.com", "fine@example.com"], "subject": "s", "text": "t"}
    )
    assert result.suppressed == ["gone2499@example.com"]


def test_sandbox_keeps_no_account_list(ses_server: SesServer) -> None:
    service = create_email_service("ses", ses_sandbox=True)
    service.suppress_email("gone@example.com")
    assert ses_server.state.suppressed == {}  # the sandbox has no suppression-list API
    assert [e.address for e in service.get_suppressed_emails()] == ["gone@example.com"]
    with pytest.raises(EmailError) as info:
        service.import_provider_suppressions()
    assert info.value.code is EmailErrorCode.NOT_SUPPORTED


def test_a_failed_account_list_write_keeps_the_shared_entry(
    stubbed: tuple[SesEmailService, Stubber],
) -> None:
    service, stubber = stubbed
    sink = InMemorySink()
    service._metrics = sink
    stubber.add_client_error("put_suppressed_destination", "InternalFailure", "oops", 500)
    service.suppress_email("gone@example.com", "COMPLAINT")
    [entry] = service.get_suppressed_emails()
    assert (entry.address, entry.reason.value) == ("gone@example.com", "COMPLAINT")
    assert sink.total("SuppressionSyncFailures") == 1


# -- issue 15: a line break rendered into the subject by SES ---------------------------------


def test_crlf_in_data_of_a_packaged_template_is_refused_before_ses(ses_server: SesServer) -> None:
    _deploy(ses_server)
    service = create_email_service("ses")  # SES_TEMPLATE_MODE=ses: SES would render it
    with pytest.raises(EmailError) as info:
        service.send_templated_email(
            "welcome", "user@example.com", {"name": "Bob\r\nBcc: victim@example.com"}
        )
    assert info.value.code is EmailErrorCode.INVALID_MESSAGE
    assert "subject" in info.value.message
    assert ses_server.state.count(*OUTBOUND) == 0
    with pytest.raises(EmailError):
        service.send_bulk_emails(
            [{"to": "a@example.com", "template": "welcome", "template_data": {"name": "x\ny"}}]
        )
    assert ses_server.state.count(*BULK) == 0


def test_a_template_deployed_only_to_ses_is_fetched_once_and_checked(
    ses_server: SesServer,
) -> None:
    ses_server.state.templates["promo"] = {"Subject": "Promo {{{code}}}", "Text": "{{code}}"}
    service = create_email_service("ses")
    with pytest.raises(EmailError) as info:
        service.send_templated_email("promo", "a@example.com", {"code": "X\nBcc: v@example.com"})
    assert info.value.code is EmailErrorCode.INVALID_MESSAGE
    with pytest.raises(EmailError) as info:
        service.send_templated_email("promo", "a@example.com", {})
    assert info.value.code is EmailErrorCode.TEMPLATE_RENDER_FAILED
    service.send_templated_email("promo", "a@example.com", {"code": "X1"})
    assert ses_server.state.count(*OUTBOUND) == 1
    assert ses_server.state.count("GET", "/v2/email/templates/promo") == 1
    with pytest.raises(EmailError) as info:
        service.send_templated_email("gone", "a@example.com", {})
    assert info.value.code is EmailErrorCode.TEMPLATE_NOT_FOUND


# -- the call deadline -------------------------------------------------------------------------


def test_a_call_ends_by_its_deadline(ses_server: SesServer) -> None:
    ses_server.state.delay = 3.0  # SES never answers in time
    service = create_email_service("ses", email_call_timeout=1.0, ses_max_send_rate=100.0)
    started = time.monotonic()
    with pytest.raises(EmailError) as info:
        service.send_email({"to": "a@example.com", "subject": "s", "text": "t"})
    elapsed = time.monotonic() - started
    assert info.value.code is EmailErrorCode.PROVIDER_UNAVAILABLE
    assert info.value.retryable
    assert "EMAIL_CALL_TIMEOUT" in info.value.message
    # One attempt (0.5 s read timeout); a second could not have ended within the second.
    assert ses_server.state.count(*OUTBOUND) == 1
    assert elapsed < ses_server.state.delay


def test_throttling_is_retried_only_while_the_deadline_allows(ses_server: SesServer) -> None:
    ses_server.state.throttle_sends = -1
    ses_server.state.delay = 0.2  # each 429 takes a while: the deadline, not 20 attempts, ends it
    service = create_email_service(
        "ses", ses_max_attempts=20, email_call_timeout=2.0, ses_max_send_rate=100.0
    )
    with pytest.raises(EmailError) as info:
        service.send_email({"to": "a@example.com", "subject": "s", "text": "t"})
    assert info.value.code is EmailErrorCode.RATE_LIMITED
    assert info.value.retryable
    assert "EMAIL_CALL_TIMEOUT" in info.value.message
    assert 1 < ses_server.state.count(*OUTBOUND) < 20


def test_attempt_timeouts_fit_the_deadline() -> None:
    from milequest.services.email.ses import attempt_timeouts

    assert attempt_timeouts(15.0) == (3.0, 7.5)
    assert attempt_timeouts(60.0) == (3.0, 10.0)
    connect, read = attempt_timeouts(1.0)
    assert connect + read < 1.0


def test_health_reflects_the_account(ses_server: SesServer) -> None:
    service = create_email_service("ses")
    assert service.health_check().status is HealthState.HEALTHY
    ses_server.state.sending_enabled = False
    assert service.health_check().status is HealthState.UNHEALTHY


def test_unreachable_endpoint_is_provider_unavailable(
    monkeypatch: pytest.MonkeyPatch, fast_retries: None
) -> None:
    from tests.conftest import free_port

    monkeypatch.setenv("AWS_ENDPOINT_URL_SESV2", f"http://127.0.0.1:{free_port()}")
    service = create_email_service("ses", ses_max_attempts=1, ses_max_send_rate=100.0)
    with pytest.raises(EmailError) as info:
        service.send_email({"to": "a@example.com", "subject": "s", "text": "t"})
    assert info.value.code is EmailErrorCode.PROVIDER_UNAVAILABLE
    assert info.value.retryable
    health = service.health_check()
    assert health.status is HealthState.UNHEALTHY
    assert "PROVIDER_UNAVAILABLE" in health.details["error"]


# -- botocore Stubber (requests validated against the real service model) ---------------------


@pytest.fixture
def stubbed() -> Iterator[tuple[SesEmailService, Stubber]]:
    settings = EmailSettings(ses_max_send_rate=1000.0)
    client = create_sesv2_client(settings)
    service = create_email_service("ses", client=client, ses_max_send_rate=1000.0)
    assert isinstance(service, SesEmailService)
    with Stubber(client) as stubber:
        yield service, stubber
        stubber.assert_no_pending_responses()


def test_stubbed_bulk_request_shape(stubbed: tuple[SesEmailService, Stubber]) -> None:
    service, stubber = stubbed
    stubber.add_response(
        "send_bulk_email",
        {
            "BulkEmailEntryResults": [
                {"Status": "SUCCESS", "MessageId": "m-1"},
                {"Status": "TRANSIENT_FAILURE", "Error": "try later"},
            ]
        },
        expected_params={
            "FromEmailAddress": SENDER,
            "DefaultContent": {
                "Template": {
                    "TemplateData": "{}",
                    "TemplateContent": {"Subject": "Hi", "Text": "Body"},
                }
            },
            "BulkEmailEntries": [
                {"Destination": {"ToAddresses": ["a@example.com"]}},
                {
                    "Destination": {
                        "ToAddresses": ["b@example.com"],
                        "BccAddresses": ["c@example.com"],
                    }
                },
            ],
        },
    )
    stubber.add_response(
        "send_bulk_email",
        {"BulkEmailEntryResults": [{"Status": "TRANSIENT_FAILURE", "Error": "try later"}]},
    )
    stubber.add_response(
        "send_bulk_email",
        {"BulkEmailEntryResults": [{"Status": "TRANSIENT_FAILURE", "Error": "still"}]},
    )
    result = service.send_bulk_emails(
        [
            {"to": "a@example.com", "subject": "Hi", "text": "Body"},
            {"to": "b@example.com", "bcc": "c@example.com", "subject": "Hi", "text": "Body"},
        ]
    )
    assert result.results[0].ok
    assert result.results[0].message_id == "m-1"
    failed = result.results[1]
    assert failed.error is not None
    assert failed.error.code is EmailErrorCode.PROVIDER_UNAVAILABLE
    assert failed.error.retryable
    assert failed.recipients == ("b@example.com", "c@example.com")


def test_stubbed_bulk_resend_failing_keeps_the_entries_already_sent(
    stubbed: tuple[SesEmailService, Stubber],
) -> None:
    service, stubber = stubbed
    stubber.add_response(
        "send_bulk_email",
        {
            "BulkEmailEntryResults": [
                {"Status": "SUCCESS", "MessageId": "m-1"},
                {"Status": "ACCOUNT_THROTTLED", "Error": "slow down"},
            ]
        },
    )
    stubber.add_client_error("send_bulk_email", "InternalFailure", "oops", http_status_code=500)
    result = service.send_bulk_emails(
        [{"to": f"{name}@example.com", "subject": "Hi", "text": "Body"} for name in "ab"]
    )
    sent, resent = result.results
    assert sent.ok
    assert sent.message_id == "m-1"
    assert not resent.ok
    assert resent.error is not None
    assert resent.error.code is EmailErrorCode.PROVIDER_UNAVAILABLE
    assert resent.recipients == ("b@example.com",)


@pytest.mark.parametrize(
    ("error_code", "message", "expected"),
    [
        ("SendingPausedException", "sending paused", EmailErrorCode.SENDING_PAUSED),
        ("AccountSuspendedException", "suspended", EmailErrorCode.SENDING_PAUSED),
        ("MessageRejected", "Bad content", EmailErrorCode.MESSAGE_REJECTED),
        ("MailFromDomainNotVerifiedException", "mail from", EmailErrorCode.NOT_VERIFIED),
        ("LimitExceededException", "Daily message quota exceeded", EmailErrorCode.QUOTA_EXCEEDED),
        ("AccessDeniedException", "no ses:SendEmail", EmailErrorCode.CONFIGURATION),
        ("InternalFailure", "oops", EmailErrorCode.PROVIDER_UNAVAILABLE),
        (
            "NotFoundException",
            "Configuration set <x> does not exist.",
            EmailErrorCode.CONFIGURATION,
        ),
        ("BadRequestException", "Invalid header value", EmailErrorCode.INVALID_MESSAGE),
    ],
)
def test_stubbed_errors_are_mapped(
    stubbed: tuple[SesEmailService, Stubber],
    error_code: str,
    message: str,
    expected: EmailErrorCode,
) -> None:
    service, stubber = stubbed
    status = 500 if error_code == "InternalFailure" else 400
    stubber.add_client_error("send_email", error_code, message, http_status_code=status)
    with pytest.raises(EmailError) as info:
        service.send_email({"to": "a@example.com", "subject": "s", "text": "t"})
    assert info.value.code is expected
    assert info.value.provider == "ses"


def test_stubbed_verify_domain_existing_identity(stubbed: tuple[SesEmailService, Stubber]) -> None:
    service, stubber = stubbed
    stubber.add_client_error("create_email_identity", "AlreadyExistsException", "exists")
    stubber.add_response(
        "get_email_identity",
        {
            "IdentityType": "DOMAIN",
            "VerifiedForSendingStatus": True,
            "VerificationStatus": "SUCCESS",
            "DkimAttributes": {"Status": "SUCCESS", "Tokens": ["tok1", "tok2", "tok3"]},
            "MailFromAttributes": {
                "MailFromDomain": "bounce.walkers.example",
                "MailFromDomainStatus": "SUCCESS",
                "BehaviorOnMxFailure": "USE_DEFAULT_VALUE",
            },
        },
        expected_params={"EmailIdentity": "walkers.example"},
    )
    verification = service.verify_domain("walkers.example")
    assert verification.verified
    assert [(r.type, r.name, r.value, r.purpose, r.priority) for r in verification.records] == [
        ("CNAME", "tok1._domainkey.walkers.example", "tok1.dkim.amazonses.com", "dkim", None),
        ("CNAME", "tok2._domainkey.walkers.example", "tok2.dkim.amazonses.com", "dkim", None),
        ("CNAME", "tok3._domainkey.walkers.example", "tok3.dkim.amazonses.com", "dkim", None),
        (
            "MX",
            "bounce.walkers.example",
            "feedback-smtp.us-east-1.amazonses.com",
            "return_path",
            10,
        ),
        ("TXT", "bounce.walkers.example", "v=spf1 include:amazonses.com ~all", "spf", None),
    ]


def test_verify_domain_sets_up_the_custom_mail_from_once(ses_server: SesServer) -> None:
    service = create_email_service("ses", ses_mail_from_subdomain="bounces")
    first = service.verify_domain("walkers.example")
    assert ses_server.state.identities["walkers.example"]["mail_from"] == "bounces.walkers.example"
    mail_from = [(r.type, r.name) for r in first.records if r.purpose != "dkim"]
    assert mail_from == [("MX", "bounces.walkers.example"), ("TXT", "bounces.walkers.example")]
    again = service.verify_domain("walkers.example")
    assert again.records == first.records
    mail_from_puts = [
        p for m, p in ses_server.state.requests if m == "PUT" and p.endswith("/mail-from")
    ]
    assert len(mail_from_puts) == 1


def test_local_template_mode_sends_rendered_content(moto_ses: Any) -> None:
    # moto has no SES templates: "local" mode renders here and sends plain content.
    _, backend = moto_ses
    service = create_email_service("ses", ses_template_mode="local")
    service.send_templated_email("welcome", "user@example.com", {"name": "John Doe"})
    sent = backend.sent_messages[-1]
    assert sent.subject == "Welcome to Mile Quest, John Doe!"
    assert "<h1>Welcome to Mile Quest, John Doe!</h1>" in sent.body


def test_local_template_mode_in_bulk(ses_server: SesServer) -> None:
    service = create_email_service("ses", ses_template_mode="local")
    result = service.send_bulk_emails(
        [
            {"to": f"{n}@example.com", "template": "welcome", "template_data": {"name": n}}
            for n in ("ann", "bo")
        ]
    )
    assert result.succeeded == 2
    contents = sorted(s["Template"]["TemplateContent"]["Subject"] for s in ses_server.state.sent)
    assert contents == ["Welcome to Mile Quest, ann!", "Welcome to Mile Quest, bo!"]
    assert all("TemplateName" not in s["Template"] for s in ses_server.state.sent)


def test_seed_usage_as_written(ses_server: SesServer) -> None:
    _deploy(ses_server)
    email_service = create_email_service()  # EMAIL_PROVIDER unset: ses
    email_service.send_email(
        {
            "to": "user@example.com",
            "subject": "Welcome to Mile Quest",
            "html": "<h1>Welcome!</h1>",
            "text": "Welcome!",
        }
    )
    email_service.send_templated_email("welcome", "user@example.com", {"name": "John Doe"})
    first, second = ses_server.state.sent
    assert first["Content"]["Simple"]["Subject"]["Data"] == "Welcome to Mile Quest"
    assert second["Content"]["Template"]["TemplateName"] == "welcome"
    assert json.loads(second["Content"]["Template"]["TemplateData"]) == {"name": "John Doe"}


def test_an_expired_listing_is_served_while_one_thread_reloads_it() -> None:
    from milequest.services.email.ses import _Cached

    release = threading.Event()
    calls: list[int] = []

    def load() -> int:
        calls.append(1)
        if len(calls) > 1:
            assert release.wait(10)
        return len(calls)

    def wait_for(condition: Callable[[], bool]) -> None:
        deadline = time.monotonic() + 10
        while not condition() and time.monotonic() < deadline:
            time.sleep(0.005)

    cache = _Cached(0.0, load)
    assert cache.get() == 1  # the first load blocks
    assert cache.get() == 1  # expired: the stale value comes back at once
    wait_for(lambda: len(calls) == 2)
    assert [cache.get() for _ in range(5)] == [1] * 5
    assert len(calls) == 2  # one reload in flight, however many readers
    release.set()
    wait_for(lambda: cache.get() != 1)
    assert cache.get() >= 2
