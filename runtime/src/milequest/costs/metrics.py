"""A usage profile from a stage's CloudWatch metrics, read with the operator's credentials.

API Gateway's ``ConnectCount`` and ``MessageCount`` (dimensions ``ApiId``, ``Stage``) give
connections; our own metrics (namespace ``MileQuest``: ``Calls`` by ``Operation``,
``Deliveries``, ``BulkMessages``) give triggers, client events, subscriptions, fan-out and
email sends. Our metrics carry no stage dimension: stages that share an account and region
are counted together.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from milequest.services.metrics import DEFAULT_NAMESPACE

from .errors import CostError, cost_error
from .profile import (
    DAYS_PER_MONTH,
    MAX_SESSION_MINUTES,
    MINUTES_PER_MONTH,
    UsageProfile,
    usage_profile,
)

Environment = Literal["dev", "staging", "prod"]
ENVIRONMENTS: tuple[Environment, ...] = ("dev", "staging", "prod")
# CloudWatch keeps hourly data points for 455 days.
MAX_DAYS = 455
_DAY, _HOUR = 86_400, 3_600
_QUERIES_PER_CALL = 500


class ObservedUsage(BaseModel):
    """Totals over the window, as CloudWatch reports them."""

    model_config = ConfigDict(frozen=True)

    env: str
    api_id: str
    stage: str
    start: datetime
    end: datetime
    connects: float
    peak_hour_connects: float
    messages: float
    triggers: float
    client_events: float
    subscribes: float
    deliveries: float
    emails: float

    @property
    def days(self) -> float:
        return (self.end - self.start).total_seconds() / _DAY


def api_name(env: str) -> str:
    """The WebSocket API's name in a stage (as the CDK app names it)."""
    return f"milequest-{env}-realtime"


@contextlib.contextmanager
def _aws_errors(what: str) -> Iterator[None]:
    """Turn botocore's exceptions into ``CostError`` with a specific code."""
    from botocore import exceptions as bexc

    try:
        yield
    except CostError:
        raise
    except (bexc.NoCredentialsError, bexc.NoRegionError, bexc.PartialCredentialsError) as exc:
        raise cost_error("CONFIGURATION", f"{what}: {exc}", cause=exc) from exc
    except bexc.ClientError as exc:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        text = f"{what}: {code}: {error.get('Message', '')}"
        if "Throttl" in code or code == "TooManyRequestsException":
            raise cost_error("RATE_LIMITED", text, cause=exc) from exc
        if "AccessDenied" in code or code in ("UnrecognizedClientException", "ExpiredToken"):
            raise cost_error("CONFIGURATION", text, cause=exc) from exc
        raise cost_error("PROVIDER_ERROR", text, cause=exc) from exc
    except (bexc.BotoCoreError, OSError) as exc:
        raise cost_error("PROVIDER_UNAVAILABLE", f"{what}: {exc}", cause=exc) from exc


def observe(
    env: str,
    days: float,
    *,
    region: str | None = None,
    api_id: str | None = None,
    stage: str = "live",
    namespace: str = DEFAULT_NAMESPACE,
    end: datetime | None = None,
) -> ObservedUsage:
    """Read ``days`` of the stage's metrics, ending at the last full hour (or ``end``)."""
    if env not in ENVIRONMENTS:
        raise cost_error("INVALID_PROFILE", f"env must be one of {', '.join(ENVIRONMENTS)}")
    if not 1 / 24 <= days <= MAX_DAYS:
        raise cost_error("INVALID_PROFILE", f"days must be between 1/24 and {MAX_DAYS}")
    import boto3

    stop = (end or datetime.now(UTC)).replace(minute=0, second=0, microsecond=0)
    start = stop - timedelta(days=days)
    with _aws_errors("CloudWatch"):
        session = boto3.session.Session(region_name=region)
        cloudwatch = session.client("cloudwatch")
        api = api_id or _find_api(session.client("apigatewayv2"), env)
        dims = [{"Name": "ApiId", "Value": api}, {"Name": "Stage", "Value": stage}]
        ours = functools.partial(_ours, cloudwatch, namespace)
        queries: dict[str, list[dict[str, Any]]] = {
            "connects": [_metric("AWS/ApiGateway", "ConnectCount", dims)],
            "messages": [_metric("AWS/ApiGateway", "MessageCount", dims)],
            "triggers": ours("Calls", "websocket", "trigger", "trigger_batch"),
            "client_events": ours("Calls", "websocket", "client_event"),
            "subscribes": ours("Calls", "websocket", "subscribe"),
            "deliveries": ours("Deliveries", "websocket"),
            "emails": [
                *ours("Calls", "email", "send_email", "send_templated_email"),
                *ours("BulkMessages", "email"),
            ],
        }
        totals = _sums(cloudwatch, queries, start, stop, _DAY)
        hourly = _values(cloudwatch, queries["connects"][0], start, stop, _HOUR)
    return ObservedUsage(
        env=env,
        api_id=api,
        stage=stage,
        start=start,
        end=stop,
        peak_hour_connects=max(hourly, default=0.0),
        **totals,
    )


def profile_from_observed(
    observed: ObservedUsage,
    *,
    session_minutes: float = MAX_SESSION_MINUTES,
    presence_joins_per_month: float = 0,
    payload_bytes: int = 1024,
    ses_dedicated_ips: int = 0,
) -> UsageProfile:
    """A month of the observed usage.

    Peak connections follow Little's law from the busiest hour's connects and the session
    length; fan-out is deliveries over triggers (a client event reaches the others only).
    """
    o = observed
    month = DAYS_PER_MONTH / o.days if o.days else 0.0
    minutes = o.connects * session_minutes * month
    peak = max(o.peak_hour_connects * session_minutes / 60, minutes / MINUTES_PER_MONTH)
    sends = o.triggers + o.client_events
    return usage_profile(
        {
            "peak_connections": peak,
            "connection_minutes": minutes,
            "session_minutes": session_minutes,
            "subscriptions_per_connection": o.subscribes / o.connects if o.connects else 0.0,
            "events_per_month": o.triggers * month,
            "subscribers_per_event": (o.deliveries + o.client_events) / sends if sends else 0.0,
            "client_events_per_month": o.client_events * month,
            "presence_joins_per_month": presence_joins_per_month,
            "payload_bytes": payload_bytes,
            "emails_per_month": o.emails * month,
            "ses_dedicated_ips": ses_dedicated_ips,
        }
    )


def _find_api(client: Any, env: str) -> str:
    name = api_name(env)
    for page in client.get_paginator("get_apis").paginate():
        for item in page.get("Items", []):
            if item.get("Name") == name and item.get("ProtocolType") == "WEBSOCKET":
                return str(item["ApiId"])
    raise cost_error("METRICS_UNAVAILABLE", f"no WebSocket API named {name}; pass its id")


def _metric(namespace: str, name: str, dimensions: Sequence[dict[str, str]]) -> dict[str, Any]:
    return {"Namespace": namespace, "MetricName": name, "Dimensions": list(dimensions)}


def _ours(
    cloudwatch: Any, namespace: str, name: str, service: str, *operations: str
) -> list[dict[str, Any]]:
    """Every dimension set of our metric ``name`` for ``service`` (and ``operations``)."""
    found: dict[tuple[tuple[str, str], ...], dict[str, Any]] = {}
    pages = cloudwatch.get_paginator("list_metrics").paginate(
        Namespace=namespace,
        MetricName=name,
        Dimensions=[{"Name": "Service", "Value": service}],
    )
    for page in pages:
        for metric in page.get("Metrics", []):
            dims = {d["Name"]: d["Value"] for d in metric.get("Dimensions", [])}
            if not operations or dims.get("Operation") in operations:
                # Listed once per metric; a repeat must not be counted twice.
                found[tuple(sorted(dims.items()))] = _metric(namespace, name, metric["Dimensions"])
    return list(found.values())


def _values(
    cloudwatch: Any, metric: dict[str, Any], start: datetime, end: datetime, period: int
) -> list[float]:
    return _fetch(cloudwatch, [("m0", metric)], start, end, period)["m0"]


def _sums(
    cloudwatch: Any,
    queries: dict[str, list[dict[str, Any]]],
    start: datetime,
    end: datetime,
    period: int,
) -> dict[str, float]:
    ids = [(f"m{i}", name, metric) for i, (name, metric) in enumerate(_flatten(queries))]
    values = _fetch(cloudwatch, [(qid, metric) for qid, _, metric in ids], start, end, period)
    totals = dict.fromkeys(queries, 0.0)
    for qid, name, _ in ids:
        totals[name] += sum(values[qid])
    return totals


def _flatten(queries: dict[str, list[dict[str, Any]]]) -> list[tuple[str, dict[str, Any]]]:
    return [(name, metric) for name, metrics in queries.items() for metric in metrics]


def _fetch(
    cloudwatch: Any,
    metrics: list[tuple[str, dict[str, Any]]],
    start: datetime,
    end: datetime,
    period: int,
) -> dict[str, list[float]]:
    values: dict[str, list[float]] = {qid: [] for qid, _ in metrics}
    for first in range(0, len(metrics), _QUERIES_PER_CALL):
        batch = [
            {"Id": qid, "MetricStat": {"Metric": metric, "Period": period, "Stat": "Sum"}}
            for qid, metric in metrics[first : first + _QUERIES_PER_CALL]
        ]
        pages = cloudwatch.get_paginator("get_metric_data").paginate(
            MetricDataQueries=batch, StartTime=start, EndTime=end
        )
        for page in pages:
            for result in page.get("MetricDataResults", []):
                values[result["Id"]].extend(float(v) for v in result.get("Values", []))
    return values
