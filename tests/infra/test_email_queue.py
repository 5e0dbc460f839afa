"""The email queue construct on a bare stack: encryption with the given key, the claim-check
bucket, the idempotency table, the event source, IAM scoped to exactly these, alarms,
widgets, and cdk-nag."""

from __future__ import annotations

import contextlib
import importlib
import json
from pathlib import Path
from typing import Any

import pytest
from aws_cdk import App, Duration, Stack
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sns as sns
from aws_cdk.assertions import Template
from milequest.services.email.settings import EmailSettings

from infra.email_queue import HANDLER, EmailQueue
from infra.nag import FAIL_ON_FINDINGS, add_checks, unacknowledged_findings

ENV = {"account": "123456789012", "region": "us-east-1"}


def _consumer(stack: Stack) -> lambda_.Function:
    return lambda_.Function(
        stack,
        "Consumer",
        runtime=lambda_.Runtime.PYTHON_3_13,
        handler=HANDLER,
        code=lambda_.Code.from_inline("def handler(event, context): pass"),
        timeout=Duration.seconds(60),
    )


def _built(**options: Any) -> tuple[Stack, EmailQueue, Template]:
    stack = Stack(App(), "Bare", env=ENV)
    consumer = _consumer(stack)
    alias = lambda_.Alias(stack, "Live", alias_name="live", version=consumer.current_version)
    key = kms.Key(stack, "StageKey", enable_key_rotation=True)
    queue = EmailQueue(stack, "EmailQueue", consumer=consumer, target=alias, key=key, **options)
    return stack, queue, Template.from_stack(stack)


def _id(stack: Stack, construct: Any) -> str:
    return stack.get_logical_id(construct.node.default_child)


def _one(template: Template, kind: str) -> dict[str, Any]:
    found = template.find_resources(kind)
    assert len(found) == 1, found
    return dict(next(iter(found.values()))["Properties"])


def test_the_queue_and_its_dead_letter_queue_use_the_stage_key() -> None:
    stack, email, template = _built(max_receives=5, retention=Duration.days(3))
    key_arn = {"Fn::GetAtt": [_id(stack, email.key), "Arn"]}
    queues = template.find_resources("AWS::SQS::Queue")
    assert len(queues) == 2
    queue = queues[_id(stack, email.queue)]["Properties"]
    dlq_id = _id(stack, email.dead_letter_queue)
    dlq = queues[dlq_id]["Properties"]
    for props in (queue, dlq):
        assert props["KmsMasterKeyId"] == key_arn
    assert queue["RedrivePolicy"] == {
        "deadLetterTargetArn": {"Fn::GetAtt": [dlq_id, "Arn"]},
        "maxReceiveCount": 6,  # the consumer dead-letters itself on its 5th; this is a backstop
    }
    assert queue["VisibilityTimeout"] == 6 * 60
    assert queue["MessageRetentionPeriod"] == 3 * 24 * 3600
    assert dlq["MessageRetentionPeriod"] == 14 * 24 * 3600
    for policy in template.find_resources("AWS::SQS::QueuePolicy").values():
        statement = policy["Properties"]["PolicyDocument"]["Statement"][0]
        assert statement["Effect"] == "Deny"
        assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_the_claim_check_bucket_is_encrypted_private_and_expires_its_objects() -> None:
    stack, email, template = _built(claim_check_days=21)
    bucket = _one(template, "AWS::S3::Bucket")
    [rule] = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["ServerSideEncryptionByDefault"] == {
        "KMSMasterKeyID": {"Fn::GetAtt": [_id(stack, email.key), "Arn"]},
        "SSEAlgorithm": "aws:kms",
    }
    assert bucket["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    [lifecycle] = bucket["LifecycleConfiguration"]["Rules"]
    assert lifecycle["ExpirationInDays"] == 21
    assert lifecycle["Status"] == "Enabled"
    with pytest.raises(ValueError, match="outlive"):
        _built(claim_check_days=14)  # shorter than the dead-letter queue keeps messages


def test_the_idempotency_table_is_the_runtimes_layout_with_ttl() -> None:
    _, _, template = _built()
    table = _one(template, "AWS::DynamoDB::Table")
    assert table["KeySchema"] == [{"AttributeName": "id", "KeyType": "HASH"}]
    assert table["BillingMode"] == "PAY_PER_REQUEST"
    assert table["TimeToLiveSpecification"] == {"AttributeName": "expiration", "Enabled": True}


def test_the_event_source_caps_concurrency_reports_partial_failures_and_invokes_the_alias() -> None:
    stack, email, template = _built(max_concurrency=4, batch_size=5)
    mapping = _one(template, "AWS::Lambda::EventSourceMapping")
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["ScalingConfig"] == {"MaximumConcurrency": 4}
    assert mapping["BatchSize"] == 5
    assert mapping["EventSourceArn"] == {"Fn::GetAtt": [_id(stack, email.queue), "Arn"]}
    assert mapping["FunctionName"]["Fn::Join"][1][1] == ":live"
    env = _one(template, "AWS::Lambda::Function")["Environment"]["Variables"]
    assert env["EMAIL_QUEUE_CONCURRENCY"] == "4"  # the same number bounds the fleet's rate
    assert env["EMAIL_DELIVERY"] == "direct"
    assert {name.lower() for name in env} <= set(EmailSettings.model_fields)


@pytest.mark.parametrize(
    "options",
    [{"max_concurrency": 1}, {"max_concurrency": 1001}, {"batch_size": 11}, {"max_receives": 0}],
)
def test_impossible_settings_are_refused(options: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        _built(**options)


def _statements(template: Template, role_id: str) -> list[dict[str, Any]]:
    found = []
    for policy in template.find_resources("AWS::IAM::Policy").values():
        if {"Ref": role_id} in policy["Properties"]["Roles"]:
            found.extend(policy["Properties"]["PolicyDocument"]["Statement"])
    return found


def _grants(statements: list[dict[str, Any]]) -> dict[str, set[str]]:
    """Action -> the resources it is granted on (JSON of each)."""
    out: dict[str, set[str]] = {}
    for statement in statements:
        listed = statement["Action"]
        resources = statement["Resource"]
        resources = resources if isinstance(resources, list) else [resources]
        for action in [listed] if isinstance(listed, str) else listed:
            out.setdefault(action, set()).update(json.dumps(r, sort_keys=True) for r in resources)
    return out


def test_iam_is_scoped_to_exactly_these_resources() -> None:
    stack = Stack(App(), "Bare", env=ENV)
    consumer = _consumer(stack)
    key = kms.Key(stack, "StageKey", enable_key_rotation=True)
    email = EmailQueue(stack, "EmailQueue", consumer=consumer, key=key)
    sender = iam.Role(stack, "Sender", assumed_by=iam.ServicePrincipal("ecs-tasks.amazonaws.com"))
    operator = iam.Role(stack, "Operator", assumed_by=iam.AccountRootPrincipal())
    email.grant_enqueue(sender)
    email.grant_operate(operator)
    template = Template.from_stack(stack)

    def arn(construct: Any) -> str:
        return json.dumps({"Fn::GetAtt": [_id(stack, construct), "Arn"]}, sort_keys=True)

    queue, dlq, key_arn, table = (
        arn(email.queue),
        arn(email.dead_letter_queue),
        arn(key),
        arn(email.table),
    )
    claim_checks = json.dumps(
        {"Fn::Join": ["", [{"Fn::GetAtt": [_id(stack, email.bucket), "Arn"]}, "/email-queue/*"]]},
        sort_keys=True,
    )
    assert consumer.role is not None
    worker = _grants(_statements(template, _id(stack, consumer.role)))
    worker.pop("logs:CreateLogGroup", None)
    worker.pop("logs:CreateLogStream", None)
    worker.pop("logs:PutLogEvents", None)
    assert worker == {
        "sqs:ReceiveMessage": {queue},
        "sqs:ChangeMessageVisibility": {queue},
        "sqs:GetQueueUrl": {queue},
        "sqs:DeleteMessage": {queue},
        "sqs:GetQueueAttributes": {queue},
        "sqs:SendMessage": {dlq},
        "kms:Decrypt": {key_arn},
        "kms:GenerateDataKey": {key_arn},
        "s3:GetObject": {claim_checks},
        "dynamodb:GetItem": {table},
        "dynamodb:PutItem": {table},
        "dynamodb:UpdateItem": {table},
        "dynamodb:DeleteItem": {table},
    }
    assert _grants(_statements(template, _id(stack, sender))) == {
        "sqs:SendMessage": {queue},
        "s3:PutObject": {claim_checks},
        "kms:GenerateDataKey": {key_arn},
        "kms:Decrypt": {key_arn},
    }
    operations = _grants(_statements(template, _id(stack, operator)))
    assert operations["sqs:PurgeQueue"] == {dlq}
    assert operations["sqs:SendMessage"] == {queue}
    assert "s3:GetObject" not in operations


def test_environments_name_runtime_settings() -> None:
    _, email, _ = _built()
    for environment in (
        email.producer_environment,
        email.consumer_environment,
        email.operator_environment,
    ):
        assert {name.lower() for name in environment} <= set(EmailSettings.model_fields)
    assert email.producer_environment["EMAIL_DELIVERY"] == "queue"
    module, name = HANDLER.rsplit(".", 1)
    assert callable(getattr(importlib.import_module(module), name))


def test_alarms_on_dead_letters_the_oldest_message_and_each_open_circuit() -> None:
    stack = Stack(App(), "Bare", env=ENV)
    key = kms.Key(stack, "StageKey", enable_key_rotation=True)
    email = EmailQueue(
        stack, "EmailQueue", consumer=_consumer(stack), key=key, providers=("ses", "resend")
    )
    topic = sns.Topic(stack, "Alarms")
    alarms = email.add_alarms(
        action=actions.SnsAction(topic), oldest_message_age=Duration.minutes(5)
    )
    assert len(alarms) == 4
    template = Template.from_stack(stack)
    found = template.find_resources("AWS::CloudWatch::Alarm")
    by_metric: dict[str, list[dict[str, Any]]] = {}
    for alarm in found.values():
        props = alarm["Properties"]
        by_metric.setdefault(props["MetricName"], []).append(props)
        assert props["AlarmActions"] == [{"Ref": _id(stack, topic)}]
        assert props["TreatMissingData"] == "notBreaching"
    [dead] = by_metric["ApproximateNumberOfMessagesVisible"]
    assert dead["Threshold"] == 1
    assert dead["Dimensions"][0]["Value"] == {
        "Fn::GetAtt": [_id(stack, email.dead_letter_queue), "QueueName"]
    }
    [oldest] = by_metric["ApproximateAgeOfOldestMessage"]
    assert oldest["Threshold"] == 300
    circuits = by_metric["CircuitOpen"]
    assert sorted(
        {d["Name"]: d["Value"] for d in c["Dimensions"]}["Provider"] for c in circuits
    ) == ["resend", "ses"]
    for circuit in circuits:
        assert circuit["Namespace"] == "MileQuest"
        assert circuit["Statistic"] == "Maximum"
        assert {d["Name"]: d["Value"] for d in circuit["Dimensions"]}["service"] == "email-queue"


def test_alarms_and_widgets_can_live_in_the_observability_stack() -> None:
    app = App()
    email_stack = Stack(app, "Email", env=ENV)
    key = kms.Key(email_stack, "StageKey", enable_key_rotation=True)
    email = EmailQueue(email_stack, "EmailQueue", consumer=_consumer(email_stack), key=key)
    observability = Stack(app, "Observability", env=ENV)
    email.add_alarms(observability)
    dashboard = cloudwatch.Dashboard(observability, "Dashboard")
    rows = email.widgets()
    for row in rows:
        dashboard.add_widgets(*row)
    app.synth()  # no dependency cycle
    assert Template.from_stack(email_stack).find_resources("AWS::CloudWatch::Alarm") == {}
    assert len(Template.from_stack(observability).find_resources("AWS::CloudWatch::Alarm")) == 3
    body = json.dumps(
        Template.from_stack(observability).find_resources("AWS::CloudWatch::Dashboard")
    )
    for title in ("Email queue depth", "Email dead letters", "Email circuits open"):
        assert title in body
    assert "QueueRetries" in body
    assert sum(len(row) for row in rows) == 8


def test_no_cdk_nag_findings_in_the_construct(tmp_path: Path) -> None:
    app = App(outdir=str(tmp_path), post_cli_context=FAIL_ON_FINDINGS)
    add_checks(app)
    stack = Stack(app, "Bare", env=ENV)
    key = kms.Key(stack, "StageKey", enable_key_rotation=True)
    email = EmailQueue(stack, "EmailQueue", consumer=_consumer(stack), key=key)
    sender = iam.Role(stack, "Sender", assumed_by=iam.ServicePrincipal("ecs-tasks.amazonaws.com"))
    email.grant_enqueue(sender)
    policy = iam.ManagedPolicy(stack, "SenderPolicy", statements=email.enqueue_statements())
    email.acknowledge_claim_checks(policy)
    with contextlib.suppress(Exception):  # the bare function has findings of its own
        app.synth()
    findings = unacknowledged_findings(tmp_path)
    assert any("/Consumer/" in f for f in findings)  # the checks ran: the bare function fails
    assert [f for f in findings if "/EmailQueue/" in f or "/Sender" in f] == []
