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


def handler(event: Any, context: Any) -> dict[str, Any]:
    """Normalize each SNS record's SES event, record metrics, suppress bad recipients.

    Returns the counts (``events``, ``suppressed``, ``skipped``, ``unusable``,
    ``failed_suppressions``). Permanent failures (a malformed record, an address that
    cannot be suppressed) are logged, counted and skipped; they never stop the other
    records. Only transient ones raise, after every record was processed, so that Lambda
    retries the event and then sends it to the dead-letter queue.
    """
    request_id = getattr(context, "aws_request_id", None)
    if isinstance(request_id, str):
        logger.append_keys(request_id=request_id)
    report = process_sns_event(event)
    for item in report.events:
        logger.info(
            "email event",
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
        # Suppressing again the recipients that did succeed on the retry is harmless.
        raise EmailError(
            EmailErrorCode.PROVIDER_UNAVAILABLE,
            "could not suppress: " + ", ".join(report.failed_suppressions),
            retryable=True,
        )
    return summary
