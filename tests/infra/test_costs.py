"""Cost widgets: metric math on a bare Stack, priced from the runtime's data file."""

from __future__ import annotations

import ast
import json
from typing import Any

import pytest
from aws_cdk import App, Stack
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_lambda as lambda_
from aws_cdk.assertions import Template
from milequest.costs import PriceBook, load_prices

from infra.costs import TableSource, cost_widgets

# What a day of metrics would read, by (metric name, the dimension value that tells it apart).
DAY = {
    ("MessageCount", "abc123"): 2_000_000,
    ("ConnectCount", "abc123"): 10_000,
    ("Invocations", "Small"): 100_000,
    ("Duration", "Small"): 3_000_000,  # ms
    ("Invocations", "Large"): 1_000,
    ("Duration", "Large"): 500_000,
    ("ConsumedWriteCapacityUnits", "connections"): 1_000_000,
    ("ConsumedReadCapacityUnits", "connections"): 2_000_000,
    ("ConsumedWriteCapacityUnits", "by_connection"): 500_000,
    ("ConsumedReadCapacityUnits", "by_connection"): 0,
    ("NumberOfMessagesSent", "fanout"): 1_000,
    ("NumberOfMessagesReceived", "fanout"): 1_000,
    ("NumberOfMessagesDeleted", "fanout"): 1_000,
    ("NumberOfEmptyReceives", "fanout"): 10_000,
    ("Send", ""): 30_000,
}


def _function(stack: Stack, name: str, memory: int, arch: lambda_.Architecture) -> lambda_.Function:
    return lambda_.Function(
        stack,
        name,
        function_name=name,
        runtime=lambda_.Runtime.PYTHON_3_12,
        handler="index.handler",
        code=lambda_.Code.from_inline("def handler(event, context):\n    return None\n"),
        memory_size=memory,
        architecture=arch,
    )


def _synth(
    prices: PriceBook | None = None, region: str | None = "us-east-1"
) -> list[dict[str, Any]]:
    """The dashboard's widgets as CloudWatch receives them (tokens replaced by their names)."""
    stack = Stack(App(), "Bare")
    small = _function(stack, "Small", 512, lambda_.Architecture.ARM_64)
    large = _function(stack, "Large", 1024, lambda_.Architecture.X86_64)
    widgets = cost_widgets(
        api_id="abc123",
        stage_name="live",
        realtime_functions=[small],
        realtime_tables=[TableSource("connections", ("by_connection",))],
        fanout_queues=["fanout"],
        email_functions=[large],
        ses_dedicated_ips=2,
        region=region,
        prices=prices,
    )
    cloudwatch.Dashboard(stack, "Costs", widgets=[widgets])
    (dashboard,) = Template.from_stack(stack).find_resources("AWS::CloudWatch::Dashboard").values()
    parts = dashboard["Properties"]["DashboardBody"]["Fn::Join"][1]
    body = "".join(part if isinstance(part, str) else _name(part) for part in parts)
    return [w["properties"] for w in json.loads(body)["widgets"]]


def _name(token: dict[str, Any]) -> str:
    """A Ref to a function (by logical id) as its name; the region Ref as REGION."""
    ref = str(token.get("Ref", ""))
    return next((name for name in ("Small", "Large") if ref.startswith(name)), "REGION")


def _evaluate(expression: str, values: dict[str, float]) -> float:
    """Metric math of the kind the widgets use: numbers, ids, +, * and FILL(id, 0)."""

    def walk(node: ast.AST) -> float:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Mult):
            left, right = walk(node.left), walk(node.right)
            return left + right if isinstance(node.op, ast.Add) else left * right
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            return float(node.value)
        if isinstance(node, ast.Name):
            return values[node.id]
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "FILL":
            return walk(node.args[0])
        raise AssertionError(f"unexpected metric math: {ast.dump(node)}")

    return walk(ast.parse(expression, mode="eval"))


def _daily(widget: dict[str, Any]) -> dict[str, float]:
    """Each stacked component's USD for the day in DAY."""
    values: dict[str, float] = {}
    expressions: dict[str, str] = {}
    for entry in widget["metrics"]:
        if isinstance(entry[0], dict):
            expressions[entry[0]["label"]] = entry[0]["expression"]
            continue
        *fields, options = entry
        name, dims = fields[1], fields[2:]
        # The first dimension's value tells the metrics apart (a GSI's name sorts first).
        values[options["id"]] = DAY[(name, dims[1] if dims else "")]
        assert options["stat"] == "Sum"
        assert options["visible"] is False
    return {label: _evaluate(expr, values) for label, expr in expressions.items()}


def test_two_stacked_daily_cost_widgets() -> None:
    realtime, email = _synth()
    assert realtime["title"] == "Realtime: estimated cost (USD a day, us-east-1 prices)"
    assert email["title"] == "Email: estimated cost (USD a day, us-east-1 prices)"
    for widget in (realtime, email):
        assert widget["stacked"] is True
        assert widget["period"] == 86_400
        assert widget["yAxis"]["left"]["label"] == "USD a day"


def test_the_metric_math_prices_a_day_as_computed_by_hand() -> None:
    realtime, email = _synth()
    costs = _daily(realtime)
    # 2M messages at $1.00 a million; 10,000 connects x 120 min at $0.25 a million minutes.
    assert costs["API Gateway"] == pytest.approx(2.00 + 1_200_000 * 0.25 / 1e6)
    # 100,000 requests at $0.20 a million; 3,000 s at 0.5 GB on arm64.
    assert costs["Lambda"] == pytest.approx(0.02 + 1_500 * 0.0000133334)
    # Table and index writes at $0.625, reads at $0.125 a million.
    assert costs["DynamoDB"] == pytest.approx(1.5 * 0.625 + 2 * 0.125)
    assert costs["SQS"] == pytest.approx(13_000 * 0.40 / 1e6)
    costs = _daily(email)
    # 30,000 sends at $0.10 a thousand, two dedicated IPs at $24.95 a month of 30 days.
    assert costs["SES"] == pytest.approx(3.00 + 2 * 24.95 / 30)
    # 1,000 requests, 500 s at 1 GB on x86_64.
    assert costs["Lambda"] == pytest.approx(1_000 * 0.20 / 1e6 + 500 * 0.0000166667)
    assert set(costs) == {"SES", "Lambda"}  # no email tables or queues were given


def test_the_prices_come_from_the_data_file() -> None:
    book = load_prices()
    doubled = book.model_copy(
        update={
            "unit_prices": tuple(
                p.model_copy(update={"usd": p.usd * 2})
                if p.key == "apigateway.websocket.messages"
                else p
                for p in book.unit_prices
            )
        }
    )
    base, changed = _daily(_synth()[0]), _daily(_synth(prices=doubled)[0])
    assert changed["API Gateway"] - base["API Gateway"] == pytest.approx(2.00)
    assert changed["Lambda"] == base["Lambda"]


@pytest.mark.parametrize("region", [None, "eu-west-1"])
def test_an_unpriced_region_falls_back_to_the_default(region: str | None) -> None:
    realtime, _ = _synth(region=region)
    assert "us-east-1 prices" in realtime["title"]
