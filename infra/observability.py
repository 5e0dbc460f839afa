"""Observability: one CloudWatch dashboard and the alarms, notified through an SNS topic."""

from __future__ import annotations

from aws_cdk import Duration, Stack
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct

from .config import EnvironmentConfig
from .container import ContainerStack
from .costs import TableSource, cost_widgets
from .email import EmailStack
from .fanout import FanoutQueue
from .keys import service_key
from .lambdas import RuntimeFunction
from .provider_metrics import ProviderFigures
from .realtime import RealtimeStack
from .web import WebStack

# SES reviews an account at a 5% bounce rate and a 0.1% complaint rate (and may pause
# sending at 10% / 0.5%): alarm when the review threshold is reached.
BOUNCE_RATE_THRESHOLD = 0.05
COMPLAINT_RATE_THRESHOLD = 0.001
API_ERRORS_THRESHOLD = 5
AUTHORIZER_REFUSAL_RATE = 0.5
AUTHORIZER_MIN_INVOCATIONS = 20
FIVE_MINUTES = Duration.minutes(5)


def _ses(
    metric_name: str, statistic: str = "Sum", period: Duration = FIVE_MINUTES
) -> cloudwatch.Metric:
    return cloudwatch.Metric(
        namespace="AWS/SES", metric_name=metric_name, statistic=statistic, period=period
    )


class ObservabilityStack(Stack):
    """Dashboard and alarms for one environment's email, realtime and container targets."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: EnvironmentConfig,
        email: EmailStack,
        realtime: RealtimeStack,
        container: ContainerStack | None = None,
        web: WebStack | None = None,
        **kwargs: object,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)  # type: ignore[arg-type]
        self.config = config
        self.alarm_topic = self._alarm_topic()
        self.alarms: list[cloudwatch.Alarm] = []
        functions = {
            "SesEvents": email.event_handler,
            "WsConnect": realtime.connect_function,
            "WsAnnounce": realtime.announce_function,
            "WsDisconnect": realtime.disconnect_function,
            "WsMessage": realtime.message_function,
            "WsFanout": realtime.fanout_function,
        }
        if web is not None:
            functions["HttpApp"] = web.app_function
        self._email_alarms()
        for name, fn in functions.items():
            self._alarm(
                f"{name}Errors",
                fn.function.metric_errors(period=FIVE_MINUTES, statistic="Sum"),
                threshold=1,
                description=f"{fn.function.function_name} raised errors",
            )
        if realtime.authorizer_function is not None:
            functions["WsAuthorizer"] = realtime.authorizer_function
            self._authorizer_alarm(realtime.authorizer_function)
        dlq_depth = email.dead_letter_queue.metric_approximate_number_of_messages_visible(
            period=FIVE_MINUTES, statistic="Maximum"
        )
        self._alarm(
            "EventsDeadLetterQueueNotEmpty",
            dlq_depth,
            threshold=1,
            description="SES events could not be processed and wait in the dead-letter queue",
        )
        for alarm in realtime.fanout.add_alarms(self, action=actions.SnsAction(self.alarm_topic)):
            alarm.add_ok_action(actions.SnsAction(self.alarm_topic))
            self.alarms.append(alarm)
        api_errors = self._api_metrics(realtime)
        self._alarm(
            "WebSocketApiErrors",
            cloudwatch.MathExpression(
                expression="execution + integration",
                using_metrics={
                    "execution": api_errors["ExecutionError"],
                    "integration": api_errors["IntegrationError"],
                },
                label="WebSocket execution + integration errors",
                period=FIVE_MINUTES,
            ),
            threshold=API_ERRORS_THRESHOLD,
            description="The WebSocket API failed to run or integrate routes",
        )
        if container is not None:
            self._alarm(
                "WebTarget5xx",
                container.service.load_balancer.metrics.http_code_target(
                    code=elbv2.HttpCodeTarget.TARGET_5XX_COUNT, period=FIVE_MINUTES, statistic="Sum"
                ),
                threshold=5,
                description="The HTTP app answered with server errors",
            )
        if web is not None:
            self._alarm(
                "WebApi5xx",
                web.api.metric_server_error(period=FIVE_MINUTES, statistic="Sum"),
                threshold=5,
                description="The HTTP app answered with server errors",
            )
        self.providers = ProviderFigures(config)
        for construct_id, description, metric in self.providers.migration_alarms():
            self._alarm(
                construct_id,
                metric,
                threshold=config.migration.error_rate_margin,
                description=description,
                comparison=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
                evaluation_periods=3,
            )
        self.dashboard = self._dashboard(
            functions, api_errors, dlq_depth, container, realtime.fanout
        )
        self.dashboard.add_widgets(*self._cost_widgets(email, realtime, web))

    # Alarms ----------------------------------------------------------------------------

    def _alarm_topic(self) -> sns.Topic:
        key = service_key(
            self,
            "AlarmTopicKey",
            config=self.config,
            description="alarm topic",
            services=("cloudwatch",),
        )
        topic = sns.Topic(
            self,
            "AlarmTopic",
            display_name=f"Mile Quest {self.config.name} alarms",
            master_key=key,
            enforce_ssl=True,
        )
        # The topic's own policy (SSL only) replaces SNS's default one, which let the account,
        # and so its alarms, publish: CloudWatch needs a statement of its own.
        topic.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowCloudWatchAlarms",
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=["sns:Publish"],
                resources=[topic.topic_arn],
                conditions={"StringEquals": {"aws:SourceAccount": self.account}},
            )
        )
        if self.config.alarm_email:
            topic.add_subscription(subscriptions.EmailSubscription(self.config.alarm_email))
        return topic

    def _alarm(
        self,
        construct_id: str,
        metric: cloudwatch.IMetric,
        *,
        threshold: float,
        description: str,
        evaluation_periods: int = 1,
        comparison: cloudwatch.ComparisonOperator = (
            cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD
        ),
    ) -> cloudwatch.Alarm:
        alarm = cloudwatch.Alarm(
            self,
            construct_id,
            alarm_description=description,
            metric=metric,
            threshold=threshold,
            evaluation_periods=evaluation_periods,
            comparison_operator=comparison,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        alarm.add_alarm_action(actions.SnsAction(self.alarm_topic))
        alarm.add_ok_action(actions.SnsAction(self.alarm_topic))
        self.alarms.append(alarm)
        return alarm

    def _authorizer_alarm(self, authorizer: RuntimeFunction) -> None:
        """Alarm when most connection attempts are refused, not on each refusal.

        The authorizer refuses a bad token by raising ``Unauthorized`` (API Gateway's 401),
        which Lambda counts as an error: single errors are clients, not faults.
        """
        fn = authorizer.function
        self._alarm(
            "WsAuthorizerRefusals",
            cloudwatch.MathExpression(
                expression=(
                    f"IF(invocations >= {AUTHORIZER_MIN_INVOCATIONS}, errors / invocations, 0)"
                ),
                using_metrics={
                    "errors": fn.metric_errors(statistic="Sum"),
                    "invocations": fn.metric_invocations(statistic="Sum"),
                },
                label="Share of WebSocket connections refused",
                period=FIVE_MINUTES,
            ),
            threshold=AUTHORIZER_REFUSAL_RATE,
            description=(
                "Most WebSocket connection attempts are refused: the token verifier or the "
                "app secret is likely broken"
            ),
        )

    def _email_alarms(self) -> None:
        self._alarm(
            "BounceRate",
            _ses("Reputation.BounceRate", "Maximum", Duration.hours(1)),
            threshold=BOUNCE_RATE_THRESHOLD,
            description="SES bounce rate reached 5%: SES puts the account under review",
        )
        self._alarm(
            "ComplaintRate",
            _ses("Reputation.ComplaintRate", "Maximum", Duration.hours(1)),
            threshold=COMPLAINT_RATE_THRESHOLD,
            description="SES complaint rate reached 0.1%: SES puts the account under review",
        )

    @staticmethod
    def _api_metrics(realtime: RealtimeStack) -> dict[str, cloudwatch.Metric]:
        dims = {"ApiId": realtime.api.api_id, "Stage": realtime.stage_name}
        return {
            name: cloudwatch.Metric(
                namespace="AWS/ApiGateway",
                metric_name=name,
                dimensions_map=dims,
                statistic="Sum",
                period=FIVE_MINUTES,
            )
            for name in (
                "ConnectCount",
                "MessageCount",
                "ExecutionError",
                "IntegrationError",
                "ClientError",
            )
        }

    # Dashboard -------------------------------------------------------------------------

    def _cost_widgets(
        self, email: EmailStack, realtime: RealtimeStack, web: WebStack | None
    ) -> list[cloudwatch.IWidget]:
        """Estimated daily cost of each part (``infra.costs``, the runtime's price data)."""
        http = [web.app_function.function] if web is not None else []
        return cost_widgets(
            api_id=realtime.api.api_id,
            stage_name=realtime.stage_name,
            realtime_functions=[fn.function for fn in realtime.functions] + http,
            realtime_tables=[TableSource(realtime.table.table_name, realtime.table_indexes)],
            fanout_queues=[realtime.fanout.queue.queue_name],
            email_functions=[email.event_handler.function],
            email_tables=[TableSource(email.suppression.table.table_name)],
            email_queues=[email.dead_letter_queue.queue_name],
            region=self.config.region,
        )

    def _dashboard(
        self,
        functions: dict[str, RuntimeFunction],
        api: dict[str, cloudwatch.Metric],
        dlq_depth: cloudwatch.Metric,
        container: ContainerStack | None,
        fanout: FanoutQueue,
    ) -> cloudwatch.Dashboard:
        dashboard = cloudwatch.Dashboard(
            self,
            "Dashboard",
            dashboard_name=f"{self.config.resource_prefix}-services",
            default_interval=Duration.hours(24),
        )
        rate = Duration.hours(1)
        dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="SES sending",
                left=[_ses(name) for name in ("Send", "Delivery", "Bounce", "Complaint")],
                width=12,
            ),
            cloudwatch.GraphWidget(
                title="SES reputation (bounce / complaint rate)",
                left=[_ses("Reputation.BounceRate", "Maximum", rate)],
                right=[_ses("Reputation.ComplaintRate", "Maximum", rate)],
                left_annotations=[
                    cloudwatch.HorizontalAnnotation(value=BOUNCE_RATE_THRESHOLD, label="5%")
                ],
                right_annotations=[
                    cloudwatch.HorizontalAnnotation(value=COMPLAINT_RATE_THRESHOLD, label="0.1%")
                ],
                width=12,
            ),
        )
        dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="WebSocket connections and messages",
                left=[api["ConnectCount"], api["MessageCount"]],
                width=12,
            ),
            cloudwatch.GraphWidget(
                title="WebSocket errors",
                left=[api["ExecutionError"], api["IntegrationError"], api["ClientError"]],
                width=12,
            ),
        )
        dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="Lambda errors",
                left=[
                    fn.function.metric_errors(label=name, period=FIVE_MINUTES)
                    for name, fn in functions.items()
                ],
                width=8,
            ),
            cloudwatch.GraphWidget(
                title="Lambda duration (p99)",
                left=[
                    fn.function.metric_duration(label=name, statistic="p99", period=FIVE_MINUTES)
                    for name, fn in functions.items()
                ],
                width=8,
            ),
            cloudwatch.GraphWidget(
                title="Queues: dead letters, oldest fan-out shard (s)",
                left=[
                    dlq_depth.with_(label="SES events DLQ"),
                    fanout.dead_letter_queue.metric_approximate_number_of_messages_visible(
                        period=FIVE_MINUTES, statistic="Maximum", label="Fan-out DLQ"
                    ),
                ],
                right=[
                    fanout.queue.metric_approximate_age_of_oldest_message(
                        period=FIVE_MINUTES, statistic="Maximum", label="Oldest shard age"
                    )
                ],
                width=8,
            ),
        )
        for row in self.providers.widgets():
            dashboard.add_widgets(*row)
        if container is not None:
            lb = container.service.load_balancer.metrics
            dashboard.add_widgets(
                cloudwatch.GraphWidget(
                    title="HTTP app",
                    left=[lb.request_count(period=FIVE_MINUTES)],
                    right=[lb.target_response_time(period=FIVE_MINUTES, statistic="p99")],
                    width=12,
                ),
                cloudwatch.AlarmStatusWidget(title="Alarms", alarms=list(self.alarms), width=12),
            )
        else:
            dashboard.add_widgets(
                cloudwatch.AlarmStatusWidget(title="Alarms", alarms=list(self.alarms), width=24)
            )
        return dashboard
