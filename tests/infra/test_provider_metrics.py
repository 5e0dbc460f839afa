"""Providers side by side: the dashboard's per-provider figures and the migration alarm read
exactly the metrics the runtime emits (names, dimension sets and values)."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from milequest.services.email import create_email_service
from milequest.services.email.events import process_sns_event, record_events
from milequest.services.metrics import EmfSink, MetricsSink
from milequest.services.websocket.apigateway import ApiGatewayWebSocketService, table_definition
from milequest.web.email_webhooks.resend import resend_events
from milequest.web.email_webhooks.sendgrid import sendgrid_event
from moto import mock_aws

from infra.config import ENVIRONMENTS
from infra.provider_metrics import ALARM_METRIC_LIMIT, CALL_DIMENSIONS, PROVIDER_DIMENSIONS
from tests.runtime.email.test_events import FIXTURES, _sns
from tests.runtime.websocket.endpoints import start_connections_endpoint

from .conftest import Synthesized, resources

ENVS = ("dev", "staging", "prod")
NAMESPACE = "MileQuest"
# What the runtime's factories can create, by the metrics' ``Service`` dimension.
PROVIDERS = {
    "email": {"ses", "smtp", "resend", "sendgrid", "mock"},
    "websocket": {"apigateway", "pusher", "mock"},
}

Metric = tuple[str, frozenset[tuple[str, str]]]


def _dashboard(template: dict[str, Any]) -> dict[str, Any]:
    (dashboard,) = resources(template, "AWS::CloudWatch::Dashboard").values()
    parts = dashboard["Properties"]["DashboardBody"]["Fn::Join"][1]
    body: dict[str, Any] = json.loads("".join(p if isinstance(p, str) else "ref" for p in parts))
    return body


def _provider_widgets(template: dict[str, Any]) -> dict[str, list[list[Any]]]:
    """Title -> metric rows of the widgets of the providers section."""
    widgets = _dashboard(template)["widgets"]
    (start,) = [
        i
        for i, w in enumerate(widgets)
        if w["type"] == "text" and "Providers side by side" in w["properties"]["markdown"]
    ]
    return {
        w["properties"]["title"]: w["properties"]["metrics"]
        for w in widgets[start + 1 : start + 9]
        if w["type"] == "metric"
    }


def _lines(rows: list[list[Any]]) -> list[dict[str, Any]]:
    """The options of the rows a graph draws (the others only feed its expressions)."""
    options = [row[-1] if isinstance(row[-1], dict) else {} for row in rows]
    return [o for o in options if o.get("visible", True)]


def _dashboard_metrics(template: dict[str, Any]) -> list[tuple[str, dict[str, str]]]:
    """(name, dimensions) of every MileQuest metric on the dashboard."""
    found = []
    for widget in _dashboard(template)["widgets"]:
        for row in widget["properties"].get("metrics", []):
            if row[0] == NAMESPACE:
                values = [v for v in row[2:] if not isinstance(v, dict)]
                found.append((row[1], dict(zip(values[::2], values[1::2], strict=True))))
    return found


def _alarm_metrics(alarm: dict[str, Any]) -> list[tuple[str, dict[str, str]]]:
    return [
        (
            query["MetricStat"]["Metric"]["MetricName"],
            {d["Name"]: d["Value"] for d in query["MetricStat"]["Metric"]["Dimensions"]},
        )
        for query in alarm["Metrics"]
        if "MetricStat" in query and query["MetricStat"]["Metric"]["Namespace"] == NAMESPACE
    ]


def _migration_alarms(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        lid: alarm["Properties"]
        for lid, alarm in resources(template, "AWS::CloudWatch::Alarm").items()
        if "SecondaryErrorRate" in lid
    }


def _normalized(name: str, dimensions: dict[str, str]) -> Metric:
    """The metric with its provider left out (checked on its own)."""
    return name, frozenset((k, "*" if k == "Provider" else v) for k, v in dimensions.items())


# The runtime, run as each of the stage's processes ------------------------------------------


def _emf(output: str) -> list[tuple[str, dict[str, str]]]:
    """(name, dimensions) of every EMF metric in ``output``."""
    found = []
    for line in output.splitlines():
        if not line.startswith('{"_aws"'):
            continue
        document = json.loads(line)
        for directive in document["_aws"]["CloudWatchMetrics"]:
            assert directive["Namespace"] == NAMESPACE
            for dimension_set in directive["Dimensions"]:
                for metric in directive["Metrics"]:
                    found.append((metric["Name"], {d: document[d] for d in dimension_set}))
    return found


@pytest.fixture(scope="module")
def websocket() -> Iterator[Callable[[MetricsSink], ApiGatewayWebSocketService]]:
    """API Gateway providers on a moto table and a local @connections endpoint."""
    server, state = start_connections_endpoint()
    services: list[ApiGatewayWebSocketService] = []
    with mock_aws():
        boto3.client("dynamodb").create_table(TableName="connections", **table_definition())

        def make(sink: MetricsSink) -> ApiGatewayWebSocketService:
            service = ApiGatewayWebSocketService(
                table_name="connections",
                management_endpoint=f"http://127.0.0.1:{server.port}/live",
                app_key="key",
                app_secret="secret",
                metrics=sink,
            )
            services.append(service)
            return service

        state.gone.add("goneConnId00=")
        yield make
    for service in services:
        service.close()
    server.stop()


@pytest.fixture(scope="module")
def process_names(synthesized: Synthesized) -> dict[str, str]:
    """Handler -> POWERTOOLS_SERVICE_NAME, as the synthesized functions run them."""
    names = {}
    for stack in synthesized.stack_names("dev"):
        for fn in resources(
            synthesized.template_json("dev", stack), "AWS::Lambda::Function"
        ).values():
            props = fn["Properties"]
            if props.get("Handler", "").startswith("milequest."):
                names[props["Handler"]] = props["Environment"]["Variables"][
                    "POWERTOOLS_SERVICE_NAME"
                ]
    return names


@pytest.fixture(scope="module")
def emitted(
    process_names: dict[str, str],
    websocket: Callable[[MetricsSink], ApiGatewayWebSocketService],
) -> set[Metric]:
    """Every metric the runtime emits (EMF) when each process of a stage does its work
    (once for the module: it runs real providers)."""
    found: list[tuple[str, dict[str, str]]] = []

    def run_as(process: str, work: Callable[[MetricsSink], None]) -> None:
        output = io.StringIO()
        with pytest.MonkeyPatch.context() as env, contextlib.redirect_stdout(output):
            env.setenv("POWERTOOLS_SERVICE_NAME", process)
            work(EmfSink())
        found.extend(_emf(output.getvalue()))

    def send_mail(sink: MetricsSink) -> None:
        mail = create_email_service("mock", metrics=sink, default_from_email="app@example.com")
        message = {"to": "user@example.com", "subject": "Hi", "text": "Hello"}
        mail.send_email(message)
        mail.send_templated_email("welcome", "user@example.com", {"name": "Ada"})
        mail.send_bulk_emails([message, message | {"to": "other@example.com"}])

    def trigger(sink: MetricsSink) -> None:
        service = websocket(sink)
        for connection in ("liveConnId001=", "goneConnId00="):
            service.connect(connection, "user-1")
            service.subscribe(connection, "team-1")
        service.trigger("team-1", "update", {"n": 1})
        service.trigger_batch([{"channel": "team-1", "name": "update", "data": {"n": 2}}])
        service.send_to_user("user-1", "badge", {"miles": 100})

    def connect(sink: MetricsSink) -> None:
        websocket(sink).connect("handlerConn01=", None)

    def deliver_shard(sink: MetricsSink) -> None:
        frame = json.dumps({"event": "update", "channel": "team-1", "data": "{}"})
        shard = {"channel": "team-1", "messages": [frame], "connections": ["liveConnId001="]}
        websocket(sink).deliver_shard(shard)

    def ses_events(sink: MetricsSink) -> None:
        messages = [
            json.loads((FIXTURES / name).read_text())
            for name in ("event-bounce.json", "event-complaint.json")
        ]
        process_sns_event(_sns(*messages), create_email_service("mock", metrics=sink))

    def webhooks(sink: MetricsSink) -> None:
        events = []
        for name in ("resend-email-bounced.json", "resend-email-complained.json"):
            events += resend_events(json.loads((FIXTURES / name).read_text()))
        for item in json.loads((FIXTURES / "sendgrid-events.json").read_text()):
            events += sendgrid_event(item)
        record_events(events, create_email_service("mock", metrics=sink))

    config = ENVIRONMENTS["dev"]
    web = process_names["milequest.handlers.http.handler"]
    run_as(config.application_service_name, send_mail)
    run_as(config.application_service_name, trigger)
    run_as(web, trigger)
    run_as(process_names["milequest.handlers.websocket.on_connect"], connect)
    run_as(process_names["milequest.handlers.fanout.handler"], deliver_shard)
    run_as(process_names["milequest.handlers.ses_events.handler"], ses_events)
    run_as(web, webhooks)
    assert found
    return {_normalized(name, dims) for name, dims in found}


def test_the_runtime_emits_the_documented_dimension_sets(emitted: set[Metric]) -> None:
    by_name: dict[str, set[frozenset[str]]] = {}
    for name, dims in emitted:
        by_name.setdefault(name, set()).add(frozenset(k for k, _ in dims))
    assert by_name["Calls"] == {frozenset(CALL_DIMENSIONS)}
    assert by_name["Deliveries"] == {frozenset(PROVIDER_DIMENSIONS)}
    assert by_name["GoneConnections"] == {frozenset(PROVIDER_DIMENSIONS)}
    # Powertools adds the lowercase ``service`` to every one of them.
    assert all("service" in keys for keys_sets in by_name.values() for keys in keys_sets)


@pytest.mark.parametrize("where", ["shipped", "migration"])
def test_every_metric_on_the_dashboard_and_alarms_is_emitted(
    synthesized: Synthesized, certified: Synthesized, emitted: set[Metric], where: str
) -> None:
    """A dimension set or value the runtime never emits would draw an empty line forever."""
    stages = (
        [synthesized.template_json(env, "Observability") for env in ENVS]
        if where == "shipped"
        else [certified.template_json("staging", "Observability")]
    )
    checked = 0
    for template in stages:
        metrics = _dashboard_metrics(template)
        for alarm in _migration_alarms(template).values():
            metrics += _alarm_metrics(alarm)
        assert metrics
        for name, dims in metrics:
            assert dims["Provider"] in PROVIDERS[dims["Service"]], (name, dims)
            assert _normalized(name, dims) in emitted, (name, dims)
            checked += 1
    # Sends, errors, latency and events of each email provider; triggers, deliveries, 410s
    # and connections of each WebSocket provider.
    assert checked >= (80 if where == "shipped" else 100)


# The figures ---------------------------------------------------------------------------------


@pytest.mark.parametrize("env", ENVS)
def test_providers_side_by_side(synthesized: Synthesized, env: str) -> None:
    config = ENVIRONMENTS[env]
    widgets = _provider_widgets(synthesized.template_json(env, "Observability"))
    assert set(widgets) == {
        "Email: accepted sends",
        "Email: send error rate (%)",
        "Email: send latency (p99, ms)",
        "Email: hard bounce and complaint rates (%)",
        "WebSocket: events triggered",
        "WebSocket: trigger error rate (%)",
        "WebSocket: deliveries and 410s (API Gateway counts them)",
        "WebSocket: connections opened",
    }
    (expression,) = _lines(widgets["Email: send error rate (%)"])
    assert expression["label"] == config.email_provider
    assert expression["expression"].startswith("100 * ")
    apps = {
        dims["service"]
        for name, dims in _dashboard_metrics(synthesized.template_json(env, "Observability"))
        if name == "Calls" and dims["Service"] == "email"
    }
    assert apps == {config.application_service_name}


def test_a_migration_shows_both_providers_and_alarms(certified: Synthesized) -> None:
    config = certified.stages["staging"].config
    migration = config.migration
    assert migration.email_secondary_provider is not None
    assert migration.websocket_secondary_provider is not None
    template = certified.template_json("staging", "Observability")
    widgets = _provider_widgets(template)
    for title, providers in (
        ("Email: send error rate (%)", [config.email_provider, migration.email_secondary_provider]),
        (
            "WebSocket: trigger error rate (%)",
            [config.websocket_provider, migration.websocket_secondary_provider],
        ),
    ):
        assert [line["label"] for line in _lines(widgets[title])] == providers, title
    bounces = _lines(widgets["Email: hard bounce and complaint rates (%)"])
    assert [line["label"] for line in bounces] == [
        f"{config.email_provider} bounces",
        f"{config.email_provider} complaints",
        f"{migration.email_secondary_provider} bounces",
        f"{migration.email_secondary_provider} complaints",
    ]

    alarms = _migration_alarms(template)
    assert sorted(lid.rstrip("0123456789ABCDEF") for lid in alarms) == [
        "EmailSecondaryErrorRate",
        "WebSocketSecondaryErrorRate",
    ]
    (topic_id,) = resources(template, "AWS::SNS::Topic")
    for lid, alarm in alarms.items():
        assert alarm["Threshold"] == migration.error_rate_margin
        assert alarm["ComparisonOperator"] == "GreaterThanThreshold"
        assert alarm["AlarmActions"] == [{"Ref": topic_id}]
        assert alarm["TreatMissingData"] == "notBreaching"
        metrics = _alarm_metrics(alarm)
        assert 0 < len(metrics) <= ALARM_METRIC_LIMIT
        service = "email" if lid.startswith("Email") else "websocket"
        primary, secondary = (
            (config.email_provider, migration.email_secondary_provider)
            if service == "email"
            else (config.websocket_provider, migration.websocket_secondary_provider)
        )
        assert {dims["Provider"] for _, dims in metrics} == {primary, secondary}
        assert {name for name, _ in metrics} == {"Calls", "Errors"}
        # Secondary minus primary, each side's error rate counted from 20 calls on.
        (result,) = [q for q in alarm["Metrics"] if q.get("ReturnData", True) and "Expression" in q]
        assert result["Expression"] == "IF(sc >= 20, se / sc, 0) - IF(pc >= 20, pe / pc, 0)"
        by_id = {q["Id"]: q for q in alarm["Metrics"]}
        for side, provider in (("s", secondary), ("p", primary)):
            for kind in ("c", "e"):
                inner = by_id[f"{side}{kind}"]["Expression"]
                ids = [part.strip()[5:].split(",")[0] for part in inner.split("+")]
                stats = [by_id[i]["MetricStat"]["Metric"] for i in ids]
                sides = {
                    d["Value"] for m in stats for d in m["Dimensions"] if d["Name"] == "Provider"
                }
                names = {m["MetricName"] for m in stats}
                assert names == {"Calls" if kind == "c" else "Errors"}
                assert sides == {provider}, (lid, side, kind)


def test_no_migration_no_alarm(synthesized: Synthesized) -> None:
    for env in ENVS:
        migration = ENVIRONMENTS[env].migration
        assert migration.email_secondary_provider is None
        assert migration.websocket_secondary_provider is None
        assert _migration_alarms(synthesized.template_json(env, "Observability")) == {}
