"""The email queue of a stage: the queue and its dead-letter queue (encrypted with the stage's
key), the claim-check bucket, the idempotency table, the consumer's event source, the grants,
alarms and dashboard widgets.

Senders with ``EMAIL_DELIVERY=queue`` validate each message and put it on the queue; the
consumer (``milequest.handlers.email_queue.handler``) sends it through the circuit breaker at
its share of the provider's rate, once per idempotency key, and dead-letters what cannot be
sent with its reason. The event source's maximum concurrency and the consumer's
``EMAIL_QUEUE_CONCURRENCY`` come from one parameter: together they bound the fleet's send
rate. The queue's redrive policy (one receive more than the consumer's own limit) is the
backstop for a consumer that crashes. Redrive or purge with ``python -m milequest.email_dlq``.
"""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sqs as sqs
from constructs import Construct, IConstruct
from milequest.handlers.email_queue import PROCESS_NAME
from milequest.services.email.consumer import (
    IDEMPOTENCY_TTL_ATTRIBUTE,
    idempotency_table_definition,
)
from milequest.services.email.queue import CLAIM_CHECK_PREFIX
from milequest.services.metrics import DEFAULT_NAMESPACE

from .nag import acknowledge

HANDLER = "milequest.handlers.email_queue.handler"
# AWS's guidance for SQS event sources: a visibility timeout of six times the function's
# timeout, so that a batch Lambda retries internally is not received twice meanwhile.
VISIBILITY_TIMEOUT_FACTOR = 6
DEFAULT_FUNCTION_TIMEOUT = Duration.seconds(3)  # Lambda's own default
OLDEST_MESSAGE_AGE = Duration.minutes(15)
RETENTION = Duration.days(4)  # SQS's default; the claim checks outlive it and the DLQ's 14
ALARM_PERIOD = Duration.minutes(1)
WIDGET_PERIOD = Duration.minutes(5)
CONSUMER_TABLE_ACTIONS = (  # what Powertools idempotency does with its records
    "dynamodb:GetItem",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
)
QUEUE_KEY_ACTIONS = ("kms:GenerateDataKey", "kms:Decrypt")  # SendMessage to an SSE-KMS queue
CLAIM_CHECK_REASON = (
    "Claim-check objects are named per message under one prefix (email-queue/<id>/...), so "
    "the grant covers that prefix of this bucket only."
)


class EmailQueue(Construct):
    """The email queue consumed by ``consumer`` (through ``target``, its alias).

    - ``key``: the stage's key; the queue, the dead-letter queue and the bucket use it.
    - ``max_concurrency``: the event source's maximum concurrency (2 to 1000), also the
      consumer's ``EMAIL_QUEUE_CONCURRENCY``: each instance sends at that share of the rate.
    - ``max_receives``: receives before the consumer dead-letters a failing message itself.
    - ``providers``: the providers the consumer may send through (a circuit alarm each).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        consumer: lambda_.Function,
        key: kms.IKey,
        target: lambda_.IFunction | None = None,
        max_concurrency: int = 2,
        batch_size: int = 10,
        max_receives: int = 8,
        retention: Duration = RETENTION,
        claim_check_days: int = 30,
        providers: Sequence[str] = ("ses",),
        removal_policy: RemovalPolicy = RemovalPolicy.RETAIN,
    ) -> None:
        super().__init__(scope, construct_id)
        if not 2 <= max_concurrency <= 1000:
            raise ValueError("max_concurrency must be between 2 and 1000")
        if not 1 <= batch_size <= 10:
            raise ValueError("batch_size must be between 1 and 10 (no batching window)")
        if not 1 <= max_receives <= 100:
            raise ValueError("max_receives must be between 1 and 100")
        if claim_check_days <= 18:
            raise ValueError("claim checks must outlive the queue and its dead-letter queue")
        self.consumer = consumer
        self.key = key
        self.max_concurrency = max_concurrency
        self.max_receives = max_receives
        self.providers = tuple(providers)
        self.dead_letter_queue = sqs.Queue(
            self,
            "DeadLetterQueue",
            encryption=sqs.QueueEncryption.KMS,
            encryption_master_key=key,
            enforce_ssl=True,
            retention_period=Duration.days(14),
            removal_policy=removal_policy,
        )
        acknowledge(
            self.dead_letter_queue,
            "SQS3",
            "This queue is itself the dead-letter queue of the email queue; it is alarmed on "
            "and redriven with python -m milequest.email_dlq, not consumed.",
        )
        timeout = consumer.timeout or DEFAULT_FUNCTION_TIMEOUT
        self.queue = sqs.Queue(
            self,
            "Queue",
            encryption=sqs.QueueEncryption.KMS,
            encryption_master_key=key,
            enforce_ssl=True,
            visibility_timeout=Duration.seconds(timeout.to_seconds() * VISIBILITY_TIMEOUT_FACTOR),
            retention_period=retention,
            dead_letter_queue=sqs.DeadLetterQueue(
                max_receive_count=max_receives + 1, queue=self.dead_letter_queue
            ),
            removal_policy=removal_policy,
        )
        self.bucket = s3.Bucket(
            self,
            "ClaimChecks",
            encryption=s3.BucketEncryption.KMS,
            encryption_key=key,
            bucket_key_enabled=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="claim-checks",
                    expiration=Duration.days(claim_check_days),
                    abort_incomplete_multipart_upload_after=Duration.days(1),
                )
            ],
            removal_policy=removal_policy,
        )
        acknowledge(
            self.bucket,
            "S1",
            "Claim-check objects are written and read only by the runtime's roles, each read "
            "tied to an SQS message; they expire with the lifecycle rule. Server access logs "
            "would record every send.",
        )
        self.table = self._table(removal_policy)
        self.event_source = sources.SqsEventSource(
            self.queue,
            batch_size=batch_size,
            report_batch_item_failures=True,
            max_concurrency=max_concurrency,
        )
        (target or consumer).add_event_source(self.event_source)
        self._grant_consumer()
        for name, value in self.consumer_environment.items():
            consumer.add_environment(name, value)

    def _table(self, removal_policy: RemovalPolicy) -> dynamodb.Table:
        definition = idempotency_table_definition()
        [key] = definition["KeySchema"]
        [attribute] = definition["AttributeDefinitions"]
        if attribute["AttributeType"] != "S" or definition["BillingMode"] != "PAY_PER_REQUEST":
            raise ValueError("the idempotency table is defined with a string key, on demand")
        table = dynamodb.Table(
            self,
            "Idempotency",
            partition_key=dynamodb.Attribute(
                name=key["AttributeName"], type=dynamodb.AttributeType.STRING
            ),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            time_to_live_attribute=IDEMPOTENCY_TTL_ATTRIBUTE,
            encryption=dynamodb.TableEncryption.AWS_MANAGED,
            removal_policy=removal_policy,
        )
        acknowledge(
            table,
            "DDB3",
            "Idempotency records live EMAIL_IDEMPOTENCY_TTL (a day) and expire by TTL; a "
            "point-in-time restore would bring back stale records, not data worth keeping.",
        )
        return table

    # -- grants ------------------------------------------------------------------------------

    def _grant_consumer(self) -> None:
        role = self.consumer.role
        if role is None:
            raise ValueError("the consumer function needs a role")
        # The event source grants receiving, deleting and changing visibility on the queue.
        role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="DeadLetter",
                actions=["sqs:SendMessage"],
                resources=[self.dead_letter_queue.queue_arn],
            )
        )
        role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="QueueKey", actions=list(QUEUE_KEY_ACTIONS), resources=[self.key.key_arn]
            )
        )
        role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="ClaimChecks",
                actions=["s3:GetObject"],
                resources=[self.bucket.arn_for_objects(f"{CLAIM_CHECK_PREFIX}*")],
            )
        )
        self.table.grant(role, *CONSUMER_TABLE_ACTIONS)
        if isinstance(role, Construct):
            self.acknowledge_claim_checks(role)

    def enqueue_statements(self) -> list[iam.PolicyStatement]:
        """What a sender in queue mode may do: queue messages and store claim checks."""
        return [
            iam.PolicyStatement(
                sid="EnqueueEmail", actions=["sqs:SendMessage"], resources=[self.queue.queue_arn]
            ),
            iam.PolicyStatement(
                sid="StoreClaimChecks",
                actions=["s3:PutObject"],
                resources=[self.bucket.arn_for_objects(f"{CLAIM_CHECK_PREFIX}*")],
            ),
            iam.PolicyStatement(
                sid="EmailQueueKey", actions=list(QUEUE_KEY_ACTIONS), resources=[self.key.key_arn]
            ),
        ]

    def operator_statements(self) -> list[iam.PolicyStatement]:
        """What ``python -m milequest.email_dlq`` does: list, redrive and purge."""
        return [
            iam.PolicyStatement(
                sid="ReadDeadLetters",
                actions=[
                    "sqs:ReceiveMessage",
                    "sqs:DeleteMessage",
                    "sqs:ChangeMessageVisibility",
                    "sqs:GetQueueAttributes",
                    "sqs:PurgeQueue",
                ],
                resources=[self.dead_letter_queue.queue_arn],
            ),
            iam.PolicyStatement(
                sid="RedriveEmail", actions=["sqs:SendMessage"], resources=[self.queue.queue_arn]
            ),
            iam.PolicyStatement(
                sid="EmailQueueKey", actions=list(QUEUE_KEY_ACTIONS), resources=[self.key.key_arn]
            ),
        ]

    def grant_enqueue(self, grantee: iam.IGrantable) -> None:
        """For a process that sends in queue mode (the HTTP app, the container)."""
        for statement in self.enqueue_statements():
            grantee.grant_principal.add_to_principal_policy(statement)
        if isinstance(grantee, Construct):
            self.acknowledge_claim_checks(grantee)

    def grant_operate(self, grantee: iam.IGrantable) -> None:
        """For operators (``python -m milequest.email_dlq``)."""
        for statement in self.operator_statements():
            grantee.grant_principal.add_to_principal_policy(statement)

    def acknowledge_claim_checks(self, construct: IConstruct) -> None:
        """cdk-nag: the claim-check grant covers one prefix of this bucket (on ``construct``,
        a role or a managed policy holding :meth:`enqueue_statements`)."""
        bucket = Stack.of(self).get_logical_id(self.bucket.node.default_child)  # type: ignore[arg-type]
        acknowledge(
            construct, "IAM5", CLAIM_CHECK_REASON, f"Resource::<{bucket}.Arn>/email-queue/*"
        )

    # -- settings ----------------------------------------------------------------------------

    @property
    def producer_environment(self) -> dict[str, str]:
        """What senders need to queue their mail."""
        return {
            "EMAIL_DELIVERY": "queue",
            "EMAIL_QUEUE_URL": self.queue.queue_url,
            "EMAIL_QUEUE_BUCKET": self.bucket.bucket_name,
        }

    @property
    def consumer_environment(self) -> dict[str, str]:
        """What the consumer needs (set on it by this construct)."""
        return {
            "EMAIL_DELIVERY": "direct",
            "EMAIL_QUEUE_URL": self.queue.queue_url,
            "EMAIL_DEAD_LETTER_QUEUE_URL": self.dead_letter_queue.queue_url,
            "EMAIL_QUEUE_BUCKET": self.bucket.bucket_name,
            "EMAIL_IDEMPOTENCY_TABLE": self.table.table_name,
            "EMAIL_QUEUE_CONCURRENCY": str(self.max_concurrency),
            "EMAIL_QUEUE_MAX_RECEIVES": str(self.max_receives),
        }

    @property
    def operator_environment(self) -> dict[str, str]:
        """What ``python -m milequest.email_dlq`` needs."""
        return {
            "EMAIL_QUEUE_URL": self.queue.queue_url,
            "EMAIL_DEAD_LETTER_QUEUE_URL": self.dead_letter_queue.queue_url,
        }

    # -- metrics, alarms, widgets --------------------------------------------------------

    def metric_dead_letters(self, period: Duration = ALARM_PERIOD) -> cloudwatch.IMetric:
        """Messages waiting in the dead-letter queue."""
        return self.dead_letter_queue.metric_approximate_number_of_messages_visible(
            period=period, statistic="Maximum"
        )

    def metric_oldest_message_age(self, period: Duration = ALARM_PERIOD) -> cloudwatch.IMetric:
        """Seconds the oldest queued message has waited."""
        return self.queue.metric_approximate_age_of_oldest_message(
            period=period, statistic="Maximum"
        )

    def metric_circuit_open(
        self, provider: str, period: Duration = ALARM_PERIOD, label: str | None = None
    ) -> cloudwatch.IMetric:
        """1 while the consumer's circuit for ``provider`` is open (the runtime's metric)."""
        return cloudwatch.Metric(
            namespace=DEFAULT_NAMESPACE,
            metric_name="CircuitOpen",
            dimensions_map={"Service": "email", "Provider": provider, "service": PROCESS_NAME},
            statistic="Maximum",
            period=period,
            label=label,
        )

    def add_alarms(
        self,
        scope: Construct | None = None,
        *,
        action: cloudwatch.IAlarmAction | None = None,
        oldest_message_age: Duration = OLDEST_MESSAGE_AGE,
    ) -> list[cloudwatch.Alarm]:
        """Alarms on dead letters, on mail waiting too long, and on each open circuit.

        ``scope``: where the alarms go (the observability stack, whose topic ``action``
        notifies); this construct by default.
        """
        where = scope or self
        prefix = "" if scope is None else self.node.id
        above = cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD
        specs = [
            (
                "DeadLettersAlarm",
                self.metric_dead_letters(),
                1,
                1,
                "Queued mail could not be sent and waits in the dead-letter queue with its "
                "reason: python -m milequest.email_dlq list, fix the cause, then redrive",
            ),
            (
                "OldestMessageAlarm",
                self.metric_oldest_message_age(),
                oldest_message_age.to_seconds(),
                2,
                "Queued mail waits too long: the provider is throttling or down (see the "
                "circuit alarms), or the consumers are too few for the rate",
            ),
            *(
                (
                    f"CircuitOpen{provider.capitalize()}Alarm",
                    self.metric_circuit_open(provider),
                    1,
                    2,
                    f"The queue consumer's circuit for {provider} is open: {provider} fails "
                    "as unavailable; mail waits on the queue and is retried",
                )
                for provider in self.providers
            ),
        ]
        alarms = []
        for construct_id, metric, threshold, periods, description in specs:
            alarm = cloudwatch.Alarm(
                where,
                f"{prefix}{construct_id}",
                metric=metric,
                threshold=threshold,
                evaluation_periods=periods,
                comparison_operator=above,
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
                alarm_description=description,
            )
            if action is not None:
                alarm.add_alarm_action(action)
            alarms.append(alarm)
        return alarms

    def widgets(self) -> list[list[cloudwatch.IWidget]]:
        """Dashboard rows: the queue, its outcomes per provider, and the circuits."""

        def search(metric: str, label: str) -> cloudwatch.IMetric:
            return cloudwatch.MathExpression(
                expression=(
                    f"SEARCH('{{{DEFAULT_NAMESPACE},Code,Provider,Service,service}} "
                    f'MetricName="{metric}" service="{PROCESS_NAME}"\', \'Sum\', 300)'
                ),
                label=label,
                period=WIDGET_PERIOD,
            )

        def per_provider(metric: str, statistic: str = "Sum") -> list[cloudwatch.IMetric]:
            return [
                cloudwatch.Metric(
                    namespace=DEFAULT_NAMESPACE,
                    metric_name=metric,
                    dimensions_map={"Service": "email", "Provider": p, "service": PROCESS_NAME},
                    statistic=statistic,
                    period=WIDGET_PERIOD,
                    label=p,
                )
                for p in self.providers
            ]

        depth = [
            self.queue.metric_approximate_number_of_messages_visible(
                period=WIDGET_PERIOD, statistic="Maximum", label="waiting"
            ),
            self.queue.metric_approximate_number_of_messages_not_visible(
                period=WIDGET_PERIOD, statistic="Maximum", label="in flight or retrying"
            ),
        ]
        return [
            [
                cloudwatch.GraphWidget(title="Email queue depth", left=depth, width=6),
                cloudwatch.GraphWidget(
                    title="Email queue: oldest message (s)",
                    left=[self.metric_oldest_message_age(WIDGET_PERIOD)],
                    width=6,
                ),
                cloudwatch.GraphWidget(
                    title="Email dead letters",
                    left=[self.metric_dead_letters(WIDGET_PERIOD)],
                    width=6,
                ),
                cloudwatch.GraphWidget(
                    title="Email circuits open",
                    left=[
                        self.metric_circuit_open(p, WIDGET_PERIOD, f"{p} circuit open")
                        for p in self.providers
                    ],
                    width=6,
                ),
            ],
            [
                cloudwatch.GraphWidget(
                    title="Queued mail sent, per provider", left=per_provider("QueueSent"), width=6
                ),
                cloudwatch.GraphWidget(
                    title="Queued mail delay (s), per provider",
                    left=per_provider("QueueDelay", "p90"),
                    width=6,
                ),
                cloudwatch.GraphWidget(
                    title="Queue retries, by provider and code",
                    left=[search("QueueRetries", "retries")],
                    width=6,
                ),
                cloudwatch.GraphWidget(
                    title="Dead-lettered, by provider and code",
                    left=[search("QueueDeadLettered", "dead-lettered")],
                    width=6,
                ),
            ],
        ]
