"""Realtime options: API Gateway with our stack (counted from what our design does) and Pusher.

The counts follow ``services/websocket/apigateway.py`` and the Pusher protocol handlers: the
single-table items, the writes each operation makes (with the ``by_connection`` index entry
of every connection and subscription item), the Queries of fan-out, and the messages each
client action costs. Sizes below are estimates of our items and frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .prices import PriceBook
from .profile import DAYS_PER_MONTH, MINUTES_PER_MONTH, StackOptions, UsageProfile
from .results import LineItem, OptionCost

MESSAGE_UNIT_BYTES = 32 * 1024  # API Gateway meters messages in 32 KB units
READ_UNIT_BYTES = 4 * 1024  # a DynamoDB read unit covers 4 KB
SQS_CHUNK_BYTES = 64 * 1024  # SQS bills each 64 KB of a request as one request
GIB = 2**30
PUSHER_MAX_PAYLOAD_BYTES = 10 * 1024  # Pusher's shared clusters refuse larger events

SUBSCRIPTION_ITEM_BYTES = 160  # pk CHAN#, sk CONN#, connection_id, expires_at
MEMBER_ITEM_BYTES = 200  # pk CHAN#, sk USER#, connections, user_info
CONTROL_FRAME_BYTES = 150  # connection_established, subscription_succeeded, member_*
PONG_FRAME_BYTES = 40
SHARD_ENTRY_BYTES = 40  # one connection id in a fan-out shard message

# DynamoDB writes per operation (each connection or subscription item also writes its
# by_connection index entry; counters have no connection_id, so no index entry).
CONNECT_WRITES = 2  # connection item + index
SUBSCRIBE_WRITES = 3  # subscription item + index + channel counter
UNSUBSCRIBE_WRITES = 3  # the same three, deleted or decremented on disconnect
DISCONNECT_WRITES = 2  # connection item + index
PRESENCE_WRITES = 1  # the member counter, on join and again on leave

# Lambda's SQS event source long-polls with 5 pollers, one 20 s receive each, even idle.
SQS_IDLE_RECEIVES_PER_MONTH = 5 * 3 * MINUTES_PER_MONTH
SQS_REQUESTS_PER_SHARD = 3  # send, receive, delete


@dataclass(frozen=True)
class Handler:
    """One Lambda handler's month: invocations and billed milliseconds."""

    invocations: float
    milliseconds: float


@dataclass(frozen=True)
class RealtimeVolumes:
    """What a profile makes our stack do in a month."""

    sessions: float
    subscriptions: float
    connection_minutes: float
    messages: dict[str, float]
    handlers: dict[str, Handler]
    write_units: float
    read_units: float
    sqs_requests: float
    bytes_out: float
    pusher_messages: float

    @property
    def total_messages(self) -> float:
        return sum(self.messages.values())


def _query_reads(items: float, item_bytes: int, *, consistent: bool) -> float:
    """Read units of one Query over ``items`` items (at least one unit; eventual: half)."""
    units = max(1, math.ceil(items * item_bytes / READ_UNIT_BYTES))
    return units if consistent else units / 2


def ping_rate(received_per_minute: float, stack: StackOptions) -> float:
    """pusher-js pings a connection per minute when it receives at this rate.

    pusher-js pings after ``activity_timeout`` seconds without a message; a message or the
    ping restarts the wait. With messages arriving at random (a Poisson process, rate l a
    minute, wait T minutes), a wait ends in a ping with probability exp(-lT) and lasts
    (1 - exp(-lT)) / l on average, so pings come at l exp(-lT) / (1 - exp(-lT)) a minute:
    1/T on an idle connection, fewer on a busy one. Bursty traffic pings more than this.
    """
    wait = stack.activity_timeout_seconds / 60
    rate = received_per_minute * wait
    if rate < 1e-9:  # idle (and the limit of the formula at zero)
        return 1 / wait
    if rate > 700:  # exp() would overflow; the chance of a silent wait is nil
        return 0.0
    return received_per_minute / math.expm1(rate)


def realtime_volumes(profile: UsageProfile, stack: StackOptions) -> RealtimeVolumes:
    """Count the messages, invocations, capacity units and bytes a month of ``profile`` costs."""
    p, t = profile, stack.times
    minutes = p.monthly_connection_minutes
    sessions = minutes / p.session_minutes
    per_connection = p.subscriptions_per_connection
    subs = sessions * per_connection
    units = math.ceil(p.payload_bytes / MESSAGE_UNIT_BYTES)
    fanout = p.subscribers_per_event
    relay = max(fanout - 1, 0.0)  # client events are not echoed to the sender
    others = max(p.members - 1, 0.0)
    events, client = p.events_per_month, p.client_events_per_month
    joins = p.presence_joins_per_month
    trigger_deliveries = events * fanout
    client_deliveries = client * relay
    presence_notices = joins * 2 * others  # member_added on join, member_removed on leave
    received = trigger_deliveries + client_deliveries + presence_notices
    pings = minutes * ping_rate(received / minutes if minutes else 0.0, stack)

    messages = {
        "connection_established": sessions,
        "subscribe and reply": subs * 2,
        "ping and pong": pings * 2,
        "trigger deliveries": trigger_deliveries * units,
        "client events received": client * units,
        "client event relays": client_deliveries * units,
        "presence notices": presence_notices,
    }

    sharded = stack.sharded_fanout and fanout > stack.shard_threshold
    shards = events * math.ceil(fanout / stack.shard_size) if sharded else 0.0
    handlers = {
        "connect": Handler(sessions, sessions * t.connect),
        "announce": Handler(sessions, sessions * t.announce),
        "disconnect": Handler(
            sessions,
            sessions * (t.disconnect + t.disconnect_per_subscription * per_connection)
            + joins * others * t.per_delivery,
        ),
        "message": Handler(
            subs + client,
            subs * t.subscribe
            + client * t.client_event
            + (client_deliveries + joins * others) * t.per_delivery,
        ),
    }
    if stack.authorizer:
        handlers["authorize"] = Handler(sessions, sessions * t.authorize)
    if stack.publish_via_lambda:
        inline = 0.0 if sharded else trigger_deliveries * t.per_delivery
        handlers["publish"] = Handler(events, events * t.publish + inline)
    if sharded:
        handlers["fanout"] = Handler(
            shards, shards * t.fanout_shard + trigger_deliveries * t.per_delivery
        )

    writes = (
        sessions * (CONNECT_WRITES + DISCONNECT_WRITES)
        + subs * (SUBSCRIBE_WRITES + UNSUBSCRIBE_WRITES)
        + joins * PRESENCE_WRITES * 2
    )
    fanout_query = _query_reads(fanout, SUBSCRIPTION_ITEM_BYTES, consistent=False)
    member_query = _query_reads(others + 1, SUBSCRIPTION_ITEM_BYTES, consistent=False)
    reads = (
        subs  # the connection item, read consistently before each subscribe
        + sessions * _query_reads(1 + per_connection, SUBSCRIPTION_ITEM_BYTES, consistent=False)
        + events * fanout_query
        + client * (1 + fanout_query)  # the sender's subscription, then the channel
        + joins * _query_reads(others + 1, MEMBER_ITEM_BYTES, consistent=True)
        + joins * 2 * member_query  # the join and leave notices' recipients
    )

    sqs = 0.0
    if stack.sharded_fanout:
        sqs = SQS_IDLE_RECEIVES_PER_MONTH
        if sharded:
            shard_bytes = min(fanout, stack.shard_size) * SHARD_ENTRY_BYTES + p.payload_bytes
            sqs += shards * SQS_REQUESTS_PER_SHARD * math.ceil(shard_bytes / SQS_CHUNK_BYTES)

    bytes_out = (
        (sessions + subs + presence_notices) * CONTROL_FRAME_BYTES
        + pings * PONG_FRAME_BYTES
        + (trigger_deliveries + client_deliveries) * p.payload_bytes
    )
    # Pusher counts each publish, each delivery (client events too) and presence notices;
    # pings and subscription commands are free.
    pusher = events * (1 + fanout) + client * (1 + relay) + presence_notices
    return RealtimeVolumes(
        sessions=sessions,
        subscriptions=subs,
        connection_minutes=minutes,
        messages=messages,
        handlers=handlers,
        write_units=writes,
        read_units=reads,
        sqs_requests=sqs,
        bytes_out=bytes_out,
        pusher_messages=pusher,
    )


def price_apigateway(
    profile: UsageProfile, stack: StackOptions, book: PriceBook, region: str
) -> OptionCost:
    """The monthly bill of the API Gateway provider with our stack."""
    v = realtime_volumes(profile, stack)
    messages = v.total_messages
    items = [
        LineItem(
            name="API Gateway messages",
            quantity=messages,
            unit="messages",
            usd=book.cost("apigateway.websocket.messages", region, messages),
            detail=", ".join(f"{name} {count:,.0f}" for name, count in v.messages.items()),
        ),
        LineItem(
            name="API Gateway connection minutes",
            quantity=v.connection_minutes,
            unit="minutes",
            usd=book.cost("apigateway.websocket.connection_minutes", region, v.connection_minutes),
        ),
        *_lambda_items(v.handlers, stack, book, region),
        LineItem(
            name="DynamoDB writes",
            quantity=v.write_units,
            unit="write units",
            usd=book.cost("dynamodb.on_demand.write_units", region, v.write_units),
        ),
        LineItem(
            name="DynamoDB reads",
            quantity=v.read_units,
            unit="read units",
            usd=book.cost("dynamodb.on_demand.read_units", region, v.read_units),
        ),
    ]
    if stack.sharded_fanout:
        items.append(
            LineItem(
                name="SQS fan-out shards",
                quantity=v.sqs_requests,
                unit="requests",
                usd=book.cost("sqs.standard.requests", region, v.sqs_requests),
                detail="includes the event source's idle long polling",
            )
        )
    gigabytes = v.bytes_out / GIB
    items.append(
        LineItem(
            name="Data transfer out",
            quantity=gigabytes,
            unit="GB",
            usd=book.cost("aws.data_transfer_out.gb", region, gigabytes),
        )
    )
    return OptionCost(
        option="apigateway",
        kind="realtime",
        items=tuple(items),
        total_usd=sum(item.usd for item in items),
    )


def _lambda_items(
    handlers: dict[str, Handler], stack: StackOptions, book: PriceBook, region: str
) -> list[LineItem]:
    """One line per handler; tiered prices apply to the account's totals, shared pro rata."""
    invocations = sum(h.invocations for h in handlers.values())
    milliseconds = sum(h.milliseconds for h in handlers.values())
    gb = stack.lambda_memory_mb / 1024
    requests_usd = book.cost("lambda.requests", region, invocations)
    compute_usd = book.cost(
        f"lambda.{stack.architecture}.gb_seconds", region, milliseconds / 1000 * gb
    )
    items = []
    for name, handler in handlers.items():
        usd = 0.0
        if invocations:
            usd += requests_usd * handler.invocations / invocations
        if milliseconds:
            usd += compute_usd * handler.milliseconds / milliseconds
        gb_seconds = handler.milliseconds / 1000 * gb
        items.append(
            LineItem(
                name=f"Lambda {name}",
                quantity=handler.invocations,
                unit="invocations",
                usd=usd,
                detail=f"{gb_seconds:,.0f} GB-s",
            )
        )
    return items


def price_pusher(profile: UsageProfile, stack: StackOptions, book: PriceBook) -> OptionCost:
    """The cheapest Pusher Channels plan whose connection and daily message limits fit."""
    per_day = realtime_volumes(profile, stack).pusher_messages / DAYS_PER_MONTH
    usage = f"{profile.peak_connections:,.0f} peak connections, {per_day:,.0f} messages a day"
    if profile.payload_bytes > PUSHER_MAX_PAYLOAD_BYTES:
        return OptionCost(
            option="pusher",
            kind="realtime",
            total_usd=None,
            notes=(f"events over {PUSHER_MAX_PAYLOAD_BYTES:,} bytes need a dedicated cluster",),
        )
    fitting = [
        plan
        for plan in book.plans_for("pusher")
        # The price file gives every Pusher plan both limits.
        if profile.peak_connections <= (plan.max_connections or 0)
        and per_day <= (plan.max_messages_per_day or 0)
    ]
    if not fitting:
        return OptionCost(
            option="pusher",
            kind="realtime",
            total_usd=None,
            notes=(f"{usage}: beyond the published plans (Enterprise, by quote)",),
        )
    plan = min(fitting, key=lambda p: p.usd_month)
    item = LineItem(
        name=f"plan {plan.name}",
        quantity=1,
        unit="month",
        usd=plan.usd_month,
        detail=f"up to {plan.max_connections:,.0f} connections, "
        f"{plan.max_messages_per_day:,.0f} messages a day",
    )
    return OptionCost(
        option="pusher",
        kind="realtime",
        plan=plan.name,
        items=(item,),
        total_usd=plan.usd_month,
        notes=(usage,),
    )
