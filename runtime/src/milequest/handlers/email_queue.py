"""Lambda entry point of the email queue's consumer: SQS batches of queued mail in, sends out.

Thin: :class:`milequest.services.email.consumer.EmailQueueConsumer` does the work
(Powertools batch processing with partial batch failures, Powertools idempotency on
DynamoDB, the circuit breaker, the paced provider calls, dead-lettering with a reason). One
consumer serves every invocation of an instance, so its breaker and pacing persist between
batches.

The function reports ``{"batchItemFailures": [{"itemIdentifier": <messageId>}, ...]}``
(``ReportBatchItemFailures``) and never raises: when the consumer cannot even be built (a
configuration error), every record is reported failed and comes back later.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger

if TYPE_CHECKING:
    from milequest.services.email.consumer import EmailQueueConsumer

PROCESS_NAME = "email-queue"
logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", PROCESS_NAME))
_consumer: EmailQueueConsumer | None = None


def consumer() -> EmailQueueConsumer:
    """This instance's consumer, built from the environment on first use."""
    global _consumer
    if _consumer is None:
        from milequest.services.email.consumer import EmailQueueConsumer

        _consumer = EmailQueueConsumer()
    return _consumer


def reset() -> None:
    """Forget the consumer (tests; a changed environment)."""
    global _consumer
    _consumer = None


def handler(event: Any, context: Any) -> dict[str, list[dict[str, str]]]:
    """Send each record's message; the records to retry, as Lambda's partial batch response."""
    try:
        worker = consumer()
    except Exception:
        logger.exception("the email queue consumer could not start; the batch will be retried")
        records = event.get("Records") if isinstance(event, Mapping) else None
        ids = [
            r["messageId"]
            for r in (records if isinstance(records, list) else [])
            if isinstance(r, Mapping) and isinstance(r.get("messageId"), str) and r["messageId"]
        ]
        return {"batchItemFailures": [{"itemIdentifier": i} for i in ids]}
    return worker.handle(event, context)
