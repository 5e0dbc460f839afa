"""cdk-nag: the AwsSolutions checks on the app, and narrow, reasoned acknowledgements."""

from __future__ import annotations

from aws_cdk import Acknowledgment, App, Stack, Stage, Token, Validations
from cdk_nag import AwsSolutionsChecks
from constructs import IConstruct

PACK = "AwsSolutions"


def add_checks(app: App) -> None:
    """Run the AwsSolutions pack on every stack; any unacknowledged finding fails synth."""
    Validations.of(app).add_plugins(AwsSolutionsChecks(app))


def acknowledge(construct: IConstruct, rule: str, reason: str, *findings: str) -> None:
    """Acknowledge ``rule`` (for example ``IAM5``) on ``construct`` and its children.

    ``findings`` narrows the acknowledgement to individual findings of rules that report
    several (``Resource::*``, ``Action::s3:*``); without them the whole rule is acknowledged.
    """
    if len(reason) < 20:
        raise ValueError("an acknowledgement needs a written reason")
    if Stack.is_stack(construct) or Stage.is_stage(construct):
        raise ValueError("acknowledge findings on the construct concerned, never stack-wide")
    ids = [f"{PACK}-{rule}[{finding}]" for finding in findings] or [f"{PACK}-{rule}"]
    Validations.of(construct).acknowledge(
        *(Acknowledgment(id=f"{PACK}::{rule_id}", reason=reason) for rule_id in ids)
    )


def arn_prefix(stack: Stack, service: str) -> str:
    """``arn:<partition>:<service>:<region>:<account>`` as cdk-nag prints it in findings."""
    region = "<AWS::Region>" if Token.is_unresolved(stack.region) else stack.region
    account = "<AWS::AccountId>" if Token.is_unresolved(stack.account) else stack.account
    return f"arn:<AWS::Partition>:{service}:{region}:{account}"
