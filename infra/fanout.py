"""Fan-out workers of large channels: the shard queue, its dead-letter queue, the worker's
SQS event source and the alarms.

The apigateway provider splits a channel above ``WEBSOCKET_FANOUT_THRESHOLD`` subscribers
into shard jobs on this queue (``WEBSOCKET_FANOUT_QUEUE_URL``); the fan-out function
(``milequest.handlers.fanout.handler``) consumes them with partial batch failures and
re-queues a shard's undelivered remainder itself. A shard whose record keeps failing (a
malformed job, a remainder that cannot be queued, a worker that crashes or times out) moves
to the dead-letter queue after ``max_receive_count`` receives; redrive it from the console or
with ``StartMessageMoveTask`` once the cause is fixed.
"""

from __future__ import annotations

import typing

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from .nag import acknowledge

HANDLER = "milequest.handlers.fanout.handler"
ENVIRONMENT_VARIABLE = "WEBSOCKET_FANOUT_QUEUE_URL"
# AWS's guidance for SQS event sources: a visibility timeout of six times the function's
# timeout, so that a batch Lambda retries internally is not received twice meanwhile.
VISIBILITY_TIMEOUT_FACTOR = 6
DEFAULT_FUNCTION_TIMEOUT = Duration.seconds(3)  # Lambda's own default
# A shard waits here only while workers scale out; past this, delivery is late.
OLDEST_MESSAGE_AGE = Duration.minutes(2)
ALARM_PERIOD = Duration.minutes(1)


class FanoutQueue(Construct):
    """The shard queue of ``worker``, redriving to a dead-letter queue, and its event source.

    - ``target``: what the event source invokes (the alias, with SnapStart); ``worker`` by
      default.
    - ``reserved_concurrency``: reserved for ``worker`` (None: none reserved; accounts with
      the default quota of 10 refuse any). The event source's maximum concurrency is kept at
      or below it, so that pollers are never throttled into the dead-letter queue.
    - ``max_concurrency``: the event source's own cap (2 to 1000; None: Lambda scales).
    - ``batch_size``: shards per invocation. One by default: a worker that crashes or times
      out gets its whole batch again, so with one shard a batch, duplicates stay within
      the shard it was delivering.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        worker: lambda_.Function,
        target: lambda_.IFunction | None = None,
        reserved_concurrency: int | None = None,
        max_concurrency: int | None = None,
        batch_size: int = 1,
        max_receive_count: int = 5,
        removal_policy: RemovalPolicy = RemovalPolicy.DESTROY,
    ) -> None:
        super().__init__(scope, construct_id)
        if reserved_concurrency is not None and reserved_concurrency < 2:
            raise ValueError("reserved_concurrency must be at least 2 (an event source's minimum)")
        if max_concurrency is not None and not 2 <= max_concurrency <= 1000:
            raise ValueError("max_concurrency must be between 2 and 1000")
        if not 1 <= batch_size <= 10:
            raise ValueError("batch_size must be between 1 and 10 (no batching window)")
        self.worker = worker
        self.dead_letter_queue = sqs.Queue(
            self,
            "DeadLetterQueue",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=Duration.days(14),
            removal_policy=removal_policy,
        )
        acknowledge(
            self.dead_letter_queue,
            "SQS3",
            "This queue is itself the dead-letter queue of the fan-out shard queue; it is "
            "alarmed on and redriven by hand, not consumed.",
        )
        timeout = worker.timeout or DEFAULT_FUNCTION_TIMEOUT
        self.queue = sqs.Queue(
            self,
            "Queue",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            visibility_timeout=Duration.seconds(timeout.to_seconds() * VISIBILITY_TIMEOUT_FACTOR),
            # A shard is only worth delivering while its subscribers are still connected
            # (API Gateway closes connections after two hours).
            retention_period=Duration.hours(2),
            dead_letter_queue=sqs.DeadLetterQueue(
                max_receive_count=max_receive_count, queue=self.dead_letter_queue
            ),
            removal_policy=removal_policy,
        )
        if reserved_concurrency is not None:
            function = typing.cast(lambda_.CfnFunction, worker.node.default_child)
            function.reserved_concurrent_executions = reserved_concurrency
            max_concurrency = min(max_concurrency or reserved_concurrency, reserved_concurrency)
        self.max_concurrency = max_concurrency
        self.event_source = sources.SqsEventSource(
            self.queue,
            batch_size=batch_size,
            report_batch_item_failures=True,
            max_concurrency=max_concurrency,
        )
        (target or worker).add_event_source(self.event_source)
        # The worker queues the undelivered remainder of a shard again.
        self.queue.grant_send_messages(worker)

    @property
    def environment(self) -> dict[str, str]:
        """What points the runtime (publishers and the worker) at the queue."""
        return {ENVIRONMENT_VARIABLE: self.queue.queue_url}

    def grant_enqueue(self, grantee: iam.IGrantable) -> iam.Grant:
        """For every process that triggers events: it may queue shards."""
        return self.queue.grant_send_messages(grantee)

    def metric_dead_letters(self) -> cloudwatch.IMetric:
        """Shards waiting in the dead-letter queue."""
        return self.dead_letter_queue.metric_approximate_number_of_messages_visible(
            period=ALARM_PERIOD, statistic="Maximum"
        )

    def metric_oldest_shard_age(self) -> cloudwatch.IMetric:
        """Seconds the oldest shard has waited for a worker."""
        return self.queue.metric_approximate_age_of_oldest_message(
            period=ALARM_PERIOD, statistic="Maximum"
        )

    def add_alarms(
        self,
        scope: Construct | None = None,
        *,
        action: cloudwatch.IAlarmAction | None = None,
        oldest_shard_age: Duration = OLDEST_MESSAGE_AGE,
    ) -> list[cloudwatch.Alarm]:
        """Alarms on shards in the dead-letter queue and on shards waiting too long.

        ``scope``: where the alarms go (the observability stack, whose topic ``action``
        notifies); this construct by default.
        """
        where = scope or self
        prefix = "" if scope is None else f"{self.node.id}"
        alarms = [
            cloudwatch.Alarm(
                where,
                f"{prefix}DeadLettersAlarm",
                metric=self.metric_dead_letters(),
                threshold=1,
                evaluation_periods=1,
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
                alarm_description="Fan-out shards failed repeatedly and wait in the dead-letter "
                "queue: find the cause in the worker's logs, then redrive them",
            ),
            cloudwatch.Alarm(
                where,
                f"{prefix}OldestShardAlarm",
                metric=self.metric_oldest_shard_age(),
                threshold=oldest_shard_age.to_seconds(),
                evaluation_periods=2,
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
                alarm_description="Fan-out shards wait for workers: events to large channels "
                "arrive late (worker errors, throttling or too little concurrency)",
            ),
        ]
        if action is not None:
            for alarm in alarms:
                alarm.add_alarm_action(action)
        return alarms
