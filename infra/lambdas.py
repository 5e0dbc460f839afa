"""Lambda functions: the runtime's handlers (with a version and an alias), their roles and logs."""

from __future__ import annotations

import typing
from collections.abc import Mapping

from aws_cdk import Annotations, CfnResource, Duration, Fn, RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sqs as sqs
from constructs import Construct
from milequest.services.metrics import DEFAULT_NAMESPACE as METRICS_NAMESPACE

from .bundling import LAMBDA_ARCHITECTURE, LAMBDA_RUNTIME, runtime_code
from .config import EnvironmentConfig
from .flags import FlagsStack
from .nag import acknowledge

__all__ = [
    "ALIAS_NAME",
    "RuntimeFunction",
    "execution_role",
    "process_environment",
    "provider_log_groups",
]

# Every caller (API Gateway, SNS, invoke permissions) targets this alias, never $LATEST:
# with SnapStart only published versions have snapshots.
ALIAS_NAME = "live"
RUNTIME_PIN_REASON = (
    "The Python version is pinned in infra/bundling.py (LAMBDA_RUNTIME) to the one the bundle "
    "is built and tested on; it moves with that constant, not with each new Lambda runtime."
)


def execution_role(
    scope: Construct, config: EnvironmentConfig, description: str
) -> tuple[iam.Role, logs.LogGroup]:
    """A function's own role and log group; the role may write to that group only.

    No ``AWSLambdaBasicExecutionRole``: its log permissions span every log group.
    """
    log_group = logs.LogGroup(
        scope, "Logs", retention=config.log_retention, removal_policy=config.cdk_removal_policy
    )
    role = iam.Role(
        scope,
        "Role",
        assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
        description=description,
    )
    role.add_to_policy(
        iam.PolicyStatement(
            actions=["logs:CreateLogStream", "logs:PutLogEvents"],
            resources=[log_group.log_group_arn],
        )
    )
    return role, log_group


class RuntimeFunction(Construct):
    """One runtime handler as a Lambda function (arm64, JSON logs, Powertools settings).

    ``alias`` is what callers invoke: a published version, snapshotted when the environment
    turns SnapStart on. Grant what the handler needs to ``role`` (``grant_*`` methods).
    With ``flags`` the function reads the stage's migration flags (settings and the grant).
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
        flags: FlagsStack | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        if config.snap_start and not LAMBDA_RUNTIME.supports_snap_start:
            raise ValueError(f"{config.name}: snap_start needs a runtime with SnapStart")
        self.role, self.log_group = execution_role(
            self, config, f"{construct_id} ({config.name}): runs {handler}"
        )
        env = {**process_environment(config, service), **(environment or {})}
        if flags is not None:
            env |= flags.runtime_environment()
            flags.grant_read(self.role)
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
            snap_start=lambda_.SnapStartConf.ON_PUBLISHED_VERSIONS if config.snap_start else None,
            # Old versions go once the alias has moved on: kept, each would hold a copy of the
            # code package against the region's code-storage quota.
            current_version_options=lambda_.VersionOptions(removal_policy=RemovalPolicy.DESTROY),
        )
        self.alias = lambda_.Alias(
            self, "Alias", alias_name=ALIAS_NAME, version=self.function.current_version
        )
        acknowledge(self.function, "L1", RUNTIME_PIN_REASON)
        if config.snap_start:
            Annotations.of(self.function).acknowledge_warning(
                "@aws-cdk/aws-lambda:snapStartRequirePublish",
                "Published: every caller invokes the alias of the current version.",
            )


def process_environment(config: EnvironmentConfig, service: str) -> dict[str, str]:
    """Logging and metrics settings of every runtime process (functions and container)."""
    return {
        "POWERTOOLS_SERVICE_NAME": service,
        "POWERTOOLS_METRICS_NAMESPACE": METRICS_NAMESPACE,
        "POWERTOOLS_LOG_LEVEL": config.log_level,
        "METRICS_SINK": "emf",
    }


def provider_log_groups(stack: Stack, config: EnvironmentConfig) -> list[logs.LogGroup]:
    """Log groups with the environment's retention for CDK's own custom resource providers.

    Their handlers (``Custom::VpcRestrictDefaultSG``, ``Custom::S3AutoDeleteObjects``) are
    plain ``AWS::Lambda::Function`` resources without a log group, so Lambda would create
    ``/aws/lambda/<name>`` on first use, kept forever. Call once the stack is complete.
    """
    providers = [
        child for child in stack.node.children if child.node.id.endswith("CustomResourceProvider")
    ]
    groups = [
        logs.LogGroup(
            typing.cast(Construct, provider),
            "Logs",
            log_group_name=Fn.join(
                "",
                ["/aws/lambda/", typing.cast(CfnResource, provider.node.find_child("Handler")).ref],
            ),
            retention=config.log_retention,
            removal_policy=config.cdk_removal_policy,
        )
        for provider in providers
    ]
    # The group must exist before a custom resource first runs its provider.
    for construct in stack.node.find_all():
        if CfnResource.is_cfn_resource(construct) and typing.cast(
            CfnResource, construct
        ).cfn_resource_type.startswith("Custom::"):
            for group in groups:
                construct.node.add_dependency(group)
    return groups


def _application_level(level: str) -> lambda_.ApplicationLogLevel:
    return {
        "DEBUG": lambda_.ApplicationLogLevel.DEBUG,
        "INFO": lambda_.ApplicationLogLevel.INFO,
        "WARNING": lambda_.ApplicationLogLevel.WARN,
        "ERROR": lambda_.ApplicationLogLevel.ERROR,
    }[level]
