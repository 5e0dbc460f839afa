"""The email queue on moto for tests: its resources, a consumer loop, the dead letters."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import boto3
from milequest.local.email_queue import (
    EmailQueueResources,
    LocalEmailQueue,
    create_email_queue_resources,
)
from milequest.services.email.consumer import EmailQueueConsumer
from milequest.services.email.dead_letters import DeadLetter, DeadLetterQueue

_names = itertools.count(1)


@dataclass
class QueueHarness:
    """One test's queue, with Lambda's event source played one batch at a time."""

    endpoint: str
    resources: EmailQueueResources
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def create(cls, endpoint: str, *, max_receives: int = 3, visibility: int = 2) -> QueueHarness:
        options = {
            "endpoint_url": endpoint,
            "region_name": "us-east-1",
            "aws_access_key_id": "testing",
            "aws_secret_access_key": "testing",
        }
        n = next(_names)
        resources = create_email_queue_resources(
            options,
            name=f"email-{n}",
            bucket=f"email-claims-{n}",
            table=f"email-idempotency-{n}",
            visibility_timeout=visibility,
            max_receives=max_receives,
        )
        return cls(endpoint, resources, options)

    @property
    def sqs(self) -> Any:
        return boto3.client("sqs", **self.options)

    @property
    def s3(self) -> Any:
        return boto3.client("s3", **self.options)

    @property
    def dynamodb(self) -> Any:
        return boto3.client("dynamodb", **self.options)

    def source(self, **options: Any) -> LocalEmailQueue:
        """Lambda's SQS event source over this queue (no waiting on empty receives)."""
        return LocalEmailQueue(self.resources, self.options, wait_seconds=0, **options)

    def drain(
        self,
        consumer: EmailQueueConsumer | Callable[[dict[str, Any], Any], dict[str, Any]],
        timeout: float = 60,
    ) -> int:
        """Run batches until the queue holds nothing, visible or in flight; the batch count."""
        handle = consumer.handle if isinstance(consumer, EmailQueueConsumer) else consumer
        source = self.source()
        deadline = time.monotonic() + timeout
        batches = 0
        while time.monotonic() < deadline:
            if source.poll_once(handle):
                batches += 1
                continue
            if self.waiting() == 0:
                return batches
            time.sleep(0.1)
        raise AssertionError(f"the email queue did not drain: {self.waiting()} left")

    def waiting(self) -> int:
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=self.resources.queue_url,
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
            ],
        )["Attributes"]
        return sum(int(v) for v in attributes.values())

    def dead_letters(self) -> list[DeadLetter]:
        return self.dlq().entries()

    def dlq(self) -> DeadLetterQueue:
        return DeadLetterQueue(
            self.sqs, self.resources.dead_letter_queue_url, self.resources.queue_url
        )

    def take_all(self) -> list[dict[str, Any]]:
        """Every message waiting, as SQS hands them out, removed from the queue."""
        sqs = self.sqs
        found: list[dict[str, Any]] = []
        while True:
            batch = sqs.receive_message(
                QueueUrl=self.resources.queue_url,
                MaxNumberOfMessages=10,
                MessageAttributeNames=["All"],
                MessageSystemAttributeNames=["All"],
            ).get("Messages", [])
            if not batch:
                return found
            for message in batch:
                sqs.delete_message(
                    QueueUrl=self.resources.queue_url, ReceiptHandle=message["ReceiptHandle"]
                )
            found.extend(batch)

    def idempotency_records(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.dynamodb.scan(TableName=self.resources.table)["Items"]
        return items
