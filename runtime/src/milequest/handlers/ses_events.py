"""Lambda entry point for SES sending events delivered by SNS.

Thin by design: the parsing, metrics and suppression live in
:mod:`milequest.services.email.events`.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger

from milequest.services.email.errors import EmailError, EmailErrorCode
from milequest.services.email.events import process_sns_event

logger = Logger(service="ses-events")


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Normalize each SNS record's SES event, record metrics, suppress bad recipients.

    Malformed records are logged and skipped; they never fail the others.
    """
    if context is not None and hasattr(context, "aws_request_id"):
        logger.append_keys(request_id=context.aws_request_id)
    report = process_sns_event(event)
    for item in report.events:
        logger.info(
            "ses event",
            extra={
                "type": item.type.value,
                "recipient": item.recipient,
                "message_id": item.message_id,
                "bounce_type": item.bounce_type,
            },
        )
    summary = report.summary()
    logger.info("processed SES events", extra=summary)
    if report.failed_suppressions:
        # Fail the invocation so SNS/Lambda retry it (then the dead-letter queue); suppressing
        # again the recipients that did succeed is harmless.
        raise EmailError(
            EmailErrorCode.PROVIDER_UNAVAILABLE,
            "could not suppress: " + ", ".join(report.failed_suppressions),
            retryable=True,
        )
    return summary
