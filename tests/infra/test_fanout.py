"""The fan-out construct on a bare stack: queues, redrive, event source, concurrency, alarms."""

from __future__ import annotations

import contextlib
import importlib
from pathlib import Path
from typing import Any

import pytest
from aws_cdk import App, CfnElement, Duration, Stack
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sns as sns
from aws_cdk.assertions import Match, Template
from constructs import IConstruct
from milequest.services.websocket.settings import WebSocketSettings

from infra.fanout import ENVIRONMENT_VARIABLE, HANDLER, FanoutQueue
from infra.nag import FAIL_ON_FINDINGS, add_checks, unacknowledged_findings

ENV = {"account": "123456789012", "region": "us-east-1"}


def _worker(stack: Stack, timeout: int = 30) -> lambda_.Function:
    return lambda_.Function(
        stack,
        "Worker",
        runtime=lambda_.Runtime.PYTHON_3_13,
        handler=HANDLER,
        code=lambda_.Code.from_inline("def handler(event, context): pass"),
        timeout=Duration.seconds(timeout),
    )


def _built(**options: Any) -> tuple[FanoutQueue, Template]:
    stack = Stack(App(), "Bare", env=ENV)
    worker = _worker(stack)
    alias = lambda_.Alias(stack, "Live", alias_name="live", version=worker.current_version)
    fanout = FanoutQueue(stack, "Fanout", worker=worker, target=alias, **options)
    return fanout, Template.from_stack(stack)


def _id(construct: IConstruct) -> str:
    """The logical id of a construct's CloudFormation resource."""
    resource = construct.node.default_child
    assert isinstance(resource, CfnElement)
    return Stack.of(construct).get_logical_id(resource)


def _one(template: Template, kind: str, props: dict[str, Any] | None = None) -> dict[str, Any]:
    found = template.find_resources(kind, {"Properties": props} if props else None)
    assert len(found) == 1, found
    return dict(next(iter(found.values())))


def test_the_shard_queue_redrives_to_an_encrypted_dead_letter_queue() -> None:
    fanout, template = _built(max_receive_count=4)
    queues = template.find_resources("AWS::SQS::Queue")
    assert len(queues) == 2
    dlq_id = _id(fanout.dead_letter_queue)
    queue = queues[_id(fanout.queue)]
    dlq = queues[dlq_id]
    assert queue["Properties"]["RedrivePolicy"] == {
        "deadLetterTargetArn": {"Fn::GetAtt": [dlq_id, "Arn"]},
        "maxReceiveCount": 4,
    }
    assert queue["Properties"]["VisibilityTimeout"] == 6 * 30  # six times the worker's timeout
    assert queue["Properties"]["MessageRetentionPeriod"] == 2 * 3600
    assert dlq["Properties"]["MessageRetentionPeriod"] == 14 * 24 * 3600
    for resource in (queue, dlq):
        assert resource["Properties"]["SqsManagedSseEnabled"] is True
    policies = template.find_resources("AWS::SQS::QueuePolicy")
    assert len(policies) == 2
    for policy in policies.values():
        statement = policy["Properties"]["PolicyDocument"]["Statement"][0]
        assert statement["Effect"] == "Deny"
        assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_the_event_source_reports_partial_batch_failures_and_invokes_the_alias() -> None:
    fanout, template = _built()
    mapping = _one(template, "AWS::Lambda::EventSourceMapping")["Properties"]
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["BatchSize"] == 1  # a crash repeats one shard, not a batch of them
    _, batched = _built(batch_size=5)
    assert _one(batched, "AWS::Lambda::EventSourceMapping")["Properties"]["BatchSize"] == 5
    assert "ScalingConfig" not in mapping  # no cap unless asked
    alias_id = next(iter(template.find_resources("AWS::Lambda::Alias")))
    # "<function>:live", taken from the alias's ARN: the published version, never $LATEST
    parts = mapping["FunctionName"]["Fn::Join"][1]
    assert parts[1] == ":live"
    assert parts[0]["Fn::Select"][1] == {"Fn::Split": [":", {"Ref": alias_id}]}
    queue_id = _id(fanout.queue)
    assert mapping["EventSourceArn"] == {"Fn::GetAtt": [queue_id, "Arn"]}


def test_reserved_concurrency_comes_from_the_parameter_and_caps_the_pollers() -> None:
    fanout, template = _built(reserved_concurrency=20, max_concurrency=50)
    function = _one(template, "AWS::Lambda::Function")["Properties"]
    assert function["ReservedConcurrentExecutions"] == 20
    mapping = _one(template, "AWS::Lambda::EventSourceMapping")["Properties"]
    assert mapping["ScalingConfig"] == {"MaximumConcurrency": 20}
    assert fanout.max_concurrency == 20
    _, lower = _built(reserved_concurrency=20, max_concurrency=8)
    assert _one(lower, "AWS::Lambda::EventSourceMapping")["Properties"]["ScalingConfig"] == {
        "MaximumConcurrency": 8
    }
    _, unreserved = _built()
    assert (
        "ReservedConcurrentExecutions"
        not in _one(unreserved, "AWS::Lambda::Function")["Properties"]
    )


@pytest.mark.parametrize(
    "options",
    [
        {"reserved_concurrency": 1},
        {"max_concurrency": 1},
        {"max_concurrency": 1001},
        {"batch_size": 11},
    ],
)
def test_impossible_settings_are_refused(options: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        _built(**options)


def test_the_worker_consumes_and_requeues_and_publishers_may_enqueue() -> None:
    stack = Stack(App(), "Bare", env=ENV)
    fanout = FanoutQueue(stack, "Fanout", worker=_worker(stack))
    publisher = iam.Role(
        stack, "Publisher", assumed_by=iam.ServicePrincipal("ecs-tasks.amazonaws.com")
    )
    fanout.grant_enqueue(publisher)
    template = Template.from_stack(stack)
    queue_arn = {"Fn::GetAtt": [_id(fanout.queue), "Arn"]}

    def actions_of(role: iam.IRole) -> set[str]:
        role_id = _id(role)
        found: set[str] = set()
        for policy in template.find_resources("AWS::IAM::Policy").values():
            if {"Ref": role_id} not in policy["Properties"]["Roles"]:
                continue
            for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
                if statement["Resource"] == queue_arn:
                    listed = statement["Action"]
                    found.update([listed] if isinstance(listed, str) else listed)
        return found

    assert fanout.worker.role is not None
    worker_actions = actions_of(fanout.worker.role)
    assert {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:SendMessage"} <= worker_actions
    assert actions_of(publisher) == {
        "sqs:SendMessage",
        "sqs:GetQueueAttributes",
        "sqs:GetQueueUrl",
    }


def test_the_environment_names_the_runtime_setting() -> None:
    stack = Stack(App(), "Bare", env=ENV)
    fanout = FanoutQueue(stack, "Fanout", worker=_worker(stack))
    assert set(fanout.environment) == {ENVIRONMENT_VARIABLE}
    assert ENVIRONMENT_VARIABLE.lower() in WebSocketSettings.model_fields
    module, name = HANDLER.rsplit(".", 1)
    assert callable(getattr(importlib.import_module(module), name))


def test_alarms_on_dead_letters_and_on_the_oldest_shard() -> None:
    stack = Stack(App(), "Bare", env=ENV)
    fanout = FanoutQueue(stack, "Fanout", worker=_worker(stack))
    topic = sns.Topic(stack, "Alarms")
    alarms = fanout.add_alarms(
        action=actions.SnsAction(topic), oldest_shard_age=Duration.minutes(3)
    )
    assert len(alarms) == 2
    template = Template.from_stack(stack)
    topic_ref = {"Ref": _id(topic)}
    dead = _one(
        template, "AWS::CloudWatch::Alarm", {"MetricName": "ApproximateNumberOfMessagesVisible"}
    )
    assert dead["Properties"]["Threshold"] == 1
    assert dead["Properties"]["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    assert dead["Properties"]["Dimensions"] == [
        {
            "Name": "QueueName",
            "Value": {
                "Fn::GetAtt": [
                    _id(fanout.dead_letter_queue),
                    "QueueName",
                ]
            },
        }
    ]
    oldest = _one(
        template, "AWS::CloudWatch::Alarm", {"MetricName": "ApproximateAgeOfOldestMessage"}
    )
    assert oldest["Properties"]["Threshold"] == 180
    for alarm in (dead, oldest):
        assert alarm["Properties"]["AlarmActions"] == [topic_ref]
        assert alarm["Properties"]["TreatMissingData"] == "notBreaching"


def test_alarms_can_live_in_the_stack_that_holds_the_topic() -> None:
    """As the observability stack does: alarms there, queues in the realtime stack."""
    app = App()
    realtime = Stack(app, "Realtime", env=ENV)
    fanout = FanoutQueue(realtime, "Fanout", worker=_worker(realtime))
    observability = Stack(app, "Observability", env=ENV)
    topic = sns.Topic(observability, "Alarms")
    fanout.add_alarms(observability, action=actions.SnsAction(topic))
    assembly = app.synth()  # no dependency cycle
    assert Template.from_stack(realtime).find_resources("AWS::CloudWatch::Alarm") == {}
    alarms = Template.from_stack(observability).find_resources("AWS::CloudWatch::Alarm")
    assert len(alarms) == 2
    assert {s.stack_name for s in assembly.stacks} == {"Realtime", "Observability"}
    Template.from_stack(observability).has_resource_properties(
        "AWS::CloudWatch::Alarm", {"AlarmActions": Match.any_value()}
    )


def test_no_cdk_nag_findings_in_the_construct(tmp_path: Path) -> None:
    app = App(outdir=str(tmp_path), post_cli_context=FAIL_ON_FINDINGS)
    add_checks(app)
    stack = Stack(app, "Bare", env=ENV)
    FanoutQueue(stack, "Fanout", worker=_worker(stack), reserved_concurrency=10)
    with contextlib.suppress(Exception):  # the bare worker function has findings of its own
        app.synth()
    findings = unacknowledged_findings(tmp_path)
    assert any("/Worker/" in f for f in findings)  # the checks ran: the bare function fails
    assert [f for f in findings if "/Fanout/" in f] == []
