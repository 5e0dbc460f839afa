"""Transactional email: one interface, SES / Resend / SendGrid / SMTP / mock providers,
packaged templates, one shared suppression list, direct or queued delivery, and routing
among providers during a migration.

```python
from milequest.services.email import create_email_service

email = create_email_service()  # EMAIL_PROVIDER: ses | resend | sendgrid | smtp | mock
email.send_email({"to": "user@example.com", "subject": "Hi", "html": "<h1>Hi</h1>"})
email.send_templated_email("welcome", "user@example.com", {"name": "John Doe"})
```

Names are resolved lazily (PEP 562) so that importing this package stays cheap: pydantic
models, email-validator and template rendering load on first use, not at cold start.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from milequest.services.lazy import lazy_attribute

from .errors import CircuitOpenError, EmailError, EmailErrorCode
from .factory import create_email_service

if TYPE_CHECKING:
    from .consumer import EmailQueueConsumer
    from .events import EmailEvent, EmailEventType
    from .models import Attachment, EmailMessage
    from .results import (
        BulkItemResult,
        BulkSendResult,
        DnsRecord,
        DomainVerification,
        EmailValidation,
        ErrorInfo,
        RecipientResult,
        RecipientStatus,
        SendResult,
        SuppressedEmail,
        SuppressionReason,
        ValidationReason,
        VerificationStatus,
    )
    from .routing import RoutedEmailService
    from .service import EmailService
    from .settings import EmailSettings
    from .suppression import MemorySuppressionStore, SuppressionStore
    from .suppression_dynamodb import DynamoSuppressionStore

_LAZY = {
    "EmailQueueConsumer": "consumer",
    "RoutedEmailService": "routing",
    "EmailEvent": "events",
    "EmailEventType": "events",
    "SuppressionStore": "suppression",
    "MemorySuppressionStore": "suppression",
    "DynamoSuppressionStore": "suppression_dynamodb",
    "Attachment": "models",
    "EmailMessage": "models",
    "BulkItemResult": "results",
    "BulkSendResult": "results",
    "DnsRecord": "results",
    "DomainVerification": "results",
    "EmailValidation": "results",
    "ErrorInfo": "results",
    "RecipientResult": "results",
    "RecipientStatus": "results",
    "SendResult": "results",
    "SuppressedEmail": "results",
    "SuppressionReason": "results",
    "ValidationReason": "results",
    "VerificationStatus": "results",
    "EmailService": "service",
    "EmailSettings": "settings",
}

__all__ = [
    "Attachment",
    "BulkItemResult",
    "BulkSendResult",
    "CircuitOpenError",
    "DnsRecord",
    "DomainVerification",
    "DynamoSuppressionStore",
    "EmailError",
    "EmailErrorCode",
    "EmailEvent",
    "EmailEventType",
    "EmailMessage",
    "EmailQueueConsumer",
    "EmailService",
    "EmailSettings",
    "EmailValidation",
    "ErrorInfo",
    "MemorySuppressionStore",
    "RecipientResult",
    "RecipientStatus",
    "RoutedEmailService",
    "SendResult",
    "SuppressedEmail",
    "SuppressionReason",
    "SuppressionStore",
    "ValidationReason",
    "VerificationStatus",
    "create_email_service",
]


def __getattr__(name: str) -> Any:
    return lazy_attribute(__name__, _LAZY, globals(), name)


def __dir__() -> list[str]:
    return sorted(__all__)
