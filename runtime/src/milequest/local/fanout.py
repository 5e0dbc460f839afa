"""The local fan-out workers: the shard queue on the embedded SQS and an in-process consumer.

:func:`create_fanout_queues` makes the shard queue and its dead-letter queue (a shard moves
there after ``max_receive_count`` receives), as the CDK app does in AWS.
:class:`FanoutConsumer` then plays Lambda's SQS event source with N worker threads: each
long-polls a batch, hands it to ``milequest.handlers.fanout.handler`` as an SQS event,
deletes the records the handler did not report as failed, and leaves the failed ones to
come back after the visibility timeout (:mod:`.sqs_source`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .sqs_source import Handler, SqsEventSource, create_queue

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

QUEUE_NAME = "milequest-local-fanout"
INVOCATION_TIMEOUT_S = 25.0
# As in AWS: six times the function's timeout, so that a shard still being delivered is not
# handed to a second worker.
VISIBILITY_TIMEOUT_S = int(6 * INVOCATION_TIMEOUT_S)


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
    refs = create_queue(
        sqs, name, visibility_timeout=visibility_timeout, max_receive_count=max_receive_count
    )
    return FanoutQueues(refs.url, refs.arn, refs.dead_letter_queue_url)


class FanoutConsumer(SqsEventSource):
    """``workers`` threads consuming the shard queue into the fan-out handler."""

    function_name = "fanout"

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
        super().__init__(
            sqs,
            queues.queue_url,
            queues.queue_arn,
            workers=workers,
            batch_size=batch_size,
            invocation_timeout_s=invocation_timeout_s,
            wait_seconds=wait_seconds,
            region=region,
        )
        self.queues = queues
        self._handler = handler

    def _handle(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        if self._handler is not None:
            return self._handler(event, context)
        from milequest.handlers.fanout import handler

        return handler(event, context)

    def worker_handler(self) -> Handler:
        return self._handle

    def poll_once(self, handle: Handler | None = None) -> int:
        """Receive one batch and run the fan-out handler on it; how many messages came."""
        return super().poll_once(handle or self._handle)
