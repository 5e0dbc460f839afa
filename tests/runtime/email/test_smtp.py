"""The SMTP provider against real aiosmtpd servers (plain, STARTTLS + AUTH, implicit TLS)."""

from __future__ import annotations

import json

import pytest
from milequest.services.email import (
    EmailError,
    EmailErrorCode,
    RecipientStatus,
    create_email_service,
)
from milequest.services.health import HealthState
from moto import mock_aws

from tests.conftest import free_port
from tests.runtime.email.conftest import SENDER, SMTP_PASSWORD, SMTP_USER, SmtpServer


def test_starttls_auth_and_real_mime(smtp_starttls: SmtpServer) -> None:
    service = create_email_service("smtp", **smtp_starttls.settings())
    result = service.send_email(
        {
            "from": "Mile Quest <noreply@milequest.example>",
            "to": "Zoë Walker <zoe@example.com>",
            "cc": "coach@example.com",
            "bcc": "audit@example.com",
            "reply_to": "team@milequest.example",
            "subject": "Ünïcode subject ✓",
            "text": "plain body",
            "html": "<p>html body</p>",
            "headers": {"X-Entity-Ref-ID": "abc-123"},
            "attachments": [
                {"filename": "map.png", "content": b"\x89PNG\r\n\x1a\n", "content_id": "map"},
                {"filename": "notes.txt", "content": "grüße"},
            ],
        }
    )
    [received] = smtp_starttls.handler.messages
    assert received.mail_from == SENDER
    assert sorted(received.rcpt_tos) == [
        "audit@example.com",
        "coach@example.com",
        "zoe@example.com",
    ]
    msg = received.message
    assert msg["Subject"] == "Ünïcode subject ✓"
    assert msg["To"] == "Zoë Walker <zoe@example.com>"
    assert msg["Cc"] == "coach@example.com"
    assert msg["Reply-To"] == "team@milequest.example"
    assert msg["Bcc"] is None
    assert msg["X-Entity-Ref-ID"] == "abc-123"
    assert msg["Message-ID"].strip("<>") == result.message_id
    assert msg.get_content_type() == "multipart/mixed"
    body = msg.get_body(("plain",))
    html = msg.get_body(("html",))
    assert body is not None
    assert body.get_content().strip() == "plain body"
    assert html is not None
    assert "<p>html body</p>" in html.get_content()
    files = {p.get_filename(): p for p in msg.iter_attachments()}
    assert files["map.png"].get_payload(decode=True) == b"\x89PNG\r\n\x1a\n"
    assert files["map.png"]["Content-ID"] == "<map>"
    assert files["map.png"].get_content_disposition() == "inline"
    assert files["notes.txt"].get_payload(decode=True) == "grüße".encode()


def test_implicit_tls(smtp_ssl: SmtpServer) -> None:
    service = create_email_service("smtp", **smtp_ssl.settings())
    service.send_email({"to": "a@example.com", "subject": "over TLS", "text": "t"})
    assert smtp_ssl.handler.messages[-1].message["Subject"] == "over TLS"
    assert service.health_check().status is HealthState.HEALTHY


def test_wrong_password_is_a_configuration_error(smtp_starttls: SmtpServer) -> None:
    service = create_email_service("smtp", **smtp_starttls.settings(smtp_password="nope"))
    with pytest.raises(EmailError) as info:
        service.send_email({"to": "a@example.com", "subject": "s", "text": "t"})
    assert info.value.code is EmailErrorCode.CONFIGURATION
    assert smtp_starttls.handler.messages == []


def test_server_requiring_starttls_refuses_plain(smtp_starttls: SmtpServer) -> None:
    settings = smtp_starttls.settings(smtp_security="none", smtp_username=None, smtp_password=None)
    service = create_email_service("smtp", **settings)
    with pytest.raises(EmailError) as info:
        service.send_email({"to": "a@example.com", "subject": "s", "text": "t"})
    assert info.value.code is EmailErrorCode.CONFIGURATION


def test_untrusted_certificate_is_refused(smtp_starttls: SmtpServer) -> None:
    settings = smtp_starttls.settings()
    del settings["smtp_ca_file"]
    service = create_email_service("smtp", **settings)
    with pytest.raises(EmailError) as info:
        service.send_email({"to": "a@example.com", "subject": "s", "text": "t"})
    assert info.value.code is EmailErrorCode.CONFIGURATION
    assert "TLS" in info.value.message


def test_ehlo_names_the_configured_host_else_this_machine(smtp_plain: SmtpServer) -> None:
    import socket

    create_email_service("smtp", **smtp_plain.settings()).send_email(
        {"to": "a@example.com", "subject": "s", "text": "t"}
    )
    create_email_service(
        "smtp", **smtp_plain.settings(smtp_local_hostname="mailer.milequest.example")
    ).send_email({"to": "b@example.com", "subject": "s", "text": "t"})
    assert [m.helo for m in smtp_plain.handler.messages] == [
        socket.getfqdn(),
        "mailer.milequest.example",
    ]


def test_a_local_hostname_that_could_inject_a_command_is_refused() -> None:
    with pytest.raises(EmailError) as info:
        create_email_service("smtp", smtp_local_hostname="evil\r\nRCPT TO:<x@example.com>")
    assert info.value.code is EmailErrorCode.CONFIGURATION
    assert "SMTP_LOCAL_HOSTNAME" in str(info.value)


def test_refused_recipients_are_reported(smtp_plain: SmtpServer) -> None:
    smtp_plain.handler.refuse.add("nobody@example.com")
    service = create_email_service("smtp", **smtp_plain.settings())
    result = service.send_email(
        {"to": ["nobody@example.com", "somebody@example.com"], "subject": "s", "text": "t"}
    )
    statuses = {r.address: r.status for r in result.recipients}
    assert statuses == {
        "nobody@example.com": RecipientStatus.REJECTED,
        "somebody@example.com": RecipientStatus.SENT,
    }
    rejected = next(r for r in result.recipients if r.status is RecipientStatus.REJECTED)
    assert rejected.reason is not None
    assert rejected.reason.startswith("550")
    with pytest.raises(EmailError) as info:
        service.send_email({"to": "nobody@example.com", "subject": "s", "text": "t"})
    assert info.value.code is EmailErrorCode.MESSAGE_REJECTED


def test_bulk_partial_refusal_keeps_the_connection(smtp_plain: SmtpServer) -> None:
    smtp_plain.handler.refuse.add("u3@example.com")
    service = create_email_service("smtp", **smtp_plain.settings())
    result = service.send_bulk_emails(
        [{"to": f"u{i}@example.com", "subject": f"n{i}", "text": "t"} for i in range(60)]
    )
    assert result.succeeded == 59
    [failed] = result.failures()
    assert failed.index == 3
    assert failed.error is not None
    assert failed.error.code is EmailErrorCode.MESSAGE_REJECTED
    assert len(smtp_plain.handler.messages) == 59


def test_bulk_connection_lost_keeps_the_messages_already_sent(smtp_plain: SmtpServer) -> None:
    smtp_plain.handler.drop.add("u2@example.com")
    service = create_email_service("smtp", **smtp_plain.settings())
    result = service.send_bulk_emails(
        [{"to": f"u{i}@example.com", "subject": f"n{i}", "text": "t"} for i in range(5)]
    )
    assert [r.ok for r in result.results] == [True, True, False, False, False]
    for failed in result.failures():
        assert failed.error is not None
        assert failed.error.code is EmailErrorCode.PROVIDER_UNAVAILABLE
        assert failed.error.retryable
    assert len(smtp_plain.handler.messages) == 2


def test_unreachable_server(smtp_plain: SmtpServer) -> None:
    service = create_email_service(
        "smtp", smtp_host="127.0.0.1", smtp_port=free_port(), smtp_security="none"
    )
    with pytest.raises(EmailError) as info:
        service.send_email({"to": "a@example.com", "subject": "s", "text": "t"})
    assert info.value.code is EmailErrorCode.PROVIDER_UNAVAILABLE
    assert info.value.retryable
    assert service.health_check().status is HealthState.UNHEALTHY


@pytest.mark.parametrize("as_json", [True, False])
def test_credentials_from_secrets_manager(
    smtp_starttls: SmtpServer, monkeypatch: pytest.MonkeyPatch, as_json: bool
) -> None:
    with mock_aws():
        import boto3

        client = boto3.client("secretsmanager", region_name="us-east-1")
        value = (
            json.dumps({"username": SMTP_USER, "password": SMTP_PASSWORD})
            if as_json
            else SMTP_PASSWORD
        )
        arn = client.create_secret(Name="smtp-credentials", SecretString=value)["ARN"]
        monkeypatch.setenv("SMTP_SECRET_ARN", arn)
        if not as_json:
            monkeypatch.setenv("SMTP_USERNAME", SMTP_USER)
        settings = smtp_starttls.settings()
        del settings["smtp_username"], settings["smtp_password"]
        service = create_email_service("smtp", **settings)
    service.send_email({"to": "a@example.com", "subject": "from secret", "text": "t"})
    assert smtp_starttls.handler.messages[-1].message["Subject"] == "from secret"


def test_missing_secret_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    with mock_aws():
        monkeypatch.setenv(
            "SMTP_SECRET_ARN", "arn:aws:secretsmanager:us-east-1:123456789012:secret:none-AbCdEf"
        )
        with pytest.raises(EmailError) as info:
            create_email_service("smtp")
    assert info.value.code is EmailErrorCode.CONFIGURATION
    assert "SMTP_SECRET_ARN" in info.value.message


def test_password_without_username_is_refused() -> None:
    with pytest.raises(EmailError) as info:
        create_email_service("smtp", smtp_password="x")
    assert info.value.code is EmailErrorCode.CONFIGURATION
    assert "SMTP_USERNAME" in info.value.message


def test_default_ports_follow_security() -> None:
    ports = {
        security: create_email_service("smtp", smtp_security=security).port  # type: ignore[attr-defined]
        for security in ("none", "starttls", "ssl")
    }
    assert ports == {"none": 25, "starttls": 587, "ssl": 465}


def test_a_server_that_never_answers_fails_at_the_call_deadline() -> None:
    import socket
    import time

    with socket.socket() as silent:  # accepts connections, never greets
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        port = silent.getsockname()[1]
        service = create_email_service(
            "smtp",
            smtp_host="127.0.0.1",
            smtp_port=port,
            smtp_security="none",
            smtp_timeout=30.0,
            email_call_timeout=1.0,
        )
        started = time.monotonic()
        with pytest.raises(EmailError) as info:
            service.send_email({"to": "a@example.com", "subject": "s", "text": "t"})
        elapsed = time.monotonic() - started
    assert info.value.code is EmailErrorCode.PROVIDER_UNAVAILABLE
    assert info.value.retryable
    assert elapsed < 30.0  # the deadline, not smtp_timeout, ended it
