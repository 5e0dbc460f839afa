"""What the email service returns: plain, slotted dataclasses (cheap to build by the 100,000)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from .errors import EmailError, EmailErrorCode


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, StrEnum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat()
    return value


class _Result:
    """JSON-friendly ``to_dict()`` for every result type."""

    __slots__ = ()

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = _jsonable(asdict(self))  # type: ignore[call-overload]
        return data


class RecipientStatus(StrEnum):
    """What happened to one recipient of a sent message.

    ``SENT``: the provider took the message for this recipient. ``ACCEPTED``: the provider
    took the request but reports nothing per recipient (SendGrid answers 202); the outcome
    arrives later as events. Both count as accepted. ``QUEUED``: on the email queue
    (``EMAIL_DELIVERY=queue``); the consumer sends it, and events carry the message's id.
    """

    SENT = "sent"
    ACCEPTED = "accepted"
    QUEUED = "queued"
    SUPPRESSED = "suppressed"
    REJECTED = "rejected"


_ACCEPTED = frozenset({RecipientStatus.SENT, RecipientStatus.ACCEPTED})


@dataclass(frozen=True, slots=True)
class RecipientResult(_Result):
    """One recipient's status, with the provider's reason when it was not sent."""

    address: str
    status: RecipientStatus
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class SendResult(_Result):
    """The outcome of one message: the provider's message id and each recipient's status.

    A queued message (``EMAIL_DELIVERY=queue``) has our id instead, the ``milequest_id`` tag
    its provider events carry; its recipients are ``QUEUED`` and ``provider`` names the
    configured provider (the consumer's routing picks the one that sends it).
    """

    message_id: str
    provider: str
    recipients: tuple[RecipientResult, ...]

    @property
    def accepted(self) -> list[str]:
        """Recipients the provider accepted (``SENT`` or ``ACCEPTED``)."""
        return [r.address for r in self.recipients if r.status in _ACCEPTED]

    @property
    def suppressed(self) -> list[str]:
        """Recipients left out because they are on the suppression list."""
        return [r.address for r in self.recipients if r.status is RecipientStatus.SUPPRESSED]

    @property
    def queued(self) -> list[str]:
        """Recipients of a message put on the email queue, to be sent by its consumer."""
        return [r.address for r in self.recipients if r.status is RecipientStatus.QUEUED]


@dataclass(frozen=True, slots=True)
class ErrorInfo(_Result):
    """A failure inside a bulk send (kept instead of the exception and its traceback).

    ``not_accepted``: the provider cannot have taken the message (see ``EmailError``).
    """

    code: EmailErrorCode
    message: str
    retryable: bool = False
    not_accepted: bool = False

    @classmethod
    def of(cls, error: EmailError) -> ErrorInfo:
        return cls(
            EmailErrorCode(error.code.value), error.message, error.retryable, error.not_accepted
        )


@dataclass(frozen=True, slots=True)
class BulkItemResult(_Result):
    """One input message of a bulk send, at ``index`` in the input.

    ``provider`` names the provider that sent or refused it (routing may use several);
    ``queued`` is True when it went on the email queue (``message_id`` is then our id).
    """

    index: int
    ok: bool
    message_id: str | None
    recipients: tuple[str, ...]
    error: ErrorInfo | None = None
    suppressed: tuple[str, ...] = ()
    provider: str | None = None
    queued: bool = False


@dataclass(slots=True)
class BulkSendResult(_Result):
    """One entry per input message, in input order; failures are reported, not raised."""

    provider: str
    results: list[BulkItemResult] = field(default_factory=list)

    @property
    def total(self) -> int:
        return len(self.results)

    @property
    def succeeded(self) -> int:
        return sum(1 for r in self.results if r.ok)

    @property
    def failed(self) -> int:
        return self.total - self.succeeded

    def failures(self) -> list[BulkItemResult]:
        """The results of the messages that failed."""
        return [r for r in self.results if not r.ok]


class ValidationReason(StrEnum):
    """Why :meth:`EmailService.validate_email` judged an address as it did."""

    OK = "ok"
    INVALID_SYNTAX = "invalid_syntax"
    SUPPRESSED = "suppressed"


@dataclass(frozen=True, slots=True)
class EmailValidation(_Result):
    """Whether an address can be mailed, and why not."""

    address: str
    valid: bool
    reason: ValidationReason
    normalized: str | None = None
    detail: str | None = None


class SuppressionReason(StrEnum):
    """Why an address is suppressed.

    ``BOUNCE`` and ``COMPLAINT`` stop every message; ``UNSUBSCRIBE`` stops bulk mail of one
    category (or of every category), never transactional mail.
    """

    BOUNCE = "BOUNCE"
    COMPLAINT = "COMPLAINT"
    UNSUBSCRIBE = "UNSUBSCRIBE"


@dataclass(frozen=True, slots=True)
class SuppressedEmail(_Result):
    """An entry of the suppression list.

    ``category`` is set for unsubscribes only: the bulk category, or ``"*"`` for all of them.
    ``source`` says where the entry came from (a provider's events, a webhook, an import).
    """

    address: str
    reason: SuppressionReason
    last_update: datetime
    category: str | None = None
    source: str | None = None


class VerificationStatus(StrEnum):
    """A sending identity's verification state."""

    PENDING = "pending"
    VERIFIED = "verified"
    FAILED = "failed"
    TEMPORARY_FAILURE = "temporary_failure"
    NOT_STARTED = "not_started"


@dataclass(frozen=True, slots=True)
class DnsRecord(_Result):
    """A DNS record a domain owner must publish.

    ``purpose`` is ``dkim``, ``spf``, ``return_path`` (the bounce domain, which makes SPF
    align for DMARC) or ``verification``; ``priority`` is set for MX records.
    """

    type: str
    name: str
    value: str
    purpose: str = "dkim"
    priority: int | None = None


@dataclass(frozen=True, slots=True)
class DomainVerification(_Result):
    """A domain identity's status and the DNS records its owner must publish."""

    domain: str
    status: VerificationStatus
    records: tuple[DnsRecord, ...] = ()

    @property
    def verified(self) -> bool:
        return self.status is VerificationStatus.VERIFIED


def ses_domain_records(
    domain: str, tokens: list[str] | tuple[str, ...], mail_from: str | None, region: str
) -> tuple[DnsRecord, ...]:
    """SES's records: Easy DKIM (``<token>._domainkey.<domain>`` CNAME
    ``<token>.dkim.amazonses.com``) and, for the custom MAIL FROM domain (the return path),
    its MX to SES's feedback endpoint and its SPF include."""
    records = [
        DnsRecord("CNAME", f"{t}._domainkey.{domain}", f"{t}.dkim.amazonses.com", "dkim")
        for t in tokens
    ]
    if mail_from:
        records += [
            DnsRecord("MX", mail_from, f"feedback-smtp.{region}.amazonses.com", "return_path", 10),
            DnsRecord("TXT", mail_from, "v=spf1 include:amazonses.com ~all", "spf"),
        ]
    return tuple(records)
