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

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .sqs_source import Handler, SqsEventSource, create_queue

if TYPE_CHECKING:
    from milequest.services.email.consumer import EmailQueueConsumer

    from .aws import EmbeddedAws


QUEUE_NAME = "milequest-local-email"
BUCKET_NAME = "milequest-local-email-claim-check"
TABLE_NAME = "milequest-local-email-idempotency"
CLAIM_CHECK_DAYS = 30


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
    refs = create_queue(
        sqs, name, visibility_timeout=visibility_timeout, max_receive_count=max_receives + 1
    )
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
    return EmailQueueResources(
        refs.url, refs.arn, refs.dead_letter_queue_url, bucket, table, max_receives
    )


class LocalEmailQueue(SqsEventSource):
    """``workers`` threads consuming the email queue, each with a consumer of its own."""

    function_name = "email-queue"

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

        super().__init__(
            boto3.client("sqs", **client_options),
            resources.queue_url,
            resources.queue_arn,
            workers=workers,
            batch_size=batch_size,
            invocation_timeout_s=invocation_timeout_s,
            wait_seconds=wait_seconds,
            region=str(client_options.get("region_name") or "us-east-1"),
        )
        self.resources = resources
        self._handler = handler
        self._factory = consumer_factory

    @property
    def environment(self) -> dict[str, str]:
        """What senders and the consumers need (export it before :meth:`start`)."""
        return self.resources.environment(self.workers)

    def worker_handler(self) -> Handler:
        """This worker's consumer (built from the environment), like one Lambda instance."""
        if self._handler is not None:
            return self._handler
        if self._factory is not None:
            return self._factory().handle
        from milequest.services.email.consumer import EmailQueueConsumer

        return EmailQueueConsumer().handle

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

    Export its :attr:`~LocalEmailQueue.environment`, then start it.
    """
    options = aws.client_options()
    return LocalEmailQueue(create_email_queue_resources(options), options, workers=workers)
