"""The email queue's consumer: sends each queued message once, retries what may pass later,
and dead-letters the rest with its reason.

Behind ``milequest.handlers.email_queue`` (one consumer per Lambda instance) and the local
stack's workers (one per thread). For each SQS record of a batch (Powertools batch
processing, partial batch failures):

1. **Send once per key.** The send runs inside Powertools idempotency on the DynamoDB table
   ``EMAIL_IDEMPOTENCY_TABLE``: an ``INPROGRESS`` record is written before the provider
   call and ``COMPLETED`` (with the result) right after it. A redelivered message whose
   record is completed is not sent again.
2. **Permanent failures** (an error that is not retryable: ``INVALID_EMAIL``,
   ``SUPPRESSED``, ``MESSAGE_REJECTED``, ``NOT_VERIFIED``, ...) go to the dead-letter queue
   at once, with attributes ``ErrorCode`` and ``ErrorMessage``.
3. **Retryable failures** (throttling, an outage, an open circuit, another consumer holding
   the key) return to the queue after a visibility timeout that grows with the receive
   count (``EMAIL_QUEUE_RETRY_DELAY`` doubled per receive, at most 900 s). On the last
   allowed receive (``EMAIL_QUEUE_MAX_RECEIVES``) the consumer dead-letters the message
   itself, with its reason; the queue's redrive policy (one receive more) is the backstop
   for a consumer that crashes.

**Rate.** The consumer paces its provider calls at ``rate / EMAIL_QUEUE_CONCURRENCY``
(less 5 %): with the event source's maximum concurrency equal to that setting, the fleet
never exceeds the provider's rate (SES's from ``GetAccount``, the others' from settings).

**The duplicate window.** Providers take no idempotency token, so a consumer killed after
the provider accepted a message and before the ``COMPLETED`` write leaves an ``INPROGRESS``
record. It blocks redeliveries until the killed invocation's time would have run out (the
Lambda context's remaining time when the record was written); the next delivery after that
sends again: at most one duplicate per such crash, counted as ``QueuePossibleDuplicates``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .errors import EmailError, EmailErrorCode
from .queue import (
    ID_ATTRIBUTE,
    KEY_ATTRIBUTE,
    MalformedJob,
    QueuedEmail,
    aws_client,
    claim_check_pointer,
    parse_job,
)

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
    from aws_lambda_powertools.utilities.idempotency.persistence.base import (
        BasePersistenceLayer,
    )
    from aws_lambda_powertools.utilities.idempotency.persistence.datarecord import DataRecord

    from .service import EmailService
    from .settings import EmailSettings

logger = logging.getLogger("milequest.services.email.queue")

IDEMPOTENCY_PREFIX = "milequest-email"
"""The prefix of the idempotency records' keys (stable whatever the code layout)."""
MAX_RETRY_DELAY = 900
ERROR_CODE_ATTRIBUTE = "ErrorCode"
ERROR_MESSAGE_ATTRIBUTE = "ErrorMessage"
RECEIVES_ATTRIBUTE = "ReceiveCount"
DEAD_LETTERED_AT_ATTRIBUTE = "DeadLetteredAt"
PROVIDER_ATTRIBUTE = "Provider"
REASON_ATTRIBUTES = (
    ERROR_CODE_ATTRIBUTE,
    ERROR_MESSAGE_ATTRIBUTE,
    RECEIVES_ATTRIBUTE,
    DEAD_LETTERED_AT_ATTRIBUTE,
    PROVIDER_ATTRIBUTE,
)
_MAX_REASON = 1_000
BatchResponse = dict[str, list[dict[str, str]]]


def idempotency_table_definition() -> dict[str, Any]:
    """The idempotency table as ``CreateTable`` arguments (Powertools' layout: key ``id``,
    TTL attribute ``expiration``); the CDK app and the local stack build from it."""
    return {
        "AttributeDefinitions": [{"AttributeName": "id", "AttributeType": "S"}],
        "KeySchema": [{"AttributeName": "id", "KeyType": "HASH"}],
        "BillingMode": "PAY_PER_REQUEST",
    }


IDEMPOTENCY_TTL_ATTRIBUTE = "expiration"


def retry_delay(receives: int, base: int) -> int:
    """Seconds a message failing on its ``receives``-th receive waits before the next."""
    return int(min(MAX_RETRY_DELAY, base * 2 ** max(0, receives - 1)))


class _Retry(Exception):
    """A record to retry later (reported as a batch item failure)."""


class KeyInProgress(EmailError):
    """Another consumer holds the message's idempotency key (it is sending it now)."""

    def __init__(self) -> None:
        super().__init__(
            EmailErrorCode.PROVIDER_UNAVAILABLE,
            "another consumer is sending this message now (its key is in progress)",
            retryable=True,
        )
        self.retry_in: float | None = None


class _Invocation:
    """What idempotency reads of a Lambda context when the caller gave none."""

    def __init__(self, seconds: float) -> None:
        self._ends = time.monotonic() + seconds

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._ends - time.monotonic()) * 1000))


class EmailQueueConsumer:
    """Sends the records of SQS batches; one per Lambda instance or local worker.

    ``service`` defaults to the configured email service in direct mode (routed when a
    migration is configured), paced at its share of the fleet's rate. ``persistence``,
    ``sqs`` and ``s3`` default to clients from the environment.
    """

    def __init__(
        self,
        service: EmailService | None = None,
        *,
        settings: EmailSettings | None = None,
        persistence: BasePersistenceLayer | None = None,
        sqs: Any = None,
        s3: Any = None,
    ) -> None:
        from aws_lambda_powertools.utilities.idempotency import (
            IdempotencyConfig,
            idempotent_function,
        )

        from .factory import create_email_service

        if service is None:
            service = create_email_service(email_delivery="direct")
            service.pace(1 / service.settings.email_queue_concurrency)
        if service.queue is not None:
            raise EmailError(
                EmailErrorCode.CONFIGURATION,
                "the queue consumer sends: give it a service with EMAIL_DELIVERY=direct",
            )
        self.service = service
        self.settings = settings or service.settings
        table = self.settings.email_idempotency_table
        if persistence is None:
            if not table:
                raise EmailError(
                    EmailErrorCode.CONFIGURATION,
                    "the email queue consumer needs EMAIL_IDEMPOTENCY_TABLE",
                )
            from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer

            persistence = DynamoDBPersistenceLayer(table_name=table)
        self.persistence = persistence
        self.config = IdempotencyConfig(
            event_key_jmespath="idempotency_key",
            raise_on_no_idempotency_key=True,
            expires_after_seconds=self.settings.email_idempotency_ttl,
            response_hook=_replayed,
        )
        self._send_once = idempotent_function(
            self._send,
            data_keyword_argument="job",
            persistence_store=persistence,
            config=self.config,
            key_prefix=IDEMPOTENCY_PREFIX,
        )
        self._sqs = sqs
        self._s3 = s3

    @property
    def sqs(self) -> Any:
        """The SQS client (dead-lettering, retry delays)."""
        if self._sqs is None:
            self._sqs = aws_client("sqs", self.settings)
        return self._sqs

    @property
    def s3(self) -> Any:
        """The S3 client (claim-checked bodies)."""
        if self._s3 is None:
            self._s3 = aws_client("s3", self.settings)
        return self._s3

    # -- a batch -----------------------------------------------------------------------

    def handle(self, event: object, context: object = None) -> BatchResponse:
        """Process an SQS event; ``{"batchItemFailures": [...]}`` lists the records to retry.

        Never raises: an event that is not an SQS batch is logged and acknowledged empty.
        """
        from aws_lambda_powertools.utilities.batch import (
            BatchProcessor,
            EventType,
            process_partial_response,
        )

        records = event.get("Records") if isinstance(event, Mapping) else None
        if not isinstance(records, list):
            logger.error("not an SQS batch: %s", type(event).__name__)
            return {"batchItemFailures": []}
        usable = [
            r
            for r in records
            if isinstance(r, Mapping) and isinstance(r.get("messageId"), str) and r["messageId"]
        ]
        if len(usable) < len(records):
            logger.error("%d records without a messageId ignored", len(records) - len(usable))
        remaining = getattr(context, "get_remaining_time_in_millis", None)
        if not callable(remaining):
            # In-progress idempotency records must expire: a crashed send would block the
            # message until the whole record did (EMAIL_IDEMPOTENCY_TTL).
            context = _Invocation(self.settings.email_call_timeout + 60)
        self.config.register_lambda_context(context)  # type: ignore[arg-type]
        processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
        try:
            response = process_partial_response(
                event={"Records": usable},
                record_handler=self.process,
                processor=processor,
                context=context,  # type: ignore[arg-type]
            )
        except Exception:
            logger.exception("batch processing failed; every record will be retried")
            return {"batchItemFailures": [{"itemIdentifier": r["messageId"]} for r in usable]}
        failures = response.get("batchItemFailures", [])
        retry = [{"itemIdentifier": str(f["itemIdentifier"])} for f in failures]
        return {"batchItemFailures": retry}

    # -- a record ----------------------------------------------------------------------

    def process(self, record: SQSRecord) -> None:
        """Send one record's message; raise to have it retried (a batch item failure)."""
        raw: Mapping[str, Any] = record.raw_event
        receives = _receives(raw)
        job: QueuedEmail | None = None
        try:
            job = self._job(raw)
            failure = self._attempt(job, receives)
        except MalformedJob as exc:
            self._dead_letter(raw, None, EmailErrorCode.INVALID_MESSAGE.value, str(exc), receives)
            return
        except EmailError as exc:
            failure = exc
        if failure is None:
            return
        if not failure.retryable or receives >= self.settings.email_queue_max_receives:
            self._dead_letter(
                raw, job, failure.code.value, failure.message, receives, failure.provider
            )
            return
        self._retry_later(raw, receives, failure)
        raise _Retry(f"{failure.code.value}: {failure.message}")

    def _attempt(self, job: QueuedEmail, receives: int) -> EmailError | None:
        """Send ``job`` unless its key was sent already; the failure, if any."""
        if receives > 1:
            self._check_crash_window(job)
        try:
            outcome = self._send_once(job={"idempotency_key": job.idempotency_key}, queued=job)
        except EmailError as exc:
            return exc
        except Exception as exc:
            return self._idempotency_failure(job, exc)
        self._sent(job, outcome)
        return None

    def _idempotency_failure(self, job: QueuedEmail, exc: Exception) -> EmailError:
        from aws_lambda_powertools.utilities.idempotency.exceptions import (
            IdempotencyAlreadyInProgressError,
            IdempotencyKeyError,
        )

        if isinstance(exc, IdempotencyKeyError):
            return EmailError(EmailErrorCode.INVALID_MESSAGE, f"no idempotency key: {exc}")
        if not isinstance(exc, IdempotencyAlreadyInProgressError):
            return EmailError(
                EmailErrorCode.PROVIDER_UNAVAILABLE,
                f"the idempotency store failed: {type(exc).__name__}: {exc}",
                retryable=True,
            )
        failure = KeyInProgress()
        record = self._record(job)
        expiry = record.in_progress_expiry_timestamp if record is not None else None
        if expiry is not None:  # come back when the other consumer's time has run out
            failure.retry_in = max(0.0, float(expiry) / 1000 - time.time())
        return failure

    def _record(self, job: QueuedEmail) -> DataRecord | None:
        """The key's idempotency record, if it can be read."""
        try:
            self.persistence.configure(self.config, key_prefix=IDEMPOTENCY_PREFIX)
            return self.persistence.get_record(data={"idempotency_key": job.idempotency_key})
        except Exception:  # none (the usual case), or the store failed: the send will tell
            return None

    def _job(self, raw: Mapping[str, Any]) -> QueuedEmail:
        """The record's message; the claim-checked body fetched from S3."""
        body = raw.get("body")
        if not isinstance(body, str):
            raise MalformedJob("a record without a body")
        pointer = claim_check_pointer(body)
        if pointer is not None:
            body = self._fetch(*pointer)
        return parse_job(body)

    def _fetch(self, bucket: str, key: str) -> str:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            data = self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("NoSuchKey", "NoSuchBucket", "404"):
                raise MalformedJob(f"the claim-checked body s3://{bucket}/{key} is gone") from None
            raise EmailError(
                EmailErrorCode.PROVIDER_UNAVAILABLE,
                f"could not read the claim-checked body s3://{bucket}/{key}: {exc}",
                retryable=True,
            ) from exc
        except BotoCoreError as exc:
            raise EmailError(
                EmailErrorCode.PROVIDER_UNAVAILABLE,
                f"could not read the claim-checked body s3://{bucket}/{key}: {exc}",
                retryable=True,
            ) from exc
        try:
            return bytes(data).decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedJob(f"s3://{bucket}/{key} is not UTF-8 text") from None

    def _send(self, *, job: dict[str, Any], queued: QueuedEmail) -> dict[str, Any]:
        """The idempotent unit: one provider send, nothing else, so that the window between
        acceptance and the completed record stays as short as a DynamoDB write."""
        result = self.service.send_email(queued.message)
        return {
            "message_id": result.message_id,
            "provider": result.provider,
            "recipients": [[r.address, r.status.value] for r in result.recipients],
        }

    def _sent(self, job: QueuedEmail, outcome: dict[str, Any]) -> None:
        provider = str(outcome.get("provider") or self.service.provider_name)
        if outcome.get("replayed"):
            logger.info("already sent: %s (key %s)", job.id, job.idempotency_key)
            self.service.record_metric("QueueDuplicatesSkipped", 1, Provider=provider)
            return
        waited = (datetime.now(UTC) - job.enqueued_at).total_seconds()
        logger.info("sent %s through %s as %s", job.id, provider, outcome.get("message_id"))
        self.service.record_metric("QueueSent", 1, Provider=provider)
        self.service.record_metric("QueueDelay", max(0.0, waited), "Seconds", Provider=provider)

    def _check_crash_window(self, job: QueuedEmail) -> None:
        """Count a send that may repeat one a crashed consumer made (see the module doc)."""
        record = self._record(job)
        expiry = record.in_progress_expiry_timestamp if record is not None else None
        if record is None or record.status != "INPROGRESS" or expiry is None:
            return
        if expiry < int(time.time() * 1000):
            logger.warning("%s may be sent twice: an earlier consumer crashed mid-send", job.id)
            self.service.record_metric("QueuePossibleDuplicates", 1)

    # -- outcomes --------------------------------------------------------------------------

    def _retry_later(self, raw: Mapping[str, Any], receives: int, failure: EmailError) -> None:
        delay = retry_delay(receives, self.settings.email_queue_retry_delay)
        retry_in = getattr(failure, "retry_in", None)
        if isinstance(retry_in, float):  # an open circuit, a key in progress: not before then
            delay = min(MAX_RETRY_DELAY, max(delay, int(retry_in) + 1))
        provider = failure.provider or self.service.provider_name
        self.service.record_metric("QueueRetries", 1, Provider=provider, Code=failure.code.value)
        logger.info("retrying %s in %d s: %s", raw.get("messageId"), delay, failure)
        try:
            self.sqs.change_message_visibility(
                QueueUrl=self._queue_url(),
                ReceiptHandle=raw["receiptHandle"],
                VisibilityTimeout=delay,
            )
        except Exception:  # it comes back after the queue's own visibility timeout instead
            logger.warning("could not delay the retry of %s", raw.get("messageId"), exc_info=True)

    def _dead_letter(
        self,
        raw: Mapping[str, Any],
        job: QueuedEmail | None,
        code: str,
        reason: str,
        receives: int,
        provider: str | None = None,
    ) -> None:
        """Move the record to the dead-letter queue with its reason; raise if that fails
        (the record is then retried, and the redrive policy is the backstop)."""
        url = self.settings.email_dead_letter_queue_url
        if not url:
            raise EmailError(EmailErrorCode.CONFIGURATION, "EMAIL_DEAD_LETTER_QUEUE_URL is not set")
        attributes = _kept_attributes(raw)
        if job is not None:
            attributes.setdefault(KEY_ATTRIBUTE, _text(job.idempotency_key))
            attributes.setdefault(ID_ATTRIBUTE, _text(job.id))
        attributes.update(
            {
                ERROR_CODE_ATTRIBUTE: _text(code),
                ERROR_MESSAGE_ATTRIBUTE: _text(reason[:_MAX_REASON] or code),
                RECEIVES_ATTRIBUTE: {"DataType": "Number", "StringValue": str(receives)},
                DEAD_LETTERED_AT_ATTRIBUTE: _text(datetime.now(UTC).isoformat()),
            }
        )
        if provider:
            attributes[PROVIDER_ATTRIBUTE] = _text(provider)
        body = raw.get("body")
        self.sqs.send_message(
            QueueUrl=url,
            MessageBody=body if isinstance(body, str) and body else "(no body)",
            MessageAttributes=attributes,
        )
        logger.warning("dead-lettered %s: %s: %s", raw.get("messageId"), code, reason)
        self.service.record_metric(
            "QueueDeadLettered", 1, Provider=provider or self.service.provider_name, Code=code
        )

    def _queue_url(self) -> str:
        url = self.settings.email_queue_url
        if not url:
            raise EmailError(EmailErrorCode.CONFIGURATION, "EMAIL_QUEUE_URL is not set")
        return url


def _replayed(response: Any, idempotent_data: DataRecord) -> Any:
    """Powertools' hook for a key already completed: mark the saved result as a replay."""
    return {**response, "replayed": True} if isinstance(response, dict) else response


def _receives(raw: Mapping[str, Any]) -> int:
    attributes = raw.get("attributes")
    value = attributes.get("ApproximateReceiveCount") if isinstance(attributes, Mapping) else None
    try:
        return max(1, int(str(value)))
    except ValueError:
        return 1


def _text(value: str) -> dict[str, str]:
    return {"DataType": "String", "StringValue": value}


def _kept_attributes(raw: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """The record's own message attributes (Lambda's shape) in ``SendMessage``'s shape."""
    found = raw.get("messageAttributes")
    kept: dict[str, dict[str, str]] = {}
    if not isinstance(found, Mapping):
        return kept
    for name, value in found.items():
        if name in REASON_ATTRIBUTES or not isinstance(value, Mapping):
            continue
        data_type = value.get("dataType") or value.get("DataType")
        text = value.get("stringValue", value.get("StringValue"))
        if isinstance(name, str) and isinstance(data_type, str) and isinstance(text, str):
            kept[name] = {"DataType": data_type, "StringValue": text}
    return kept
