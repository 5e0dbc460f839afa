"""Lambda entry point of the fan-out workers: SQS shard jobs in, deliveries out.

Thin: Powertools' batch processing with partial batch failures around
:meth:`ApiGatewayWebSocketService.deliver_shard`. A record fails (and SQS delivers it
again, then moves it to the dead-letter queue) only when its shard is malformed or its
undelivered remainder could not be queued; connections a shard could not reach are queued
again by the service itself, so a retried shard never goes back to those it reached.

The function reports ``{"batchItemFailures": [{"itemIdentifier": <messageId>}, ...]}``
(``ReportBatchItemFailures``) and never raises: an event that is not an SQS batch is logged
and acknowledged empty.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

    from milequest.services.websocket.apigateway import ApiGatewayWebSocketService

logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", "milequest-fanout"))

# Stop starting deliveries this long before the function times out, so that what is left
# is queued again rather than cut off (a post in flight can take a few seconds).
DEADLINE_MARGIN_S = 10.0


def _service() -> ApiGatewayWebSocketService:
    from milequest.services import get_service
    from milequest.services.websocket.apigateway import ApiGatewayWebSocketService
    from milequest.services.websocket.errors import WebSocketError, WebSocketErrorCode

    service = get_service("websocket")
    if not isinstance(service, ApiGatewayWebSocketService):
        raise WebSocketError(
            WebSocketErrorCode.CONFIGURATION,
            f"fan-out shards need the apigateway provider, not {service.provider_name}",
        )
    return service


def _deadline(context: object) -> float | None:
    """When to stop starting deliveries (``time.monotonic()``); None outside Lambda."""
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if not callable(remaining):
        return None
    try:
        seconds = int(remaining()) / 1000
    except (TypeError, ValueError):
        return None
    return time.monotonic() + max(0.0, seconds - DEADLINE_MARGIN_S)


def handler(event: Any, context: Any) -> dict[str, list[dict[str, str]]]:
    """Deliver each record's shard; the records to retry, as Lambda's partial batch response."""
    records = event.get("Records") if isinstance(event, Mapping) else None
    if not isinstance(records, list):
        logger.error("not an SQS batch", extra={"type": type(event).__name__})
        return {"batchItemFailures": []}
    usable = [
        r
        for r in records
        if isinstance(r, Mapping) and isinstance(r.get("messageId"), str) and r["messageId"]
    ]
    if len(usable) < len(records):
        logger.error(
            "records without a messageId ignored", extra={"count": len(records) - len(usable)}
        )
    stop_at = _deadline(context)

    def deliver(record: SQSRecord) -> None:
        report = _service().deliver_shard(record.body, deadline=stop_at)
        logger.info(
            "shard delivered", extra={"message_id": record.message_id, **report.model_dump()}
        )

    processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
    try:
        response = process_partial_response(
            event={"Records": usable}, record_handler=deliver, processor=processor, context=context
        )
    except Exception:
        logger.exception("batch processing failed; every record will be retried")
        return {"batchItemFailures": [{"itemIdentifier": r["messageId"]} for r in usable]}
    failures = response.get("batchItemFailures", [])
    return {"batchItemFailures": [{"itemIdentifier": str(f["itemIdentifier"])} for f in failures]}
