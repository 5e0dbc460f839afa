"""A Lambda function running one of the runtime's handlers, with its own role and logs."""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import Duration
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sqs as sqs
from constructs import Construct
from milequest.services.metrics import DEFAULT_NAMESPACE as METRICS_NAMESPACE

from .bundling import LAMBDA_ARCHITECTURE, LAMBDA_RUNTIME, runtime_code
from .config import EnvironmentConfig

__all__ = ["RuntimeFunction", "process_environment"]


class RuntimeFunction(Construct):
    """One runtime handler as a Lambda function (arm64, JSON logs, Powertools settings).

    The function gets a role of its own that may only write to its own log group (no
    ``AWSLambdaBasicExecutionRole``, whose log permissions span every group); callers add
    what the handler needs through the usual ``grant_*`` methods on ``function``.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: EnvironmentConfig,
        handler: str,
        service: str,
        description: str,
        environment: Mapping[str, str] | None = None,
        timeout: Duration | None = None,
        memory_size: int = 512,
        dead_letter_queue: sqs.IQueue | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        self.log_group = logs.LogGroup(
            self,
            "Logs",
            retention=config.log_retention,
            removal_policy=config.cdk_removal_policy,
        )
        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"{construct_id} ({config.name}): runs {handler}",
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                resources=[self.log_group.log_group_arn],
            )
        )
        env = {**process_environment(config, service), **(environment or {})}
        self.function = lambda_.Function(
            self,
            "Function",
            description=description,
            runtime=LAMBDA_RUNTIME,
            architecture=LAMBDA_ARCHITECTURE,
            code=runtime_code(),
            handler=handler,
            role=self.role,
            memory_size=memory_size,
            timeout=timeout or Duration.seconds(10),
            environment=env,
            log_group=self.log_group,
            logging_format=lambda_.LoggingFormat.JSON,
            application_log_level_v2=_application_level(config.log_level),
            system_log_level_v2=lambda_.SystemLogLevel.WARN,
            reserved_concurrent_executions=config.reserved_concurrency,
            dead_letter_queue=dead_letter_queue,
        )


def process_environment(config: EnvironmentConfig, service: str) -> dict[str, str]:
    """Logging and metrics settings of every runtime process (functions and container)."""
    return {
        "POWERTOOLS_SERVICE_NAME": service,
        "POWERTOOLS_METRICS_NAMESPACE": METRICS_NAMESPACE,
        "POWERTOOLS_LOG_LEVEL": config.log_level,
        "METRICS_SINK": "emf",
    }


def _application_level(level: str) -> lambda_.ApplicationLogLevel:
    return {
        "DEBUG": lambda_.ApplicationLogLevel.DEBUG,
        "INFO": lambda_.ApplicationLogLevel.INFO,
        "WARNING": lambda_.ApplicationLogLevel.WARN,
        "ERROR": lambda_.ApplicationLogLevel.ERROR,
    }[level]
