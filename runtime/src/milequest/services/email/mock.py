"""The in-memory provider: an outbox for tests and the local stack, with failure injection."""

from __future__ import annotations

import hashlib
import random
import threading
import time
import uuid
from collections.abc import Hashable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar

from .addresses import address_key, bare_address, domain_of
from .errors import EmailError
from .results import (
    BulkItemResult,
    DomainVerification,
    VerificationStatus,
    ses_domain_records,
)
from .service import Delivery, EmailService, Outgoing, bulk_group_key

if TYPE_CHECKING:
    from milequest.services.health import HealthState
    from milequest.services.metrics import MetricsSink

    from .models import EmailMessage
    from .settings import EmailSettings
    from .suppression import SuppressionStore

_RETRYABLE = frozenset({"RATE_LIMITED", "PROVIDER_UNAVAILABLE"})


@dataclass(frozen=True)
class SentEmail:
    """One message in the mock's outbox, as it would have been sent."""

    message_id: str
    from_email: str
    to: list[str]
    cc: list[str]
    bcc: list[str]
    reply_to: list[str]
    subject: str | None
    html: str | None
    text: str | None
    headers: dict[str, str]
    attachments: list[tuple[str, str, bytes]]
    tags: dict[str, str]
    template: str | None = None
    template_data: dict[str, Any] = field(default_factory=dict)
    sent_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def recipients(self) -> list[str]:
        return [*self.to, *self.cc, *self.bcc]


class MockEmailService(EmailService):
    """Keeps sent mail in :attr:`outbox` (newest last) and behaves like SES otherwise.

    ``DEFAULT_FROM_EMAIL`` and its domain count as verified; senders outside the verified
    identities fail with ``NOT_VERIFIED``, as SES does. Inject failures with
    :meth:`fail_next` or a ``fail_rate``; add ``latency_ms`` to every send (a latency past
    ``EMAIL_CALL_TIMEOUT`` fails as a provider that does not answer in time).
    """

    provider_name: ClassVar[str] = "mock"

    def __init__(
        self,
        settings: EmailSettings,
        *,
        metrics: MetricsSink | None = None,
        suppression: SuppressionStore | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__(settings, metrics=metrics, suppression=suppression)
        self.outbox: list[SentEmail] = []
        self.verified_emails: set[str] = {address_key(self.default_from)}
        self.verified_domains: set[str] = {domain_of(self.default_from)}
        self.pending_domains: set[str] = set()
        self.latency_ms = settings.email_mock_latency_ms
        self.fail_rate = settings.email_mock_fail_rate
        self.bulk_sizes: list[int] = []
        """Messages per provider call of bulk sends, as SES would group them."""
        self._fail_next: list[tuple[str, int]] = []
        self._random = random.Random(seed)
        self._lock = threading.Lock()

    # -- test controls -------------------------------------------------------------------------

    def clear(self) -> None:
        """Empty the outbox (and the bulk call log)."""
        with self._lock:
            self.outbox.clear()
            self.bulk_sizes.clear()

    @property
    def bulk_calls(self) -> int:
        """Provider calls made by bulk sends."""
        return len(self.bulk_sizes)

    def fail_next(self, count: int = 1, code: str = "PROVIDER_UNAVAILABLE") -> None:
        """Make the next ``count`` sends fail with ``code`` (an ``EmailErrorCode`` name)."""
        from .errors import EmailErrorCode

        if code not in EmailErrorCode.__members__:
            raise ValueError(f"unknown error code {code!r}")
        with self._lock:
            self._fail_next.append((code, count))

    def add_verified_email(self, address: str) -> None:
        """Count ``address`` as a verified sender identity."""
        self.verified_emails.add(address_key(address))

    def add_verified_domain(self, domain: str) -> None:
        """Count ``domain`` (and every address in it) as verified."""
        self.verified_domains.add(domain.lower())
        self.pending_domains.discard(domain.lower())

    @property
    def last(self) -> SentEmail:
        """The newest message in the outbox."""
        return self.outbox[-1]

    # -- sending --------------------------------------------------------------------------------

    def _check_before_send(self, message: EmailMessage) -> None:
        assert message.from_email is not None
        if not self._is_verified(message.from_email):
            raise self._error(
                "NOT_VERIFIED",
                f"sender {bare_address(message.from_email)} is not a verified identity",
            )

    def _is_verified(self, address: str) -> bool:
        return address_key(address) in self.verified_emails or (
            domain_of(address) in self.verified_domains
        )

    def _inject(self) -> None:
        if self.latency_ms:
            timeout = self.settings.email_call_timeout
            time.sleep(min(self.latency_ms / 1000, timeout))
            if self.latency_ms / 1000 > timeout:
                raise self._error(
                    "PROVIDER_UNAVAILABLE",
                    f"no answer within the {timeout:g} s call deadline (EMAIL_CALL_TIMEOUT)",
                    retryable=True,
                )
        with self._lock:
            if self._fail_next:
                code, left = self._fail_next[0]
                if left <= 1:
                    self._fail_next.pop(0)
                else:
                    self._fail_next[0] = (code, left - 1)
                raise self._refused(code)
            failing = self.fail_rate and self._random.random() < self.fail_rate
        if failing:
            raise self._refused("PROVIDER_UNAVAILABLE")

    def _refused(self, code: str) -> EmailError:
        """An injected failure: nothing reached the outbox, as a 503 or a rejection."""
        error = self._error(code, "injected failure", retryable=code in _RETRYABLE)
        assert isinstance(error, EmailError)
        error.not_accepted = code in _RETRYABLE
        return error

    def _deliver(self, out: Outgoing) -> Delivery:
        self._inject()
        message = out.message
        assert message.from_email is not None
        sent = SentEmail(
            message_id=f"mock-{uuid.uuid4()}",
            from_email=message.from_email,
            to=[bare_address(a) for a in message.to],
            cc=[bare_address(a) for a in message.cc],
            bcc=[bare_address(a) for a in message.bcc],
            reply_to=[bare_address(a) for a in message.reply_to],
            subject=message.subject,
            html=message.html,
            text=message.text,
            headers=dict(message.headers),
            attachments=[(a.filename, a.mime_type, a.content) for a in message.attachments],
            tags=dict(message.tags),
            template=message.template,
            template_data=dict(message.template_data),
        )
        with self._lock:
            self.outbox.append(sent)
        return Delivery(sent.message_id)

    def _batch_key(self, message: EmailMessage) -> Hashable | None:
        # Grouped as SES groups SendBulkEmail entries, so that bulk call counts compare.
        return bulk_group_key(message, by_template=message.template is not None)

    def _send_batch(self, batch: list[Outgoing]) -> list[BulkItemResult]:
        with self._lock:
            self.bulk_sizes.append(len(batch))
        return super()._send_batch(batch)

    # -- identities ------------------------------------------------------------------------------

    def _verify_domain(self, domain: str) -> DomainVerification:
        tokens = [hashlib.sha256(f"{domain}:{i}".encode()).hexdigest()[:32] for i in range(3)]
        if domain in self.verified_domains:
            status = VerificationStatus.VERIFIED
        else:
            self.pending_domains.add(domain)
            status = VerificationStatus.PENDING
        mail_from = f"{self.settings.ses_mail_from_subdomain}.{domain}"
        return DomainVerification(
            domain, status, ses_domain_records(domain, tokens, mail_from, "us-east-1")
        )

    def _verified_domains(self) -> list[str]:
        return sorted(self.verified_domains)

    def _verified_emails(self) -> list[str]:
        return sorted(self.verified_emails)

    def _probe_provider(self) -> tuple[HealthState, dict[str, Any]]:
        from milequest.services.health import HealthState

        return HealthState.HEALTHY, {"outbox": len(self.outbox)}
