"""cdk-nag: the AwsSolutions checks on the app, and narrow, reasoned acknowledgements."""

from __future__ import annotations

import json
from pathlib import Path

from aws_cdk import Acknowledgment, App, Stack, Stage, Token, Validations
from cdk_nag import AwsSolutionsChecks
from constructs import IConstruct

PACK = "AwsSolutions"


# The CDK CLI (2.1100+) asks apps to leave failing on validation findings to it
# (``failSynthOnValidationErrors=false``) yet `cdk synth` still exits 0 with findings.
# Given as post-CLI context, this makes the app itself fail synth on any finding.
FAIL_ON_FINDINGS = {"@aws-cdk/core:failSynthOnValidationErrors": True}


def add_checks(app: App) -> None:
    """Run the AwsSolutions pack on every stack; any unacknowledged finding fails synth."""
    Validations.of(app).add_plugins(AwsSolutionsChecks(app))


def unacknowledged_findings(assembly_dir: str | Path) -> list[str]:
    """The findings of a synthesized assembly's validation report, one line each."""
    report_file = Path(assembly_dir) / "validation-report.json"
    if not report_file.exists():
        return []
    report = json.loads(report_file.read_text(encoding="utf-8"))
    return [
        f"{violation['ruleName']} at {construct['constructPath']}"
        for plugin in report.get("pluginReports", [])
        for violation in plugin.get("violations", [])
        for construct in violation.get("violatingConstructs", [])
    ]


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
    # With a known region, @aws-cdk/core:enablePartitionLiterals makes the partition literal.
    partition = "<AWS::Partition>" if Token.is_unresolved(stack.partition) else stack.partition
    region = "<AWS::Region>" if Token.is_unresolved(stack.region) else stack.region
    account = "<AWS::AccountId>" if Token.is_unresolved(stack.account) else stack.account
    return f"arn:{partition}:{service}:{region}:{account}"


def acknowledge_validation(construct: IConstruct, plugin_rule: str, reason: str) -> None:
    """Acknowledge another validation plugin's finding (``CloudFormation-Validate::W3694``)."""
    if len(reason) < 20:
        raise ValueError("an acknowledgement needs a written reason")
    Validations.of(construct).acknowledge(Acknowledgment(id=plugin_rule, reason=reason))
