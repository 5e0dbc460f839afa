"""Lambda's SQS event source, played in process for the local stack's queues.

:func:`create_queue` makes a queue redriving to its dead-letter queue, as the CDK app does.
:class:`SqsEventSource` runs N worker threads; each, like one Lambda instance, long-polls a
batch, hands it to its handler as an SQS event with a Lambda-like context, deletes the
records the handler did not report as failed (partial batch responses) and leaves the
failed ones to come back after the visibility timeout. A handler that raises fails the
whole batch, as in Lambda.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Self

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

logger = logging.getLogger("milequest.local.sqs")

Handler = Callable[[dict[str, Any], Any], dict[str, Any]]
DEAD_LETTER_RETENTION_S = 14 * 24 * 3600


@dataclass(frozen=True)
class QueueRefs:
    """A queue and its dead-letter queue."""

    url: str
    arn: str
    dead_letter_queue_url: str


def create_queue(
    sqs: SQSClient, name: str, *, visibility_timeout: int, max_receive_count: int
) -> QueueRefs:
    """Create (or find) ``name`` and ``name-dlq``; a message moves to the latter after
    ``max_receive_count`` receives."""

    def arn_of(url: str) -> str:
        found = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
        return found["Attributes"]["QueueArn"]

    dlq_url = sqs.create_queue(
        QueueName=f"{name}-dlq",
        Attributes={"MessageRetentionPeriod": str(DEAD_LETTER_RETENTION_S)},
    )["QueueUrl"]
    redrive = {"deadLetterTargetArn": arn_of(dlq_url), "maxReceiveCount": str(max_receive_count)}
    url = sqs.create_queue(
        QueueName=name,
        Attributes={
            "VisibilityTimeout": str(visibility_timeout),
            "RedrivePolicy": json.dumps(redrive),
        },
    )["QueueUrl"]
    return QueueRefs(url, arn_of(url), dlq_url)


class Invocation:
    """The parts of Lambda's context object the handlers read."""

    def __init__(self, function_name: str, timeout_s: float) -> None:
        self.aws_request_id = str(uuid.uuid4())
        self.function_name = function_name
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


class SqsEventSource(ABC):
    """``workers`` threads feeding one queue's batches to a handler.

    Subclasses give each worker its handler (:meth:`worker_handler`); tests and benchmarks
    drive :meth:`poll_once` directly.
    """

    function_name = "function"

    def __init__(
        self,
        sqs: SQSClient,
        queue_url: str,
        queue_arn: str,
        *,
        workers: int,
        batch_size: int,
        invocation_timeout_s: float,
        wait_seconds: int,
        region: str,
    ) -> None:
        self._sqs = sqs
        self._queue_url = queue_url
        self._queue_arn = queue_arn
        self.workers = workers
        self._batch_size = batch_size
        self._timeout = invocation_timeout_s
        self._wait = wait_seconds
        self._region = region
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._count_lock = threading.Lock()
        self.batches = 0
        self.processed = 0
        self.retried = 0

    @abstractmethod
    def worker_handler(self) -> Handler:
        """The handler one worker runs (asked once per worker, in its thread)."""

    def start(self) -> Self:
        """Start the workers."""
        self._stop.clear()
        self._threads = [
            threading.Thread(target=self._run, name=f"{self.function_name}-{i}", daemon=True)
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
        handle: Handler | None = None
        while not self._stop.is_set():
            try:
                if handle is None:
                    handle = self.worker_handler()
                self.poll_once(handle)
            except Exception:
                logger.exception("%s worker: polling failed", self.function_name)
                self._stop.wait(1.0)

    def poll_once(self, handle: Handler) -> int:
        """Receive one batch and run ``handle`` on it; how many messages came."""
        messages = self._sqs.receive_message(
            QueueUrl=self._queue_url,
            MaxNumberOfMessages=self._batch_size,
            WaitTimeSeconds=self._wait,
            MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        if not messages:
            return 0
        records = [lambda_record(m, self._queue_arn, self._region) for m in messages]
        try:
            response = handle({"Records": records}, Invocation(self.function_name, self._timeout))
            failed = {f["itemIdentifier"] for f in response.get("batchItemFailures", [])}
        except Exception:
            logger.exception("the %s handler raised", self.function_name)
            failed = {r["messageId"] for r in records}
        done = [r for r in records if r["messageId"] not in failed]
        for start in range(0, len(done), 10):
            self._sqs.delete_message_batch(
                QueueUrl=self._queue_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": r["receiptHandle"]}
                    for i, r in enumerate(done[start : start + 10])
                ],
            )
        with self._count_lock:
            self.batches += 1
            self.processed += len(done)
            self.retried += len(failed)
        return len(messages)
