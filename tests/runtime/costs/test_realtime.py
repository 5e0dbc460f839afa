"""Realtime options against figures computed by hand from the published prices.

Prices used (us-east-1, in the data file): API Gateway $1.00 per million messages (first
billion, then $0.80) and $0.25 per million connection-minutes; Lambda $0.20 per million
requests and $0.0000133334 per GB-s (arm64); DynamoDB $0.625 / $0.125 per million write /
read units; SQS $0.40 per million requests; data transfer out $0.09 per GB.
"""

from __future__ import annotations

import math

import pytest
from milequest.costs import OptionCost, PriceBook, StackOptions, UsageProfile
from milequest.costs.realtime import ping_rate, price_apigateway, price_pusher, realtime_volumes

from .conftest import REGION, quantity, usd

MONTH = 43_200  # minutes in a 30-day month
GIB = 2**30


def _apigw(book: PriceBook, stack: StackOptions | None = None, **profile: float) -> OptionCost:
    return price_apigateway(UsageProfile(**profile), stack or StackOptions(), book, REGION)


def test_idle_connections_cost_pings_and_reconnects(book: PriceBook) -> None:
    # 1,000 connections open all month, reconnecting every 2 h, 2 subscriptions each.
    option = price_apigateway(
        UsageProfile(peak_connections=1_000, connection_minutes=1_000 * MONTH),
        StackOptions(),
        book,
        REGION,
    )
    # sessions = 43.2M / 120 = 360,000; subscriptions = 720,000;
    # pings = 43.2M minutes / 2 = 21.6M, each ping + pong;
    # messages = 360,000 + 2 x 720,000 + 2 x 21.6M = 45,000,000.
    assert quantity(option, "API Gateway messages") == pytest.approx(45_000_000)
    assert usd(option, "API Gateway messages") == pytest.approx(45.00)
    assert usd(option, "API Gateway connection minutes") == pytest.approx(43.2 * 0.25)
    # Lambda: connect, announce, disconnect 360,000 each, message 720,000 = 1.8M requests;
    # ms = 360k x 25 + 360k x 20 + 360k x (40 + 2 x 10) + 720k x 30 = 59,400,000 ms,
    # at 0.5 GB = 29,700 GB-s.
    lambda_usd = sum(i.usd for i in option.items if i.name.startswith("Lambda "))
    assert lambda_usd == pytest.approx(1.8 * 0.20 + 29_700 * 0.0000133334)
    assert quantity(option, "Lambda announce") == 360_000
    # DynamoDB writes: (2 + 2) per session + (3 + 3) per subscription = 5,760,000.
    assert usd(option, "DynamoDB writes") == pytest.approx(5.76 * 0.625)
    # Reads: 1 per subscribe + a half-unit index Query per disconnect = 900,000.
    assert usd(option, "DynamoDB reads") == pytest.approx(0.9 * 0.125)
    # Out: (360k + 720k) control frames x 150 B + 21.6M pongs x 40 B.
    out_gb = (1_080_000 * 150 + 21_600_000 * 40) / GIB
    assert usd(option, "Data transfer out") == pytest.approx(out_gb * 0.09)
    expected = 45 + 10.8 + 0.36 + 0.39600198 + 3.6 + 0.1125 + out_gb * 0.09
    assert option.total_usd == pytest.approx(expected)


@pytest.mark.parametrize(
    ("events", "messages_usd"),
    [
        (200_000_000, 1_000.00),  # exactly a billion deliveries
        (199_900_000, 999.50),  # a million under: all at $1.00
        (200_200_000, 1_000.80),  # a million over: that million at $0.80
    ],
)
def test_message_tier_boundary(book: PriceBook, events: float, messages_usd: float) -> None:
    # No connections: only triggers, each delivered to 5 subscribers (1 KB, one 32 KB unit).
    option = _apigw(book, events_per_month=events, subscribers_per_event=5)
    assert usd(option, "API Gateway messages") == pytest.approx(messages_usd)
    # publish Lambda: one request per event, 30 ms + 5 deliveries x 1 ms, at 0.5 GB.
    gb_seconds = events * 35 / 1000 * 0.5
    assert usd(option, "Lambda publish") == pytest.approx(
        events * 0.20 / 1e6 + gb_seconds * 0.0000133334
    )
    # One eventually consistent Query of 5 x 160 B = one 4 KB unit, halved.
    assert usd(option, "DynamoDB reads") == pytest.approx(events * 0.5 * 0.125 / 1e6)
    assert usd(option, "DynamoDB writes") == 0
    out_gb = events * 5 * 1024 / GIB
    assert option.total_usd == pytest.approx(
        messages_usd
        + events * 0.20 / 1e6
        + gb_seconds * 0.0000133334
        + events * 0.5 * 0.125 / 1e6
        + out_gb * 0.09
    )


def test_everything_at_once(book: PriceBook) -> None:
    profile = UsageProfile(
        peak_connections=100,
        connection_minutes=100 * MONTH,
        session_minutes=60,
        subscriptions_per_connection=1,
        events_per_month=10_000,
        subscribers_per_event=2_000,
        client_events_per_month=1_000,
        presence_joins_per_month=500,
        presence_members=11,
        payload_bytes=40_000,
    )
    stack = StackOptions(authorizer=True, sharded_fanout=True)
    option = price_apigateway(profile, stack, book, REGION)
    # sessions 72,000 (4.32M / 60), subscriptions 72,000; 40 KB is two 32 KB units.
    # Each connection-minute receives 22,009,000 / 4.32M messages (20M deliveries, 1,999,000
    # relays, 10,000 presence notices), so a 2-minute silence, and a ping, is rare.
    received = 22_009_000 / 4_320_000
    pings = 4_320_000 * received / math.expm1(2 * received)
    assert 800 < pings < 850
    # messages: 72,000 announce + 144,000 subscribe + pings and pongs
    #   + 20M deliveries x 2 + 1,000 client events x 2 + 1,999,000 relays x 2
    #   + 500 joins x 2 notices x 10 others
    messages = 72_000 + 144_000 + 2 * pings + 40_000_000 + 2_000 + 3_998_000 + 10_000
    assert quantity(option, "API Gateway messages") == pytest.approx(messages)
    # Lambda requests: 72,000 x 4 (authorize, connect, announce, disconnect) + 73,000
    # message + 10,000 publish + 40,000 shards (2,000 / 500 per event) = 411,000.
    # ms: 1.8M connect + 1.44M announce + 1.44M authorize
    #   + (72,000 x 50 + 5,000 leave notices) disconnect
    #   + (72,000 x 30 + 1,000 x 30 + 2,004,000 relays and join notices) message
    #   + 300,000 publish + (40,000 x 30 + 20M deliveries) fan-out = 33,979,000
    lambda_usd = sum(i.usd for i in option.items if i.name.startswith("Lambda "))
    assert lambda_usd == pytest.approx(0.411 * 0.20 + 33_979 * 0.5 * 0.0000133334)
    # writes: 72,000 x 4 + 72,000 x 6 + 500 x 2 = 721,000
    assert usd(option, "DynamoDB writes") == pytest.approx(0.721 * 0.625)
    # reads: 72,000 subscribe gets + 72,000 x 0.5 index Queries
    #   + 10,000 x 39.5 (2,000 x 160 B = 79 units, halved)
    #   + 1,000 x (1 + 39.5) + 500 x 1 (members, consistent) + 500 x 2 x 0.5 = 544,500
    assert usd(option, "DynamoDB reads") == pytest.approx(0.5445 * 0.125)
    # SQS: idle polling 5 x 3 x 43,200 = 648,000 + 40,000 shards x 3 requests = 768,000
    assert usd(option, "SQS fan-out shards") == pytest.approx(0.768 * 0.40)
    out_bytes = (72_000 + 72_000 + 10_000) * 150 + pings * 40 + 21_999_000 * 40_000
    assert usd(option, "Data transfer out") == pytest.approx(out_bytes / GIB * 0.09)
    expected = (
        messages / 1e6
        + 4.32 * 0.25
        + 0.411 * 0.20
        + 33_979 * 0.5 * 0.0000133334
        + 0.721 * 0.625
        + 0.5445 * 0.125
        + 0.768 * 0.40
        + out_bytes / GIB * 0.09
    )
    assert option.total_usd == pytest.approx(expected)
    # Pusher's shared clusters refuse a 40 KB event.
    pusher = price_pusher(profile, stack, book)
    assert pusher.total_usd is None
    assert "dedicated cluster" in pusher.notes[0]


@pytest.mark.parametrize(
    ("received", "timeout", "per_minute"),
    [
        (0.0, 120, 0.5),  # idle: one ping every 2 minutes
        (0.5, 120, 0.5 / (math.e - 1)),  # l / (exp(lT) - 1) with lT = 1
        (1.0, 60, 1 / (math.e - 1)),
        (1e6, 120, 0.0),  # never silent for 2 minutes
    ],
)
def test_pings_come_only_after_a_silence(received: float, timeout: int, per_minute: float) -> None:
    stack = StackOptions(activity_timeout_seconds=timeout)
    assert ping_rate(received, stack) == pytest.approx(per_minute)


def test_below_the_shard_threshold_fan_out_stays_inline(book: PriceBook) -> None:
    stack = StackOptions(sharded_fanout=True, shard_threshold=1_000)
    volumes = realtime_volumes(
        UsageProfile(events_per_month=100, subscribers_per_event=1_000), stack
    )
    assert "fanout" not in volumes.handlers
    assert volumes.handlers["publish"].milliseconds == 100 * (30 + 1_000)
    # The queue's idle long polling is billed all the same.
    assert volumes.sqs_requests == 5 * 3 * MONTH


def _pusher(book: PriceBook, connections: float, per_day: float) -> tuple[str | None, float | None]:
    # events x (1 publish + 5 deliveries) = per_day x 30 counted messages a month
    profile = UsageProfile(
        peak_connections=connections, events_per_month=per_day * 30 / 6, subscribers_per_event=5
    )
    option = price_pusher(profile, StackOptions(), book)
    return option.plan, option.total_usd


@pytest.mark.parametrize(
    ("connections", "per_day", "plan", "price"),
    [
        (100, 200_000, "Sandbox", 0),  # both limits exactly
        (101, 200_000, "Startup", 49),  # one connection over
        (100, 200_006, "Startup", 49),  # messages over
        (99, 199_998, "Sandbox", 0),
        (500, 1_000_002, "Pro", 99),
        (500, 1_000_000, "Startup", 49),
        (499, 999_996, "Startup", 49),
        (501, 1_000_000, "Pro", 99),
        (30_000, 90_000_000, "Growth Plus", 1199),
        (30_001, 90_000_000, None, None),  # beyond the published plans
    ],
)
def test_pusher_plan_boundaries(
    book: PriceBook, connections: float, per_day: float, plan: str | None, price: float | None
) -> None:
    assert _pusher(book, connections, per_day) == (plan, price)


def test_pusher_counts_client_events_and_presence_but_not_pings(book: PriceBook) -> None:
    profile = UsageProfile(
        peak_connections=50,
        connection_minutes=50 * MONTH,
        client_events_per_month=3_000,
        subscribers_per_event=4,
        presence_joins_per_month=300,
        presence_members=6,
    )
    # 3,000 client events x (1 + 3 others) + 300 joins x 2 notices x 5 others = 15,000
    assert realtime_volumes(profile, StackOptions()).pusher_messages == 15_000
    option = price_pusher(profile, StackOptions(), book)
    assert option.plan == "Sandbox"
    assert "500 messages a day" in option.notes[0]
