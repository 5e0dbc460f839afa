"""The local fan-out workers: the shard queue on the embedded SQS and an in-process consumer.

:func:`create_fanout_queues` makes the shard queue and its dead-letter queue (a shard moves
there after ``max_receive_count`` receives), as the CDK app does in AWS.
:class:`FanoutConsumer` then plays Lambda's SQS event source with N worker threads: each
long-polls a batch, hands it to ``milequest.handlers.fanout.handler`` as an SQS event,
deletes the records the handler did not report as failed, and leaves the failed ones to
come back after the visibility timeout.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import MessageTypeDef

logger = logging.getLogger("milequest.local.fanout")

QUEUE_NAME = "milequest-local-fanout"
INVOCATION_TIMEOUT_S = 25.0
# As in AWS: six times the function's timeout, so that a shard still being delivered is not
# handed to a second worker.
VISIBILITY_TIMEOUT_S = int(6 * INVOCATION_TIMEOUT_S)
Handler = Callable[[dict[str, Any], Any], dict[str, Any]]


@dataclass(frozen=True)
class FanoutQueues:
    """The shard queue and its dead-letter queue."""

    queue_url: str
    queue_arn: str
    dead_letter_queue_url: str


def create_fanout_queues(
    sqs: SQSClient,
    *,
    name: str = QUEUE_NAME,
    visibility_timeout: int = VISIBILITY_TIMEOUT_S,
    max_receive_count: int = 5,
) -> FanoutQueues:
    """Create (or find) the shard queue, redriving to a dead-letter queue."""
    dlq_url = sqs.create_queue(
        QueueName=f"{name}-dlq", Attributes={"MessageRetentionPeriod": str(14 * 24 * 3600)}
    )["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    redrive = {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(max_receive_count)}
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
    return FanoutQueues(url, arn, dlq_url)


class _Invocation:
    """The parts of Lambda's context object the handlers read."""

    def __init__(self, timeout_s: float) -> None:
        self.aws_request_id = str(uuid.uuid4())
        self.function_name = "fanout"
        self._ends = time.monotonic() + timeout_s

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._ends - time.monotonic()) * 1000))


def _record(message: MessageTypeDef, queue_arn: str, region: str) -> dict[str, Any]:
    """An SQS message as Lambda's event source hands it to a function."""
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": dict(message.get("Attributes", {})),
        "messageAttributes": {},
        "md5OfBody": message.get("MD5OfBody", ""),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": region,
    }


class FanoutConsumer:
    """``workers`` threads consuming the shard queue into the fan-out handler."""

    def __init__(
        self,
        sqs: SQSClient,
        queues: FanoutQueues,
        *,
        workers: int = 4,
        batch_size: int = 1,
        invocation_timeout_s: float = INVOCATION_TIMEOUT_S,
        wait_seconds: int = 1,
        region: str = "us-east-1",
        handler: Handler | None = None,
    ) -> None:
        self._sqs = sqs
        self.queues = queues
        self.workers = workers
        self._batch_size = batch_size
        self._timeout = invocation_timeout_s
        self._wait = wait_seconds
        self._region = region
        self._handler = handler
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.batches = 0
        self._count_lock = threading.Lock()

    def start(self) -> FanoutConsumer:
        self._stop.clear()
        self._threads = [
            threading.Thread(target=self._run, name=f"fanout-worker-{i}", daemon=True)
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

    def _handle(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        if self._handler is not None:
            return self._handler(event, context)
        from milequest.handlers.fanout import handler

        return handler(event, context)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
            except Exception:
                logger.exception("fan-out worker: polling failed")
                self._stop.wait(1.0)

    def poll_once(self) -> int:
        """Receive one batch and run the handler on it; how many messages came."""
        messages = self._sqs.receive_message(
            QueueUrl=self.queues.queue_url,
            MaxNumberOfMessages=self._batch_size,
            WaitTimeSeconds=self._wait,
            MessageSystemAttributeNames=["All"],
        ).get("Messages", [])
        if not messages:
            return 0
        records = [_record(m, self.queues.queue_arn, self._region) for m in messages]
        try:
            response = self._handle({"Records": records}, _Invocation(self._timeout))
            failed = {f["itemIdentifier"] for f in response.get("batchItemFailures", [])}
        except Exception:  # as Lambda: a raising function fails the whole batch
            logger.exception("fan-out handler raised")
            failed = {r["messageId"] for r in records}
        done = [r for r in records if r["messageId"] not in failed]
        for start in range(0, len(done), 10):
            self._sqs.delete_message_batch(
                QueueUrl=self.queues.queue_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": r["receiptHandle"]}
                    for i, r in enumerate(done[start : start + 10])
                ],
            )
        with self._count_lock:
            self.batches += 1
        return len(messages)
