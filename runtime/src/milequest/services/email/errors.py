"""The email service's error type and codes."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import ClassVar

from milequest.services.errors import COMMON_HINTS, ServiceError


class EmailErrorCode(StrEnum):
    """Why an email operation failed (includes every ``CommonErrorCode`` by value)."""

    INVALID_EMAIL = "INVALID_EMAIL"
    INVALID_MESSAGE = "INVALID_MESSAGE"
    TOO_MANY_RECIPIENTS = "TOO_MANY_RECIPIENTS"
    MESSAGE_TOO_LARGE = "MESSAGE_TOO_LARGE"
    SUPPRESSED = "SUPPRESSED"
    NOT_VERIFIED = "NOT_VERIFIED"
    TEMPLATE_NOT_FOUND = "TEMPLATE_NOT_FOUND"
    TEMPLATE_RENDER_FAILED = "TEMPLATE_RENDER_FAILED"
    RATE_LIMITED = "RATE_LIMITED"
    QUOTA_EXCEEDED = "QUOTA_EXCEEDED"
    SENDING_PAUSED = "SENDING_PAUSED"
    MESSAGE_REJECTED = "MESSAGE_REJECTED"
    INVALID_DOMAIN = "INVALID_DOMAIN"
    NOT_FOUND = "NOT_FOUND"
    NOT_SUPPORTED = "NOT_SUPPORTED"
    CONFIGURATION = "CONFIGURATION"
    PROVIDER_UNAVAILABLE = "PROVIDER_UNAVAILABLE"
    PROVIDER_ERROR = "PROVIDER_ERROR"


_HINTS: dict[str, str] = {
    "INVALID_EMAIL": "Fix the address: it must be a valid, non-empty email address.",
    "INVALID_MESSAGE": "Fix the message: it needs a subject and an html or text body, "
    "and no newline in headers or addresses.",
    "TOO_MANY_RECIPIENTS": "Send at most 50 recipients (to + cc + bcc) per message; "
    "use send_bulk_emails for more.",
    "MESSAGE_TOO_LARGE": "Keep the encoded message under 40 MB (attachments included).",
    "SUPPRESSED": "The address is on the suppression list; remove it there only if the "
    "recipient asked to receive mail again.",
    "NOT_VERIFIED": "Verify the sender (or, in the SES sandbox, the recipient) identity first.",
    "TEMPLATE_NOT_FOUND": "Use one of the packaged template names or deploy the template.",
    "TEMPLATE_RENDER_FAILED": "Pass every variable the template uses in the template data.",
    "QUOTA_EXCEEDED": "The sending quota is used up; wait for it to reset or raise the quota.",
    "SENDING_PAUSED": "Sending is paused for the account or configuration set; check "
    "reputation (bounce and complaint rates) and re-enable sending.",
    "MESSAGE_REJECTED": "The provider rejected the message; check its content and sender.",
    "INVALID_DOMAIN": "Give a DNS domain name such as example.com.",
    "NOT_FOUND": "The named item does not exist.",
    "NOT_SUPPORTED": "This provider does not offer the operation; use one that does.",
}


class EmailError(ServiceError):
    """Raised by every email operation; ``code`` is an :class:`EmailErrorCode`.

    ``not_accepted`` is True when the provider cannot have taken the message: its circuit
    was open, it refused the connection, or it answered 429 or 503 to every attempt. Only
    then may the same message go to another provider (``EMAIL_FAILOVER_PROVIDER``).
    """

    code: EmailErrorCode
    hints: ClassVar[Mapping[str, str]] = {**COMMON_HINTS, **_HINTS}
    not_accepted: bool = False


class CircuitOpenError(EmailError):
    """``PROVIDER_UNAVAILABLE`` without a call: the provider's circuit breaker is open."""

    not_accepted = True

    def __init__(self, provider: str, retry_in: float) -> None:
        super().__init__(
            EmailErrorCode.PROVIDER_UNAVAILABLE,
            f"the circuit is open after repeated failures; the next probe in {retry_in:.1f} s",
            provider=provider,
            retryable=True,
        )
        self.retry_in = retry_in

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.provider, self.retry_in))
