"""Observability: alarms on SES reputation, functions, the DLQ and the WebSocket API."""

from __future__ import annotations

import json
from typing import Any

import pytest
from milequest.costs import load_prices

from infra.config import ENVIRONMENTS

from .conftest import Synthesized, only, resources

ENVS = ("dev", "staging", "prod")


def _alarms(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        lid: r["Properties"] for lid, r in resources(template, "AWS::CloudWatch::Alarm").items()
    }


def _by_metric(template: dict[str, Any], metric: str) -> dict[str, Any]:
    (alarm,) = [a for a in _alarms(template).values() if a.get("MetricName") == metric]
    return alarm


@pytest.mark.parametrize("env", ENVS)
def test_ses_reputation_alarms(synthesized: Synthesized, env: str) -> None:
    template = synthesized.template_json(env, "Observability")
    bounce = _by_metric(template, "Reputation.BounceRate")
    assert bounce["Namespace"] == "AWS/SES"
    assert bounce["Threshold"] == 0.05
    assert bounce["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    complaint = _by_metric(template, "Reputation.ComplaintRate")
    assert complaint["Threshold"] == 0.001
    assert complaint["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"


@pytest.mark.parametrize("env", ENVS)
def test_function_dlq_and_api_alarms_notify_the_alarm_topic(
    synthesized: Synthesized, env: str
) -> None:
    template = synthesized.template_json(env, "Observability")
    alarms = _alarms(template)
    (topic_id,) = resources(template, "AWS::SNS::Topic")
    # Reputation (2), functions, the events DLQ, the API, the HTTP app, fan-out (2).
    serverless = not ENVIRONMENTS[env].container.enabled
    assert len(alarms) == 2 + (6 + serverless) + 1 + 1 + 1 + 2
    for alarm in alarms.values():
        assert alarm["AlarmActions"] == [{"Ref": topic_id}]
    errors = [a for a in alarms.values() if a.get("MetricName") == "Errors"]
    # SES events, connect, announce, disconnect, message, fan-out, and the HTTP app's function
    assert len(errors) == 6 + serverless
    assert all(a["Namespace"] == "AWS/Lambda" and a["Threshold"] == 1 for a in errors)
    (dlq,) = [a for lid, a in alarms.items() if lid.startswith("EventsDeadLetterQueueNotEmpty")]
    assert dlq["MetricName"] == "ApproximateNumberOfMessagesVisible"
    assert dlq["Threshold"] == 1
    (api_alarm,) = [a for a in alarms.values() if "ExecutionError" in _math_metrics(a)]
    assert set(_math_metrics(api_alarm)) == {"ExecutionError", "IntegrationError"}
    dims = _math_metrics(api_alarm)["ExecutionError"]["Dimensions"]
    assert {d["Name"] for d in dims} == {"ApiId", "Stage"}


def _math_metrics(alarm: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        m["MetricStat"]["Metric"]["MetricName"]: m["MetricStat"]["Metric"]
        for m in alarm.get("Metrics", [])
        if "MetricStat" in m
    }


def test_authorizer_alarms_on_the_share_of_refusals(bare: Synthesized) -> None:
    """Every refused token is a Lambda error of the (opt-in) authorizer: one must not page."""
    alarms = _alarms(bare.template_json("dev", "Observability"))
    authorizer = bare.stages["dev"].realtime.authorizer_function
    assert authorizer is not None
    name = bare.stages["dev"].observability.resolve(authorizer.function.function_name)
    errors = [alarm for alarm in alarms.values() if alarm.get("MetricName") == "Errors"]
    assert len(errors) == 7  # every other function, the HTTP app's included
    for alarm in errors:
        assert json.dumps(name) not in json.dumps(alarm["Dimensions"])
    (refusals,) = [a for a in alarms.values() if "Invocations" in _math_metrics(a)]
    metrics = _math_metrics(refusals)
    assert set(metrics) == {"Errors", "Invocations"}
    for metric in metrics.values():
        assert metric["Dimensions"] == [{"Name": "FunctionName", "Value": name}]
    (expression,) = [m["Expression"] for m in refusals["Metrics"] if "Expression" in m]
    assert "/ invocations" in expression
    assert refusals["Threshold"] == 0.5


def test_no_authorizer_alarm_without_the_authorizer(synthesized: Synthesized) -> None:
    for env in ENVS:
        alarms = _alarms(synthesized.template_json(env, "Observability"))
        assert not [a for a in alarms.values() if "Invocations" in _math_metrics(a)]


def test_alarm_email_subscription_follows_config(synthesized: Synthesized) -> None:
    for env in ENVS:
        template = synthesized.template_json(env, "Observability")
        subscriptions = resources(template, "AWS::SNS::Subscription")
        email = ENVIRONMENTS[env].alarm_email
        endpoints = [s["Properties"]["Endpoint"] for s in subscriptions.values()]
        assert endpoints == ([email] if email else [])
        topic = only(template, "AWS::SNS::Topic")
        (key_id,) = resources(template, "AWS::KMS::Key")
        assert topic["KmsMasterKeyId"] == {"Fn::GetAtt": [key_id, "Arn"]}
        # CloudWatch publishes alarms to the encrypted topic with the key.
        statements = template["Resources"][key_id]["Properties"]["KeyPolicy"]["Statement"]
        (allow,) = [
            s for s in statements if s["Principal"] == {"Service": "cloudwatch.amazonaws.com"}
        ]
        assert set(allow["Action"]) == {"kms:GenerateDataKey*", "kms:Decrypt"}
        assert "aws:SourceAccount" in allow["Condition"]["StringEquals"]
        # The SSL-only topic policy replaces SNS's default one: alarms need their own allow.
        policy = only(template, "AWS::SNS::TopicPolicy")["PolicyDocument"]["Statement"]
        (publish,) = [s for s in policy if s["Effect"] == "Allow"]
        assert publish["Principal"] == {"Service": "cloudwatch.amazonaws.com"}
        assert publish["Action"] == "sns:Publish"
        assert "aws:SourceAccount" in publish["Condition"]["StringEquals"]


def test_http_app_server_errors_alarm_where_it_runs(synthesized: Synthesized) -> None:
    for env in ENVS:
        alarms = _alarms(synthesized.template_json(env, "Observability")).values()
        target = [a for a in alarms if a.get("MetricName") == "HTTPCode_Target_5XX_Count"]
        api = [a for a in alarms if a.get("MetricName") == "5xx"]
        container = ENVIRONMENTS[env].container.enabled
        assert len(target) == int(container)
        assert len(api) == int(not container)
        for alarm in api:
            assert alarm["Namespace"] == "AWS/ApiGateway"
            (dimension,) = alarm["Dimensions"]
            assert dimension["Name"] == "ApiId"
            assert "Fn::ImportValue" in json.dumps(dimension["Value"])


@pytest.mark.parametrize("env", ENVS)
def test_dashboard_widgets(synthesized: Synthesized, env: str) -> None:
    dashboard = only(synthesized.template_json(env, "Observability"), "AWS::CloudWatch::Dashboard")
    body = json.dumps(dashboard["DashboardBody"])
    for metric in (
        "Send",
        "Delivery",
        "Bounce",
        "Complaint",
        "Reputation.BounceRate",
        "Reputation.ComplaintRate",
        "ConnectCount",
        "MessageCount",
        "Errors",
        "Duration",
        "ApproximateNumberOfMessagesVisible",
    ):
        assert f'\\"{metric}\\"' in body, metric


@pytest.mark.parametrize("env", ENVS)
def test_fanout_alarms_notify_and_recover(synthesized: Synthesized, env: str) -> None:
    template = synthesized.template_json(env, "Observability")
    (topic_id,) = resources(template, "AWS::SNS::Topic")
    alarms = _alarms(template)
    dead_letters = [a for lid, a in alarms.items() if lid.startswith("FanoutDeadLetters")]
    oldest = [a for lid, a in alarms.items() if lid.startswith("FanoutOldestShard")]
    assert len(dead_letters) == len(oldest) == 1
    assert dead_letters[0]["MetricName"] == "ApproximateNumberOfMessagesVisible"
    assert oldest[0]["MetricName"] == "ApproximateAgeOfOldestMessage"
    for alarm in (*dead_letters, *oldest):
        assert alarm["AlarmActions"] == alarm["OKActions"] == [{"Ref": topic_id}]
        (dimension,) = alarm["Dimensions"]
        assert dimension["Name"] == "QueueName"
        assert "Fn::ImportValue" in json.dumps(dimension["Value"])  # the Realtime stack's queue


@pytest.mark.parametrize("env", ENVS)
def test_cost_widgets_price_every_part_of_the_stage(synthesized: Synthesized, env: str) -> None:
    """The daily cost graphs of infra.costs read every function, table, index and queue."""
    stage = synthesized.stages[env]
    observability = stage.observability
    body = _body(synthesized.template_json(env, "Observability"))
    # Priced for the stage's region, or the price file's default where it has none.
    book = load_prices()
    region = ENVIRONMENTS[env].region
    priced = region if region in book.regions() else book.default_region
    titles = [w["properties"].get("title", "") for w in body["widgets"]]
    realtime_widget, email_widget = (
        body["widgets"][titles.index(f"{part}: estimated cost (USD a day, {priced} prices)")]
        for part in ("Realtime", "Email")
    )

    def dimension_values(widget: dict[str, Any], namespace: str, name: str) -> set[str]:
        return {
            row[row.index(name) + 1]
            for row in widget["properties"]["metrics"]
            if row[0] == namespace and name in row
        }

    realtime = stage.realtime
    functions = [fn.function for fn in realtime.functions]
    if stage.web is not None:
        functions.append(stage.web.app_function.function)
    # connect, announce, disconnect, message, fan-out (and the HTTP app on Lambda)
    assert len(functions) == 5 + int(stage.web is not None)
    assert dimension_values(realtime_widget, "AWS/Lambda", "FunctionName") == {
        _token(observability, fn.function_name) for fn in functions
    }
    assert dimension_values(realtime_widget, "AWS/DynamoDB", "GlobalSecondaryIndexName") == {
        "by_connection",
        "channels",
    }
    assert dimension_values(realtime_widget, "AWS/DynamoDB", "TableName") == {
        _token(observability, realtime.table.table_name)
    }
    assert dimension_values(realtime_widget, "AWS/SQS", "QueueName") == {
        _token(observability, realtime.fanout.queue.queue_name)
    }
    assert dimension_values(realtime_widget, "AWS/ApiGateway", "ApiId") == {
        _token(observability, realtime.api.api_id)
    }
    email = stage.email
    assert dimension_values(email_widget, "AWS/Lambda", "FunctionName") == {
        _token(observability, email.event_handler.function.function_name)
    }
    assert dimension_values(email_widget, "AWS/DynamoDB", "TableName") == {
        _token(observability, email.suppression.table.table_name)
    }
    assert dimension_values(email_widget, "AWS/SQS", "QueueName") == {
        _token(observability, email.dead_letter_queue.queue_name)
    }
    assert any(row[:2] == ["AWS/SES", "Send"] for row in email_widget["properties"]["metrics"])


def _body(template: dict[str, Any]) -> dict[str, Any]:
    """The dashboard body, each reference replaced by its JSON text."""
    dashboard = only(template, "AWS::CloudWatch::Dashboard")
    parts = dashboard["DashboardBody"]["Fn::Join"][1]
    text = "".join(p if isinstance(p, str) else json.dumps(p).replace('"', "'") for p in parts)
    body: dict[str, Any] = json.loads(text)
    return body


def _token(stack: Any, value: str) -> str:
    """How a value of another stack appears in the dashboard body (see ``_body``)."""
    return json.dumps(stack.resolve(value)).replace('"', "'")
