"""The suppression table construct on a bare stack: the runtime's schema, grants, webhook."""

from __future__ import annotations

from typing import Any

import pytest
from aws_cdk import App, Duration, RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sns as sns
from aws_cdk.assertions import Match, Template
from milequest.services.email.suppression_dynamodb import table_definition

from infra.suppression import (
    ENVIRONMENT_VARIABLE,
    LOOKUP_ACTIONS,
    MANAGE_ACTIONS,
    RECORD_ACTIONS,
    SuppressionTable,
    subscribe_https_webhook,
)


def _stack() -> Stack:
    return Stack(App(), "Bare", env={"account": "123456789012", "region": "us-east-1"})


def _function(stack: Stack, name: str) -> lambda_.Function:
    return lambda_.Function(
        stack,
        name,
        runtime=lambda_.Runtime.PYTHON_3_13,
        handler="index.handler",
        code=lambda_.Code.from_inline("def handler(event, context): pass"),
        timeout=Duration.seconds(3),
    )


def _only(template: Template, kind: str) -> tuple[str, dict[str, Any]]:
    found = template.find_resources(kind)
    assert len(found) == 1, found
    return next(iter(found.items()))


def test_the_table_is_built_from_the_runtime_definition() -> None:
    stack = _stack()
    SuppressionTable(stack, "Suppression")
    template = Template.from_stack(stack)
    _, table = _only(template, "AWS::DynamoDB::Table")
    definition = table_definition()
    props = table["Properties"]
    assert props["KeySchema"] == definition["KeySchema"]
    assert props["AttributeDefinitions"] == definition["AttributeDefinitions"]
    assert props["BillingMode"] == "PAY_PER_REQUEST"
    assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert props["SSESpecification"] == {"SSEEnabled": True}
    assert table["DeletionPolicy"] == "Retain"
    assert "TimeToLiveSpecification" not in props  # entries stay until removed


def test_the_removal_policy_can_be_destroy_for_short_lived_stages() -> None:
    stack = _stack()
    SuppressionTable(stack, "Suppression", removal_policy=RemovalPolicy.DESTROY)
    _, table = _only(Template.from_stack(stack), "AWS::DynamoDB::Table")
    assert table["DeletionPolicy"] == "Delete"


def _statements(template: Template) -> list[dict[str, Any]]:
    statements = [
        s
        for policy in template.find_resources("AWS::IAM::Policy").values()
        for s in policy["Properties"]["PolicyDocument"]["Statement"]
    ]
    assert statements, "no IAM policy in the template"
    return statements


@pytest.mark.parametrize(
    ("grant", "actions"),
    [
        ("grant_lookup", LOOKUP_ACTIONS),
        ("grant_record", RECORD_ACTIONS),
        ("grant_manage", MANAGE_ACTIONS),
    ],
)
def test_each_grant_is_exactly_its_actions_on_the_table(
    grant: str, actions: tuple[str, ...]
) -> None:
    stack = _stack()
    suppression = SuppressionTable(stack, "Suppression")
    role = iam.Role(stack, "Role", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"))
    getattr(suppression, grant)(role)
    template = Template.from_stack(stack)
    table_id, _ = _only(template, "AWS::DynamoDB::Table")
    [statement] = _statements(template)
    assert statement["Effect"] == "Allow"
    assert sorted(statement["Action"]) == sorted(actions)
    assert statement["Resource"] == [{"Fn::GetAtt": [table_id, "Arn"]}]


def test_attach_sets_the_variable_and_grants_the_lookup_or_writes() -> None:
    stack = _stack()
    suppression = SuppressionTable(stack, "Suppression")
    sender, recorder = _function(stack, "Sender"), _function(stack, "Recorder")
    suppression.attach(sender)
    suppression.attach(recorder, record=True)
    template = Template.from_stack(stack)
    table_id, _ = _only(template, "AWS::DynamoDB::Table")
    for name in ("Sender", "Recorder"):
        template.has_resource_properties(
            "AWS::Lambda::Function",
            {
                "Environment": {"Variables": {ENVIRONMENT_VARIABLE: {"Ref": table_id}}},
                "Role": {"Fn::GetAtt": [Match.string_like_regexp(f"^{name}ServiceRole"), "Arn"]},
            },
        )
    by_role = {
        policy["Properties"]["Roles"][0]["Ref"]: policy["Properties"]["PolicyDocument"]["Statement"]
        for policy in template.find_resources("AWS::IAM::Policy").values()
    }
    [sender_role] = [r for r in by_role if r.startswith("SenderServiceRole")]
    [recorder_role] = [r for r in by_role if r.startswith("RecorderServiceRole")]
    assert [sorted(s["Action"]) for s in by_role[sender_role]] == [sorted(LOOKUP_ACTIONS)]
    assert [sorted(s["Action"]) for s in by_role[recorder_role]] == [sorted(RECORD_ACTIONS)]


def test_the_https_webhook_subscription() -> None:
    stack = _stack()
    topics = [sns.Topic(stack, "Bounce"), sns.Topic(stack, "Complaint")]
    subscribe_https_webhook(topics, "https://api.milequest.example/webhooks/ses")
    subscriptions = Template.from_stack(stack).find_resources("AWS::SNS::Subscription")
    assert len(subscriptions) == 2
    for subscription in subscriptions.values():
        props = subscription["Properties"]
        assert props["Protocol"] == "https"
        assert props["Endpoint"] == "https://api.milequest.example/webhooks/ses"
        assert props.get("RawMessageDelivery", False) is False
    with pytest.raises(ValueError, match="https"):
        subscribe_https_webhook(topics, "http://api.milequest.example/webhooks/ses")
