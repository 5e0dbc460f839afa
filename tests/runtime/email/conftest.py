"""Fixtures for the email tests: local SES v2, Resend and SendGrid endpoints, real SMTP
servers, clean settings."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage as MimeMessage
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from tests.conftest import free_port, server_tls_context
from tests.runtime.email import resend_server, sendgrid_server
from tests.runtime.email.api_server import ApiServer
from tests.runtime.email.queue_harness import QueueHarness
from tests.runtime.email.resend_server import ResendState
from tests.runtime.email.sendgrid_server import SendGridState
from tests.runtime.email.ses_server import SesServer

SENDER = "noreply@milequest.example"
SMTP_USER, SMTP_PASSWORD = "mailer", "s3cret-pass"

_SETTING_PREFIXES = ("SES_", "SMTP_", "EMAIL_", "RESEND_", "SENDGRID_")
_SETTING_NAMES = ("DEFAULT_FROM_EMAIL", "AWS_SES_REGION")


@pytest.fixture(autouse=True)
def _clean_email_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No email setting leaks in from the outer environment; the sender is ours."""
    for name in list(os.environ):
        if name.startswith(_SETTING_PREFIXES) or name in _SETTING_NAMES:
            monkeypatch.delenv(name)
    monkeypatch.setenv("DEFAULT_FROM_EMAIL", SENDER)


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """botocore's real retry logic, without its (randomized, up to 20 s) sleeps."""
    from botocore.retries import standard

    monkeypatch.setattr(standard.ExponentialBackoff, "delay_amount", lambda self, ctx: 0.0)


# -- SES ----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def ses_endpoint() -> Iterator[SesServer]:
    server = SesServer().start()
    yield server
    server.stop()


@pytest.fixture
def ses_server(
    ses_endpoint: SesServer, monkeypatch: pytest.MonkeyPatch, fast_retries: None
) -> SesServer:
    """The local SES endpoint, reset, with the sender's domain verified, wired in through
    the standard ``AWS_ENDPOINT_URL_SESV2`` variable."""
    ses_endpoint.reset()
    ses_endpoint.state.verify("milequest.example")
    monkeypatch.setenv("AWS_ENDPOINT_URL_SESV2", ses_endpoint.url)
    return ses_endpoint


# -- Resend and SendGrid ----------------------------------------------------------------


@pytest.fixture(scope="session")
def _resend_endpoint() -> Iterator[ApiServer[ResendState]]:
    server = resend_server.resend_server().start()
    yield server
    server.stop()


@pytest.fixture
def resend_api(
    _resend_endpoint: ApiServer[ResendState], monkeypatch: pytest.MonkeyPatch
) -> ApiServer[ResendState]:
    """The local Resend API, reset, the sender's domain verified, wired in by settings."""
    _resend_endpoint.state.reset()
    _resend_endpoint.state.verify("milequest.example")
    monkeypatch.setenv("RESEND_API_URL", _resend_endpoint.url)
    monkeypatch.setenv("RESEND_API_KEY", resend_server.API_KEY)
    return _resend_endpoint


@pytest.fixture(scope="session")
def _sendgrid_endpoint() -> Iterator[ApiServer[SendGridState]]:
    server = sendgrid_server.sendgrid_server().start()
    yield server
    server.stop()


@pytest.fixture
def sendgrid_api(
    _sendgrid_endpoint: ApiServer[SendGridState], monkeypatch: pytest.MonkeyPatch
) -> ApiServer[SendGridState]:
    """The local SendGrid API, reset, the sender's domain authenticated, wired in."""
    _sendgrid_endpoint.state.reset()
    _sendgrid_endpoint.state.verify("milequest.example")
    monkeypatch.setenv("SENDGRID_API_URL", _sendgrid_endpoint.url)
    monkeypatch.setenv("SENDGRID_API_KEY", sendgrid_server.API_KEY)
    return _sendgrid_endpoint


@pytest.fixture
def no_waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The ESP APIs' retry waits, recorded instead of slept."""
    from milequest.services.email import http_api

    waits: list[float] = []
    monkeypatch.setattr(http_api, "sleep", waits.append)
    return waits


# -- SMTP ---------------------------------------------------------------------------------


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: MimeMessage
    raw: bytes
    session: int = 0
    """Which SMTP connection carried the message."""
    helo: str | None = None
    """The name the client gave in EHLO."""


@dataclass
class SinkHandler:
    """aiosmtpd handler keeping what arrives, parsed back with the ``email`` package."""

    messages: list[Received] = field(default_factory=list)
    refuse: set[str] = field(default_factory=set)
    drop: set[str] = field(default_factory=set)
    """Recipients whose message is answered 421 (the server closes the connection)."""
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        if address.lower() in self.refuse:
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.drop & {a.lower() for a in envelope.rcpt_tos}:
            return "421 4.3.2 service shutting down"
        raw = envelope.original_content or b""
        parsed = message_from_bytes(raw, policy=policy.default)
        assert isinstance(parsed, MimeMessage)
        with self.lock:
            self.messages.append(
                Received(
                    str(envelope.mail_from),
                    list(envelope.rcpt_tos),
                    parsed,
                    raw,
                    id(session),
                    session.host_name,
                )
            )
        return "250 Message accepted"

    def clear(self) -> None:
        with self.lock:
            self.messages.clear()
            self.refuse.clear()
            self.drop.clear()


def _authenticator(
    server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and (
        auth_data.login.decode(),
        auth_data.password.decode(),
    ) == (SMTP_USER, SMTP_PASSWORD)
    return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers 535


@dataclass
class SmtpServer:
    handler: SinkHandler
    port: int
    security: str
    ca_file: str | None = None

    def settings(self, **extra: Any) -> dict[str, Any]:
        out: dict[str, Any] = {
            "smtp_host": "127.0.0.1" if self.security == "none" else "localhost",
            "smtp_port": self.port,
            "smtp_security": self.security,
            "smtp_timeout": 5.0,
        }
        if self.ca_file:
            out["smtp_ca_file"] = self.ca_file
        if self.security == "starttls":
            out.update(smtp_username=SMTP_USER, smtp_password=SMTP_PASSWORD)
        out.update(extra)
        return out


def _serve(security: str, ca_file: str | None = None, **options: Any) -> Iterator[SmtpServer]:
    handler = SinkHandler()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port, **options)
    controller.start()
    yield SmtpServer(handler, port, security, ca_file)
    controller.stop()


@pytest.fixture(scope="session")
def _smtp_plain() -> Iterator[SmtpServer]:
    yield from _serve("none")


@pytest.fixture(scope="session")
def _smtp_starttls(tls_files: tuple[str, str]) -> Iterator[SmtpServer]:
    yield from _serve(
        "starttls",
        tls_files[0],
        server_hostname="localhost",
        tls_context=server_tls_context(tls_files),
        require_starttls=True,
        authenticator=_authenticator,
        auth_required=True,
    )


@pytest.fixture(scope="session")
def _smtp_ssl(tls_files: tuple[str, str]) -> Iterator[SmtpServer]:
    yield from _serve(
        "ssl", tls_files[0], server_hostname="localhost", ssl_context=server_tls_context(tls_files)
    )


@pytest.fixture
def smtp_plain(_smtp_plain: SmtpServer) -> SmtpServer:
    _smtp_plain.handler.clear()
    return _smtp_plain


@pytest.fixture
def smtp_starttls(_smtp_starttls: SmtpServer) -> SmtpServer:
    _smtp_starttls.handler.clear()
    return _smtp_starttls


@pytest.fixture
def smtp_ssl(_smtp_ssl: SmtpServer) -> SmtpServer:
    _smtp_ssl.handler.clear()
    return _smtp_ssl


# -- the email queue: SQS, S3 and DynamoDB on moto (server mode) ------------------------------


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def queue_factory(
    moto_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., QueueHarness]:
    """Makes a fresh email queue on moto (its dead-letter queue, bucket and idempotency table)
    and points the settings at it: queue mode, retries at once."""

    def make(**options: Any) -> QueueHarness:
        for service in ("SQS", "S3", "DYNAMODB"):
            monkeypatch.setenv(f"AWS_ENDPOINT_URL_{service}", moto_endpoint)
        harness = QueueHarness.create(moto_endpoint, **options)
        for name, value in harness.resources.environment(workers=1).items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("EMAIL_QUEUE_RETRY_DELAY", "0")
        return harness

    return make


@pytest.fixture
def email_queue(queue_factory: Callable[..., QueueHarness]) -> QueueHarness:
    """A fresh email queue: 3 receives before the dead-letter queue, 2 s visibility."""
    return queue_factory()
