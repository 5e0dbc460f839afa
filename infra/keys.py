"""Customer-managed KMS keys that AWS services of this account may encrypt with."""

from __future__ import annotations

from aws_cdk import Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from constructs import Construct

from .config import EnvironmentConfig


def service_key(
    scope: Construct,
    construct_id: str,
    *,
    config: EnvironmentConfig,
    description: str,
    services: tuple[str, ...],
) -> kms.Key:
    """A rotated key whose policy lets ``services`` (``ses``, ``sns``, ...) use it.

    Services publishing to an encrypted topic or queue need the key: the AWS-managed
    ``alias/aws/sns`` and ``alias/aws/sqs`` keys cannot be shared with them.
    """
    key = kms.Key(
        scope,
        construct_id,
        description=f"{config.resource_prefix}: {description}",
        enable_key_rotation=True,
        removal_policy=config.cdk_removal_policy,
    )
    for service in services:
        key.add_to_resource_policy(
            iam.PolicyStatement(
                sid=f"Allow{service.capitalize()}",
                principals=[iam.ServicePrincipal(f"{service}.amazonaws.com")],
                actions=["kms:GenerateDataKey*", "kms:Decrypt"],
                resources=["*"],
                conditions={"StringEquals": {"aws:SourceAccount": Stack.of(scope).account}},
            )
        )
    return key
