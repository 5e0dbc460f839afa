"""SMTP provider (stdlib ``smtplib``): STARTTLS / SSL / AUTH, real MIME.

Works against SES's SMTP interface (``email-smtp.<region>.amazonaws.com``, port 587 with
STARTTLS) and any SMTP server. SMTP has no identity API, so this provider counts
``DEFAULT_FROM_EMAIL`` (and its domain) as the verified sender. Each message's conversation
(connection set-up included for the first one) ends by ``EMAIL_CALL_TIMEOUT``.
"""

from __future__ import annotations

import functools
import json
import smtplib
import socket
import ssl
import threading
from collections.abc import Hashable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ClassVar

from .addresses import address_key, bare_address, domain_of
from .deadline import Deadline, DeadlineExceeded
from .errors import EmailError, EmailErrorCode
from .results import BulkItemResult, DomainVerification
from .service import Delivery, EmailService, Outgoing

if TYPE_CHECKING:
    from milequest.services.errors import ServiceError
    from milequest.services.health import HealthState
    from milequest.services.metrics import MetricsSink

    from .models import EmailMessage
    from .settings import EmailSettings
    from .suppression import SuppressionStore


class _DeadlineMixin:
    """Caps every socket wait of an SMTP conversation by what is left of its deadline.

    smtplib's ``timeout`` bounds each socket operation only; a conversation is many of them.
    """

    sock: Any
    timeout: float

    def __init__(self, deadline: Deadline, *args: Any, **kwargs: Any) -> None:
        self.deadline = deadline  # before smtplib connects and reads the greeting
        super().__init__(*args, **kwargs)

    def _arm(self) -> None:
        remaining = self.deadline.remaining()
        if remaining <= 0:
            raise DeadlineExceeded(self.deadline.seconds, 1)
        if self.sock is not None:
            self.sock.settimeout(min(self.timeout, remaining))

    def send(self, s: Any) -> None:
        self._arm()
        super().send(s)  # type: ignore[misc]

    def getreply(self) -> tuple[int, bytes]:
        self._arm()
        return super().getreply()  # type: ignore[misc,no-any-return]


@functools.cache
def _local_fqdn() -> str:
    """This machine's name for EHLO. smtplib would look it up (a reverse DNS query, seconds
    where DNS does not answer) on every connection; once per process is enough."""
    return socket.getfqdn()


class _SMTP(_DeadlineMixin, smtplib.SMTP):
    pass


class _SMTP_SSL(_DeadlineMixin, smtplib.SMTP_SSL):
    pass


class SmtpEmailService(EmailService):
    """Sends each message as MIME over SMTP; bulk sends reuse one connection per batch."""

    provider_name: ClassVar[str] = "smtp"
    supports_domain_verification: ClassVar[bool] = False

    def __init__(
        self,
        settings: EmailSettings,
        *,
        metrics: MetricsSink | None = None,
        suppression: SuppressionStore | None = None,
    ) -> None:
        super().__init__(settings, metrics=metrics, suppression=suppression)
        self.host = settings.smtp_host
        self.port = settings.resolved_smtp_port
        self.security = settings.smtp_security
        self.timeout = settings.smtp_timeout
        self.username, self.password = self._credentials(settings)
        self._tls_lock = threading.Lock()
        self._tls: ssl.SSLContext | None = None

    def _credentials(self, settings: EmailSettings) -> tuple[str | None, str | None]:
        username = settings.smtp_username
        password = settings.smtp_password.get_secret_value() if settings.smtp_password else None
        if settings.smtp_secret_arn:
            from milequest.services.config import get_secret

            try:
                raw = get_secret(settings.smtp_secret_arn)
            except Exception as exc:
                raise EmailError(
                    EmailErrorCode.CONFIGURATION,
                    f"SMTP_SECRET_ARN: could not read the secret: {type(exc).__name__}: {exc}",
                    provider=self.provider_name,
                    cause=exc,
                ) from None
            try:
                data = json.loads(raw)
            except ValueError:
                data = raw
            if isinstance(data, dict):
                username = str(data.get("username") or data.get("user") or username or "")
                password = str(data.get("password") or "")
            else:
                password = raw
        if password and not username:
            raise EmailError(
                EmailErrorCode.CONFIGURATION,
                "SMTP_USERNAME is required when a password (SMTP_PASSWORD or "
                "SMTP_SECRET_ARN) is set",
                provider=self.provider_name,
            )
        return username or None, password or None

    def _context(self) -> ssl.SSLContext:
        with self._tls_lock:
            if self._tls is None:
                self._tls = ssl.create_default_context(cafile=self.settings.smtp_ca_file)
            return self._tls

    def _deadline(self) -> Deadline:
        return Deadline(self.settings.email_call_timeout)

    @contextmanager
    def _connection(self, deadline: Deadline) -> Iterator[_SMTP | _SMTP_SSL]:
        conn: _SMTP | _SMTP_SSL
        connect_timeout = min(self.timeout, max(deadline.remaining(), 0.001))
        name = self.settings.smtp_local_hostname or _local_fqdn()
        if self.security == "ssl":
            conn = _SMTP_SSL(
                deadline,
                self.host,
                self.port,
                name,
                timeout=connect_timeout,
                context=self._context(),
            )
        else:
            conn = _SMTP(deadline, self.host, self.port, name, timeout=connect_timeout)
        conn.timeout = self.timeout
        try:
            conn.ehlo()
            if self.security == "starttls":
                conn.starttls(context=self._context())
                conn.ehlo()
            if self.username and self.password:
                conn.login(self.username, self.password)
            yield conn
        finally:
            conn.deadline = Deadline(min(self.timeout, 2.0))  # a polite QUIT, kept short
            try:
                conn.quit()
            except (smtplib.SMTPException, OSError, DeadlineExceeded):
                conn.close()

    # -- sending ---------------------------------------------------------------------------------

    def _send_on(self, conn: smtplib.SMTP, out: Outgoing) -> Delivery:
        from .mime import build_mime, new_message_id

        message = out.message
        assert message.from_email is not None
        message_id = new_message_id(message.from_email)
        mime = build_mime(message, message_id=message_id)
        recipients = [bare_address(a) for a in message.recipients()]
        refused = conn.send_message(
            mime, from_addr=bare_address(message.from_email), to_addrs=recipients
        )
        rejected = {
            address_key(addr): f"{code} {reply.decode(errors='replace')}"
            for addr, (code, reply) in refused.items()
        }
        return Delivery(message_id.strip("<>"), rejected)

    def _deliver(self, out: Outgoing) -> Delivery:
        with self._connection(self._deadline()) as conn:
            return self._send_on(conn, out)

    def _send_rate(self) -> float | None:
        return self.settings.smtp_send_rate

    def _rate_units(self, outs: list[Outgoing]) -> float:
        return float(len(outs))  # one message at a time on a connection

    def _batch_key(self, message: EmailMessage) -> Hashable | None:
        return "smtp"  # any messages can share a connection

    def _send_batch(self, batch: list[Outgoing]) -> list[BulkItemResult]:
        results: list[BulkItemResult] = []
        with self._connection(self._deadline()) as conn:
            for position, out in enumerate(batch):
                if position:
                    conn.deadline = self._deadline()  # one deadline per message
                try:
                    results.append(self._ok_item(out, self._send_on(conn, out)))
                except Exception as exc:
                    results.append(self._failed_item(out.index, out.message.recipients(), exc))
                    if not _still_usable(conn, exc):
                        # The messages already sent stay sent; the rest were never tried.
                        results.extend(
                            self._failed_item(o.index, o.message.recipients(), exc)
                            for o in batch[position + 1 :]
                        )
                        break
        return results

    def _translate_error(self, exc: Exception) -> ServiceError | None:
        text = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, smtplib.SMTPAuthenticationError):
            return self._error(
                "CONFIGURATION", f"SMTP_USERNAME / SMTP_PASSWORD rejected: {text}", cause=exc
            )
        if isinstance(exc, smtplib.SMTPNotSupportedError):
            return self._error("CONFIGURATION", f"SMTP_SECURITY: {text}", cause=exc)
        if isinstance(exc, smtplib.SMTPRecipientsRefused):
            return self._error("MESSAGE_REJECTED", f"every recipient refused: {text}", cause=exc)
        if isinstance(exc, smtplib.SMTPResponseException):
            code = exc.smtp_code
            if code in (530, 534, 535, 538):  # authentication or TLS required by the server
                return self._error(
                    "CONFIGURATION", f"SMTP_SECURITY / credentials: {text}", cause=exc
                )
            if code == 552:
                return self._error("MESSAGE_TOO_LARGE", text, cause=exc)
            if code in (421, 450, 451, 452, 454):
                return self._error("PROVIDER_UNAVAILABLE", text, retryable=True, cause=exc)
            if isinstance(exc, smtplib.SMTPSenderRefused):
                return self._error("NOT_VERIFIED", f"sender refused: {text}", cause=exc)
            if 500 <= code < 600:
                return self._error("MESSAGE_REJECTED", text, cause=exc)
        if isinstance(exc, ssl.SSLError | ssl.CertificateError):
            return self._error("CONFIGURATION", f"SMTP TLS failed: {text}", cause=exc)
        if isinstance(exc, smtplib.SMTPException | OSError):
            return self._error("PROVIDER_UNAVAILABLE", text, retryable=True, cause=exc)
        return None

    # -- identities ------------------------------------------------------------------------------

    def _verify_domain(self, domain: str) -> DomainVerification:
        raise self._error("NOT_SUPPORTED", "SMTP has no identity API")

    def _verified_domains(self) -> list[str]:
        return [domain_of(self.default_from)]

    def _verified_emails(self) -> list[str]:
        return [address_key(self.default_from)]

    def _probe_provider(self) -> tuple[HealthState, dict[str, Any]]:
        from milequest.services.health import HealthState

        with self._connection(self._deadline()) as conn:
            code, _ = conn.noop()
        state = HealthState.HEALTHY if code == 250 else HealthState.DEGRADED
        return state, {"host": self.host, "port": self.port, "security": self.security}


def _still_usable(conn: smtplib.SMTP, exc: Exception) -> bool:
    """Whether ``conn`` can carry the next message after a send failed with ``exc``."""
    if isinstance(exc, smtplib.SMTPServerDisconnected | DeadlineExceeded) or (
        isinstance(exc, OSError) and not isinstance(exc, smtplib.SMTPException)
    ):
        return False
    try:
        conn.rset()
    except (smtplib.SMTPException, OSError):
        return False
    return True
