"""The local email queue: SQS, S3 and DynamoDB on the embedded AWS, and in-process consumers.

:func:`create_email_queue_resources` makes what the CDK app makes in AWS: the queue and its
dead-letter queue (a message moves there after ``max_receives + 1`` receives, the backstop
behind the consumer's own dead-lettering), the claim-check bucket with its lifecycle rule,
and the idempotency table with TTL. :class:`LocalEmailQueue` then plays Lambda's SQS event
source: each of its workers, like one Lambda instance, has its own
:class:`~milequest.services.email.consumer.EmailQueueConsumer` (its own circuit breaker and
its share of the send rate), long-polls a batch, hands it over as an SQS event, and deletes
the records not reported as failed.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from milequest.services.email.consumer import EmailQueueConsumer

    from .aws import EmbeddedAws

logger = logging.getLogger("milequest.local.email_queue")

QUEUE_NAME = "milequest-local-email"
BUCKET_NAME = "milequest-local-email-claim-check"
TABLE_NAME = "milequest-local-email-idempotency"
CLAIM_CHECK_DAYS = 30
Handler = Callable[[dict[str, Any], Any], dict[str, Any]]


@dataclass(frozen=True)
class EmailQueueResources:
    """The email queue's resources on the embedded AWS."""

    queue_url: str
    queue_arn: str
    dead_letter_queue_url: str
    bucket: str
    table: str
    max_receives: int

    def environment(self, workers: int) -> dict[str, str]:
        """The variables that point senders and consumers at these resources."""
        return {
            "EMAIL_DELIVERY": "queue",
            "EMAIL_QUEUE_URL": self.queue_url,
            "EMAIL_DEAD_LETTER_QUEUE_URL": self.dead_letter_queue_url,
            "EMAIL_QUEUE_BUCKET": self.bucket,
            "EMAIL_IDEMPOTENCY_TABLE": self.table,
            "EMAIL_QUEUE_CONCURRENCY": str(workers),
            "EMAIL_QUEUE_MAX_RECEIVES": str(self.max_receives),
        }


def create_email_queue_resources(
    client_options: dict[str, Any],
    *,
    name: str = QUEUE_NAME,
    bucket: str = BUCKET_NAME,
    table: str = TABLE_NAME,
    visibility_timeout: int = 30,
    max_receives: int = 8,
) -> EmailQueueResources:
    """Create (or find) the queue, its dead-letter queue, the bucket and the table."""
    import boto3
    from botocore.exceptions import ClientError

    from milequest.services.email.consumer import (
        IDEMPOTENCY_TTL_ATTRIBUTE,
        idempotency_table_definition,
    )

    sqs = boto3.client("sqs", **client_options)
    dlq_url = sqs.create_queue(
        QueueName=f"{name}-dlq", Attributes={"MessageRetentionPeriod": str(14 * 24 * 3600)}
    )["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    redrive = {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(max_receives + 1)}
    url = sqs.create_queue(
        QueueName=name,
        Attributes={
            "VisibilityTimeout": str(visibility_timeout),
            "RedrivePolicy": json.dumps(redrive),
        },
    )["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    s3 = boto3.client("s3", **client_options)
    try:
        s3.create_bucket(Bucket=bucket)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "BucketAlreadyOwnedByYou":
            raise
    s3.put_bucket_lifecycle_configuration(
        Bucket=bucket,
        LifecycleConfiguration={
            "Rules": [
                {
                    "ID": "claim-checks",
                    "Status": "Enabled",
                    "Filter": {"Prefix": ""},
                    "Expiration": {"Days": CLAIM_CHECK_DAYS},
                }
            ]
        },
    )
    dynamodb = boto3.client("dynamodb", **client_options)
    try:
        dynamodb.create_table(TableName=table, **idempotency_table_definition())
        dynamodb.update_time_to_live(
            TableName=table,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": IDEMPOTENCY_TTL_ATTRIBUTE},
        )
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "ResourceInUseException":
            raise
    return EmailQueueResources(url, arn, dlq_url, bucket, table, max_receives)


class _Invocation:
    """The parts of Lambda's context object the consumer reads."""

    def __init__(self, timeout_s: float) -> None:
        self.aws_request_id = str(uuid.uuid4())
        self.function_name = "email-queue"
        self._ends = time.monotonic() + timeout_s

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._ends - time.monotonic()) * 1000))


def lambda_record(message: Mapping[str, Any], queue_arn: str, region: str) -> dict[str, Any]:
    """An SQS ``ReceiveMessage`` message as Lambda's event source hands it to a function."""
    attributes = {
        name: {
            "stringValue": value.get("StringValue"),
            "binaryValue": value.get("BinaryValue"),
            "stringListValues": [],
            "binaryListValues": [],
            "dataType": value.get("DataType", "String"),
        }
        for name, value in (message.get("MessageAttributes") or {}).items()
    }
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": dict(message.get("Attributes", {})),
        "messageAttributes": attributes,
        "md5OfBody": message.get("MD5OfBody", ""),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": region,
    }


class LocalEmailQueue:
    """``workers`` threads consuming the email queue, each with a consumer of its own."""

    def __init__(
        self,
        resources: EmailQueueResources,
        client_options: dict[str, Any],
        *,
        workers: int = 2,
        batch_size: int = 10,
        invocation_timeout_s: float = 60.0,
        wait_seconds: int = 1,
        handler: Handler | None = None,
        consumer_factory: Callable[[], EmailQueueConsumer] | None = None,
    ) -> None:
        import boto3

        self.resources = resources
        self.workers = workers
        self._sqs = boto3.client("sqs", **client_options)
        self._region = str(client_options.get("region_name") or "us-east-1")
        self._batch_size = batch_size
        self._timeout = invocation_timeout_s
        self._wait = wait_seconds
        self._handler = handler
        self._factory = consumer_factory
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self.processed = 0
        self.retried = 0

    @property
    def environment(self) -> dict[str, str]:
        """What senders and the consumers need (export it before :meth:`start`)."""
        return self.resources.environment(self.workers)

    def start(self) -> LocalEmailQueue:
        """Start the workers (their consumers are built from the environment)."""
        self._stop.clear()
        self._threads = [
            threading.Thread(target=self._run, name=f"email-queue-{i}", daemon=True)
            for i in range(self.workers)
        ]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the batches in hand, then stop (within ``timeout`` seconds)."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._threads = []

    def _run(self) -> None:
        handle: Handler | None = self._handler
        while not self._stop.is_set():
            try:
                if handle is None:
                    handle = self._consumer().handle
                self.poll_once(handle)
            except Exception:
                logger.exception("email queue worker: polling failed")
                self._stop.wait(1.0)

    def _consumer(self) -> EmailQueueConsumer:
        if self._factory is not None:
            return self._factory()
        from milequest.services.email.consumer import EmailQueueConsumer

        return EmailQueueConsumer()

    def poll_once(self, handle: Handler) -> int:
        """Receive one batch and run ``handle`` on it; how many messages came."""
        messages = self._sqs.receive_message(
            QueueUrl=self.resources.queue_url,
            MaxNumberOfMessages=self._batch_size,
            WaitTimeSeconds=self._wait,
            MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        if not messages:
            return 0
        records = [lambda_record(m, self.resources.queue_arn, self._region) for m in messages]
        try:
            response = handle({"Records": records}, _Invocation(self._timeout))
            failed = {f["itemIdentifier"] for f in response.get("batchItemFailures", [])}
        except Exception:  # as Lambda: a raising function fails the whole batch
            logger.exception("the email queue handler raised")
            failed = {r["messageId"] for r in records}
        done = [r for r in records if r["messageId"] not in failed]
        for start in range(0, len(done), 10):
            self._sqs.delete_message_batch(
                QueueUrl=self.resources.queue_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": r["receiptHandle"]}
                    for i, r in enumerate(done[start : start + 10])
                ],
            )
        with self._lock:
            self.processed += len(done)
            self.retried += len(failed)
        return len(messages)

    def state(self) -> dict[str, Any]:
        """Counts for the dev console: waiting, in flight, processed, retried, dead letters."""
        from milequest.services.email.dead_letters import DeadLetterQueue

        attributes = self._sqs.get_queue_attributes(
            QueueUrl=self.resources.queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        dead = DeadLetterQueue(
            self._sqs, self.resources.dead_letter_queue_url, self.resources.queue_url
        )
        return {
            "queued": int(attributes.get("ApproximateNumberOfMessages", 0)),
            "in_flight": int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0)),
            "processed": self.processed,
            "retried": self.retried,
            "dead_letters": [letter.to_dict() for letter in dead.entries(visibility=5)],
        }


def create_email_queue(aws: EmbeddedAws, *, workers: int = 2) -> LocalEmailQueue:
    """The email queue's resources on a started embedded AWS, and its (idle) workers.

    Export its :attr:`~LocalEmailQueue.environment`, then :func:`start_email_queue`.
    """
    options = aws.client_options()
    return LocalEmailQueue(create_email_queue_resources(options), options, workers=workers)


def start_email_queue(queue: LocalEmailQueue) -> LocalEmailQueue:
    """Start the workers (their consumers read the environment the queue exported)."""
    return queue.start()


def stop_email_queue(queue: LocalEmailQueue | None) -> None:
    """Stop the workers, if any (before the embedded AWS stops)."""
    if queue is not None:
        queue.stop()
