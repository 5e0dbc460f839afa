"""Dashboard widgets: each stage's estimated daily cost, built with CloudWatch metric math.

The prices come from the runtime's price data file (``milequest.costs``) when the app is
synthesized, so the widgets and ``python -m milequest.costs`` always agree. A day is priced
at each figure's first-tier rate; volume discounts and data transfer are left out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from aws_cdk import Duration, Token
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_lambda as lambda_
from milequest.costs import PriceBook, load_prices
from milequest.costs.profile import DAYS_PER_MONTH, MAX_SESSION_MINUTES

__all__ = ["TableSource", "cost_widgets"]

DAY = Duration.days(1)
LAMBDA_DEFAULT_MEMORY_MB = 128
# SQS bills every request; these four cover a queue's sends, receives (empty ones too)
# and deletes.
SQS_REQUEST_METRICS = (
    "NumberOfMessagesSent",
    "NumberOfMessagesReceived",
    "NumberOfMessagesDeleted",
    "NumberOfEmptyReceives",
)


@dataclass(frozen=True)
class TableSource:
    """A DynamoDB table and the global secondary indexes whose capacity it also bills."""

    name: str
    indexes: Sequence[str] = ()


def _number(value: float) -> str:
    """``value`` to 12 significant digits as a plain decimal (no exponent such as 1e-06)."""
    return format(Decimal(f"{value:.12g}"), "f")


class _Expression:
    """Builds ``FILL(m0, 0) * price + ...`` with unique metric ids."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.terms: list[str] = []
        self.metrics: dict[str, cloudwatch.IMetric] = {}

    def add(self, metric: cloudwatch.IMetric, usd_per_unit: float) -> None:
        metric_id = f"{self.prefix}{len(self.metrics)}"
        self.metrics[metric_id] = metric
        self.terms.append(f"FILL({metric_id}, 0) * {_number(usd_per_unit)}")

    def constant(self, usd: float) -> None:
        self.terms.append(_number(usd))

    def build(self, label: str) -> cloudwatch.MathExpression | None:
        if not self.metrics:
            return None
        return cloudwatch.MathExpression(
            expression=" + ".join(self.terms), using_metrics=self.metrics, label=label, period=DAY
        )


def _metric(namespace: str, name: str, dimensions: dict[str, str]) -> cloudwatch.Metric:
    return cloudwatch.Metric(
        namespace=namespace,
        metric_name=name,
        dimensions_map=dimensions,
        statistic="Sum",
        period=DAY,
    )


def _memory_mb(function: lambda_.Function) -> int:
    cfn = function.node.default_child
    memory = getattr(cfn, "memory_size", None)
    return memory if isinstance(memory, int) else LAMBDA_DEFAULT_MEMORY_MB


class _Pricing:
    def __init__(self, book: PriceBook, region: str) -> None:
        self.book, self.region = book, region

    def rate(self, key: str) -> float:
        return self.book.rate(key, self.region)

    def lambdas(self, prefix: str, functions: Sequence[lambda_.Function]) -> _Expression:
        expression = _Expression(prefix)
        request = self.rate("lambda.requests")
        for function in functions:
            architecture = function.architecture.name.replace("-", "_")
            # Duration's Sum is in milliseconds: price per millisecond of this memory size.
            per_ms = _memory_mb(function) / 1024 / 1000
            per_ms *= self.rate(f"lambda.{architecture}.gb_seconds")
            expression.add(function.metric_invocations(statistic="Sum", period=DAY), request)
            expression.add(function.metric_duration(statistic="Sum", period=DAY), per_ms)
        return expression

    def tables(self, prefix: str, tables: Sequence[TableSource]) -> _Expression:
        expression = _Expression(prefix)
        write = self.rate("dynamodb.on_demand.write_units")
        read = self.rate("dynamodb.on_demand.read_units")
        for table in tables:
            for index in (None, *table.indexes):
                dims = {"TableName": table.name}
                if index is not None:
                    dims["GlobalSecondaryIndexName"] = index
                expression.add(_metric("AWS/DynamoDB", "ConsumedWriteCapacityUnits", dims), write)
                expression.add(_metric("AWS/DynamoDB", "ConsumedReadCapacityUnits", dims), read)
        return expression

    def queues(self, prefix: str, queues: Sequence[str]) -> _Expression:
        expression = _Expression(prefix)
        request = self.rate("sqs.standard.requests")
        for queue in queues:
            for name in SQS_REQUEST_METRICS:
                expression.add(_metric("AWS/SQS", name, {"QueueName": queue}), request)
        return expression


def _widget(title: str, parts: list[cloudwatch.MathExpression | None]) -> cloudwatch.GraphWidget:
    return cloudwatch.GraphWidget(
        title=title,
        left=[part for part in parts if part is not None],
        stacked=True,
        period=DAY,
        left_y_axis=cloudwatch.YAxisProps(label="USD a day", min=0, show_units=False),
        width=12,
        height=6,
    )


def cost_widgets(
    *,
    api_id: str,
    stage_name: str,
    realtime_functions: Sequence[lambda_.Function],
    realtime_tables: Sequence[TableSource] = (),
    fanout_queues: Sequence[str] = (),
    email_functions: Sequence[lambda_.Function] = (),
    email_tables: Sequence[TableSource] = (),
    email_queues: Sequence[str] = (),
    ses_dedicated_ips: int = 0,
    session_minutes: float = MAX_SESSION_MINUTES,
    region: str | None = None,
    prices: PriceBook | None = None,
) -> list[cloudwatch.IWidget]:
    """Two stacked graphs of estimated USD a day: the realtime stack and email.

    Realtime: API Gateway ``MessageCount`` and connection-minutes (``ConnectCount`` times
    ``session_minutes``), Lambda invocations and duration per function, DynamoDB consumed
    capacity (tables and their indexes) and SQS requests. Email: SES ``Send`` plus dedicated
    IPs, and the email functions, tables and queues. ``region`` picks the prices (default,
    or when the stage's region is unresolved or not in the data file: the file's default).
    """
    book = prices or load_prices()
    chosen = region if region and not Token.is_unresolved(region) else None
    if chosen not in book.regions():
        chosen = book.default_region
    pricing = _Pricing(book, chosen)
    api_dims = {"ApiId": api_id, "Stage": stage_name}

    gateway = _Expression("api")
    gateway.add(
        _metric("AWS/ApiGateway", "MessageCount", api_dims),
        pricing.rate("apigateway.websocket.messages"),
    )
    gateway.add(
        _metric("AWS/ApiGateway", "ConnectCount", api_dims),
        session_minutes * pricing.rate("apigateway.websocket.connection_minutes"),
    )
    realtime = _widget(
        f"Realtime: estimated cost (USD a day, {chosen} prices)",
        [
            gateway.build("API Gateway"),
            pricing.lambdas("rtl", realtime_functions).build("Lambda"),
            pricing.tables("rtd", realtime_tables).build("DynamoDB"),
            pricing.queues("rtq", fanout_queues).build("SQS"),
        ],
    )

    ses = _Expression("ses")
    ses.add(_metric("AWS/SES", "Send", {}), pricing.rate("ses.outbound_messages"))
    if ses_dedicated_ips:
        per_day = pricing.rate("ses.dedicated_ip.month") * ses_dedicated_ips / DAYS_PER_MONTH
        ses.constant(per_day)
    email = _widget(
        f"Email: estimated cost (USD a day, {chosen} prices)",
        [
            ses.build("SES"),
            pricing.lambdas("eml", email_functions).build("Lambda"),
            pricing.tables("emd", email_tables).build("DynamoDB"),
            pricing.queues("emq", email_queues).build("SQS"),
        ],
    )
    return [realtime, email]
