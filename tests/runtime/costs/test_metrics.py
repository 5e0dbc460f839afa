"""from-metrics: a profile from CloudWatch, against moto's CloudWatch with seeded data."""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from milequest.costs import CostError, CostErrorCode
from milequest.costs.cli import main
from milequest.costs.metrics import observe, profile_from_observed
from moto import mock_aws

REGION = "us-east-1"
DAYS = 30
END = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)


def _point(name: str, dims: dict[str, str], value: float, hours_ago: float) -> dict[str, Any]:
    return {
        "MetricName": name,
        "Dimensions": [{"Name": k, "Value": v} for k, v in dims.items()],
        "Timestamp": END - timedelta(hours=hours_ago),
        "Value": value,
        "Unit": "Count",
    }


def _put(
    cw: Any, namespace: str, name: str, dims: dict[str, str], value: float, hours_ago: float
) -> None:
    cw.put_metric_data(Namespace=namespace, MetricData=[_point(name, dims, value, hours_ago)])


def _ours(service: str, operation: str | None = None) -> dict[str, str]:
    # What our EMF sink writes: Service, Provider, Operation, and Powertools' own "service".
    dims = {"Service": service, "Provider": "apigateway" if service == "websocket" else "ses"}
    if operation:
        dims["Operation"] = operation
    return {**dims, "service": service}


@pytest.fixture
def seeded() -> Iterator[str]:
    """A prod stage with 30 days of metrics; yields the API id."""
    with mock_aws():
        api = boto3.client("apigatewayv2", region_name=REGION).create_api(
            Name="milequest-prod-realtime",
            ProtocolType="WEBSOCKET",
            RouteSelectionExpression="$request.body.event",
        )["ApiId"]
        boto3.client("apigatewayv2", region_name=REGION).create_api(
            Name="milequest-staging-realtime",
            ProtocolType="WEBSOCKET",
            RouteSelectionExpression="$request.body.event",
        )
        cw = boto3.client("cloudwatch", region_name=REGION)
        dims = {"ApiId": api, "Stage": "live"}
        hours = range(DAYS * 24)
        # 50 connects an hour, 200 in the busiest hour: 36,150 in all.
        points = [_point("ConnectCount", dims, 200 if h == 5 else 50, h + 0.5) for h in hours]
        points += [_point("MessageCount", dims, 1_000, h + 0.5) for h in hours]
        for first in range(0, len(points), 500):
            cw.put_metric_data(Namespace="AWS/ApiGateway", MetricData=points[first : first + 500])
        _put(cw, "AWS/ApiGateway", "ConnectCount", {"ApiId": "other", "Stage": "live"}, 9e6, 3)
        _put(cw, "AWS/ApiGateway", "ConnectCount", dims, 9e6, DAYS * 24 + 10)  # before
        for hours_ago, value in ((2.5, 700), (30.5, 300)):
            _put(cw, "MileQuest", "Calls", _ours("websocket", "trigger"), value, hours_ago)
        _put(cw, "MileQuest", "Calls", _ours("websocket", "trigger_batch"), 200, 4.5)
        _put(cw, "MileQuest", "Calls", _ours("websocket", "client_event"), 100, 6.5)
        _put(cw, "MileQuest", "Calls", _ours("websocket", "subscribe"), 72_300, 8.5)
        _put(cw, "MileQuest", "Calls", _ours("websocket", "get_channel_info"), 5_000, 8.5)
        _put(cw, "MileQuest", "Errors", _ours("websocket", "trigger"), 40, 8.5)
        _put(cw, "MileQuest", "Deliveries", _ours("websocket"), 6_400, 9.5)
        _put(cw, "MileQuest", "Calls", _ours("email", "send_email"), 3_000, 10.5)
        _put(cw, "MileQuest", "Calls", _ours("email", "send_templated_email"), 1_500, 11.5)
        _put(cw, "MileQuest", "Calls", _ours("email", "validate_email"), 800, 11.5)
        _put(cw, "MileQuest", "BulkMessages", _ours("email"), 500, 12.5)
        yield api


def test_observe_sums_the_stage_window(seeded: str) -> None:
    observed = observe("prod", DAYS, region=REGION, end=END)
    assert observed.api_id == seeded
    assert observed.days == DAYS
    assert observed.connects == 719 * 50 + 200
    assert observed.peak_hour_connects == 200
    assert observed.messages == DAYS * 24 * 1_000
    assert observed.triggers == 1_200  # trigger and trigger_batch calls
    assert observed.client_events == 100
    assert observed.subscribes == 72_300
    assert observed.deliveries == 6_400
    assert observed.emails == 5_000  # send_email + send_templated_email + bulk messages


def test_the_profile_from_what_was_observed(seeded: str) -> None:
    observed = observe("prod", DAYS, region=REGION, end=END)
    profile = profile_from_observed(observed, presence_joins_per_month=900)
    # 36,150 connects x 120 minutes; the busiest hour's 200 connects x 2 h = 400 at once.
    assert profile.connection_minutes == 36_150 * 120
    assert profile.peak_connections == 400
    assert profile.subscriptions_per_connection == 2
    assert profile.events_per_month == 1_200
    # (6,400 deliveries + 100 senders not echoed) / (1,200 triggers + 100 client events)
    assert profile.subscribers_per_event == 5
    assert profile.emails_per_month == 5_000
    assert profile.presence_joins_per_month == 900
    # Over 15 days the same totals make twice as much a month.
    half = profile_from_observed(observed.model_copy(update={"start": END - timedelta(days=15)}))
    assert half.events_per_month == 2_400


def test_the_cli_prints_what_it_read_and_the_estimate(seeded: str) -> None:
    out, err = io.StringIO(), io.StringIO()
    code = main(
        ["from-metrics", "--env", "prod", "--days", "30", "--region", REGION],
        stdout=out,
        stderr=err,
    )
    assert code == 0, err.getvalue()
    text = out.getvalue()
    assert f"API {seeded}, stage live" in text
    assert "connects 36,150 (busiest hour 200)" in text
    assert "API Gateway counted 720,000 messages a month" in text
    assert "Realtime: Pusher Channels (plan Startup)" in text  # 400 connections


def test_a_missing_api_is_a_clear_error(seeded: str) -> None:
    with pytest.raises(CostError) as info:
        observe("dev", DAYS, region=REGION, end=END)
    assert info.value.code is CostErrorCode.METRICS_UNAVAILABLE
    assert "milequest-dev-realtime" in str(info.value)
    err = io.StringIO()
    assert main(["from-metrics", "--env", "dev", "--region", REGION], stderr=err) == 1
    assert err.getvalue().count("\n") == 1


@pytest.mark.parametrize("days", ["0", "-3", "456", "nan"])
def test_out_of_range_windows_are_refused(days: str) -> None:
    err = io.StringIO()
    assert main(["from-metrics", "--env", "prod", "--days", days], stderr=err) == 2
    assert "days must be between" in err.getvalue()
    assert err.getvalue().count("\n") == 1


def test_no_credentials_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    with pytest.raises(CostError) as info:
        observe("prod", DAYS, region=REGION, api_id="abc", end=END)
    assert info.value.code is CostErrorCode.CONFIGURATION
