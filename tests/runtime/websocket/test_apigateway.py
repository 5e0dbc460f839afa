"""The apigateway provider: DynamoDB (moto server) and a local @connections endpoint."""

from __future__ import annotations

import time
from typing import Any

import boto3
import pytest
from milequest.services.websocket import WebSocketError, WebSocketErrorCode, protocol
from milequest.services.websocket.apigateway import (
    CHANNELS_INDEX,
    CONNECTION_INDEX,
    TTL_ATTRIBUTE,
    ApiGatewayWebSocketService,
    table_definition,
)

from .conftest import APP_KEY, APP_SECRET, WebhookSink, new_connection_id
from .endpoints import ConnectionsState


def _join(
    svc: ApiGatewayWebSocketService,
    channel: str,
    user: str | None = None,
    info: dict[str, Any] | None = None,
) -> str:
    cid = new_connection_id()
    svc.connect(cid, user)
    auth = data = None
    if channel.startswith(("private-", "presence-")):
        signed = svc.authenticate_channel(
            svc.socket_id(cid), channel, {"user_id": user, "user_info": info} if user else None
        )
        auth, data = signed["auth"], signed.get("channel_data")
    svc.subscribe(cid, channel, auth, data)
    return cid


def _service(table: str, endpoint: str, **options: Any) -> ApiGatewayWebSocketService:
    return ApiGatewayWebSocketService(
        table_name=table,
        management_endpoint=endpoint,
        app_key=APP_KEY,
        app_secret=APP_SECRET,
        **options,
    )


@pytest.fixture
def no_scan(apigw: ApiGatewayWebSocketService) -> None:
    """Fail the test on any Scan: the provider must find everything with Query/GetItem."""
    ddb, _ = apigw._clients()

    def refuse(**kwargs: Any) -> None:
        raise AssertionError("Scan called")

    ddb.meta.events.register("before-call.dynamodb.Scan", refuse)


def test_table_definition_is_query_only_friendly() -> None:
    definition = table_definition()
    assert "TableName" not in definition
    indexes = {i["IndexName"] for i in definition["GlobalSecondaryIndexes"]}
    assert indexes == {CONNECTION_INDEX, CHANNELS_INDEX}
    channels = next(
        i for i in definition["GlobalSecondaryIndexes"] if i["IndexName"] == CHANNELS_INDEX
    )
    # Keys only: counter updates must not write to the index, only occupy/vacate.
    assert channels["Projection"] == {"ProjectionType": "KEYS_ONLY"}


@pytest.mark.usefixtures("no_scan")
def test_gone_connection_is_deleted_and_counted(
    apigw: ApiGatewayWebSocketService, connections: ConnectionsState
) -> None:
    alive = _join(apigw, "team-1")
    dead = _join(apigw, "team-1")
    also = _join(apigw, "team-2")
    apigw.subscribe(dead, "team-2")
    connections.gone.add(dead)
    result = apigw.trigger("team-1", "ev", {"n": 1}, socket_id=None)
    assert (result.delivered, result.gone, result.failed) == (1, 1, 0)
    assert apigw.get_channel_info("team-1").subscription_count == 1
    # The dead connection's other subscriptions went with it; the sender's did not.
    assert apigw.get_channel_info("team-2").subscription_count == 1
    assert apigw._connection(dead) is None
    assert apigw._connection(alive) is not None
    result = apigw.trigger("team-2", "ev", 2)
    assert (result.delivered, result.gone) == (1, 0)
    assert [f["data"] for f in connections.frames(also)] == [2]


def test_a_bare_410_also_means_gone(
    apigw: ApiGatewayWebSocketService, connections: ConnectionsState
) -> None:
    dead = _join(apigw, "team-1")
    connections.bare_gone.add(dead)
    result = apigw.trigger("team-1", "ev", 1)
    assert (result.delivered, result.gone, result.failed) == (0, 1, 0)
    assert apigw._connection(dead) is None


def test_client_event_gone_target_deletes_target_not_sender(
    apigw: ApiGatewayWebSocketService, connections: ConnectionsState
) -> None:
    sender = _join(apigw, "private-chat", "alice")
    target = _join(apigw, "private-chat", "bob")
    connections.gone.add(target)
    result = apigw.send_client_event(sender, "private-chat", "client-hi", {"t": 1})
    assert result.gone == 1
    assert apigw._connection(sender) is not None
    assert apigw._connection(target) is None


def test_throttling_is_retried_by_botocore(
    apigw: ApiGatewayWebSocketService, connections: ConnectionsState
) -> None:
    cid = _join(apigw, "busy")
    connections.throttle[cid] = 1  # one 429 LimitExceededException, then success
    before = connections.requests
    result = apigw.trigger("busy", "ev", 1)
    assert (result.delivered, result.failed) == (1, 0)
    assert connections.requests - before == 2
    assert len(connections.frames(cid)) == 1


def test_persistent_throttling_is_rate_limited(
    table: str, management_endpoint: str, connections: ConnectionsState
) -> None:
    # No botocore retry: the throttling surfaces at once.
    apigw = _service(table, management_endpoint, max_attempts=1)
    throttled = _join(apigw, "busy")
    fine = _join(apigw, "busy")
    connections.throttle[throttled] = 100
    result = apigw.trigger("busy", "ev", 1)
    assert (result.delivered, result.failed, result.gone) == (1, 1, 0)
    assert connections.frames(fine)
    # When every delivery is throttled the call fails as RATE_LIMITED (retryable).
    connections.throttle[fine] = 100
    with pytest.raises(WebSocketError) as err:
        apigw.trigger("busy", "ev", 2)
    assert err.value.code is WebSocketErrorCode.RATE_LIMITED
    assert err.value.retryable
    apigw.close()


def test_max_attempts_counts_the_first_call(
    table: str, management_endpoint: str, connections: ConnectionsState
) -> None:
    apigw = _service(table, management_endpoint, max_attempts=2)
    cid = _join(apigw, "busy")
    connections.throttle[cid] = 100
    before = connections.requests
    with pytest.raises(WebSocketError):
        apigw.trigger("busy", "ev", 1)
    assert connections.requests - before == 2
    apigw.close()


def test_forbidden_management_api_is_a_configuration_error(
    apigw: ApiGatewayWebSocketService, connections: ConnectionsState
) -> None:
    _join(apigw, "team")
    connections.forbid = True
    before = connections.requests
    with pytest.raises(WebSocketError) as err:
        apigw.trigger("team", "ev", 1)
    assert err.value.code is WebSocketErrorCode.CONFIGURATION
    assert not err.value.retryable
    assert "execute-api:ManageConnections" in err.value.message
    assert connections.requests - before == 1  # not retried


def test_unreachable_endpoint_is_provider_unavailable(table: str) -> None:
    from tests.conftest import free_port

    svc = _service(table, f"http://127.0.0.1:{free_port()}/local", max_attempts=1)
    _join(svc, "team")
    with pytest.raises(WebSocketError) as err:
        svc.trigger("team", "ev", 1)
    assert err.value.code is WebSocketErrorCode.PROVIDER_UNAVAILABLE
    assert err.value.retryable
    svc.close()


def test_missing_table_is_a_typed_error_and_unhealthy(
    moto_endpoint: str, management_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", moto_endpoint)
    svc = _service("no-such-table", management_endpoint)
    with pytest.raises(WebSocketError) as err:
        svc.trigger("team", "ev", 1)
    assert err.value.code is WebSocketErrorCode.PROVIDER_ERROR
    assert not svc.health_check().healthy


@pytest.mark.usefixtures("no_scan")
def test_presence_member_events_on_first_and_last_connection(
    apigw: ApiGatewayWebSocketService, connections: ConnectionsState, webhook_sink: WebhookSink
) -> None:
    apigw.webhook_url = webhook_sink.url
    watcher = _join(apigw, "presence-room", "watcher")
    alice1 = _join(apigw, "presence-room", "alice", {"name": "Alice"})
    alice2 = _join(apigw, "presence-room", "alice", {"name": "Alice"})

    def member_events(cid: str) -> list[tuple[str, str]]:
        return [
            (f["event"], f["data"]["user_id"])
            for f in connections.frames(cid)
            if f["event"].startswith("pusher_internal:member_")
        ]

    assert member_events(watcher) == [("pusher_internal:member_added", "alice")]
    assert member_events(alice1) == []  # not sent to the user's own connections
    added = connections.frames(watcher)[0]["data"]
    assert added == {"user_id": "alice", "user_info": {"name": "Alice"}}

    apigw.disconnect(alice1)
    assert member_events(watcher) == [("pusher_internal:member_added", "alice")]
    assert apigw.unsubscribe(alice2, "presence-room") is True
    assert member_events(watcher) == [
        ("pusher_internal:member_added", "alice"),
        ("pusher_internal:member_removed", "alice"),
    ]
    assert apigw.unsubscribe(alice2, "presence-room") is False
    assert [u.id for u in apigw.get_channel_users("presence-room")] == ["watcher"]

    apigw.disconnect(watcher)
    names = [(e["name"], e.get("user_id")) for e in webhook_sink.events()]
    assert names == [
        ("channel_occupied", None),
        ("member_added", "watcher"),
        ("member_added", "alice"),
        ("member_removed", "alice"),
        ("member_removed", "watcher"),
        ("channel_vacated", None),
    ]
    for headers, body in webhook_sink.received:
        assert apigw.validate_webhook(headers, body)
    assert not apigw.get_channel_info("presence-room").occupied


def test_presence_subscription_returns_members(apigw: ApiGatewayWebSocketService) -> None:
    _join(apigw, "presence-room", "bob", {"name": "Bob"})
    cid = new_connection_id()
    apigw.connect(cid, "carol")
    signed = apigw.authenticate_channel(apigw.socket_id(cid), "presence-room", "carol")
    result = apigw.subscribe(cid, "presence-room", signed["auth"], signed["channel_data"])
    assert result.members == {"bob": {"name": "Bob"}, "carol": None}
    again = apigw.subscribe(cid, "presence-room", signed["auth"], signed["channel_data"])
    assert again.already_subscribed
    assert apigw.get_channel_info("presence-room").subscription_count == 2


def test_subscribe_checks_signatures(apigw: ApiGatewayWebSocketService) -> None:
    cid = new_connection_id()
    apigw.connect(cid, "eve")
    other = new_connection_id()
    for_other = apigw.authenticate_channel(apigw.socket_id(other), "private-team")["auth"]
    for auth in (None, "", for_other, f"{APP_KEY}:{'0' * 64}"):
        with pytest.raises(WebSocketError) as err:
            apigw.subscribe(cid, "private-team", auth)
        assert err.value.code is WebSocketErrorCode.UNAUTHORIZED
    # A presence signature does not cover different channel_data.
    signed = apigw.authenticate_channel(apigw.socket_id(cid), "presence-team", "eve")
    with pytest.raises(WebSocketError) as err:
        apigw.subscribe(cid, "presence-team", signed["auth"], '{"user_id":"admin"}')
    assert err.value.code is WebSocketErrorCode.UNAUTHORIZED
    assert not apigw.get_channel_info("private-team").occupied


def test_client_events_rules(
    apigw: ApiGatewayWebSocketService, connections: ConnectionsState, webhook_sink: WebhookSink
) -> None:
    apigw.webhook_url = webhook_sink.url
    a = _join(apigw, "presence-chat", "a")
    b = _join(apigw, "presence-chat", "b")
    outsider = _join(apigw, "public-chat")
    result = apigw.send_client_event(a, "presence-chat", "client-typing", {"on": True})
    assert result.delivered == 1
    assert connections.frames(b)[-1] == {
        "event": "client-typing",
        "channel": "presence-chat",
        "data": {"on": True},
        "user_id": "a",  # on presence channels, who sent it
    }
    assert all(f["event"] != "client-typing" for f in connections.frames(a))
    hook = [e for e in webhook_sink.events() if e["name"] == "client_event"]
    assert hook == [
        {
            "name": "client_event",
            "channel": "presence-chat",
            "event": "client-typing",
            "data": '{"on":true}',
            "socket_id": apigw.socket_id(a),
            "user_id": "a",
        }
    ]
    cases = [
        (outsider, "public-chat", "client-x", WebSocketErrorCode.FORBIDDEN),
        (outsider, "presence-chat", "client-x", WebSocketErrorCode.FORBIDDEN),
        (a, "presence-chat", "not-client", WebSocketErrorCode.INVALID_EVENT),
    ]
    for cid, channel, event, code in cases:
        with pytest.raises(WebSocketError) as err:
            apigw.send_client_event(cid, channel, event, {})
        assert err.value.code is code


def test_records_carry_ttl_and_connection_index(
    apigw: ApiGatewayWebSocketService, table: str, moto_endpoint: str
) -> None:
    cid = _join(apigw, "presence-ttl", "u1")
    ddb = boto3.client("dynamodb", endpoint_url=moto_endpoint)
    items = ddb.query(
        TableName=table,
        IndexName=CONNECTION_INDEX,
        KeyConditionExpression="connection_id = :c",
        ExpressionAttributeValues={":c": {"S": cid}},
    )["Items"]
    assert sorted(i["pk"]["S"] for i in items) == ["CHAN#presence-ttl", f"CONN#{cid}"]
    now = time.time()
    for item in items:
        expires = int(item[TTL_ATTRIBUTE]["N"])
        assert now + 2 * 3600 - 60 <= expires <= now + 3 * 3600
    desc = ddb.describe_time_to_live(TableName=table)["TimeToLiveDescription"]
    assert desc["AttributeName"] == TTL_ATTRIBUTE


def test_disconnect_is_idempotent(
    apigw: ApiGatewayWebSocketService, webhook_sink: WebhookSink
) -> None:
    apigw.webhook_url = webhook_sink.url
    cid = _join(apigw, "team-x")
    apigw.disconnect(cid)
    apigw.disconnect(cid)
    names = [e["name"] for e in webhook_sink.events()]
    assert names == ["channel_occupied", "channel_vacated"]


def test_subscribe_unknown_connection(apigw: ApiGatewayWebSocketService) -> None:
    with pytest.raises(WebSocketError) as err:
        apigw.subscribe(new_connection_id(), "team")
    assert err.value.code is WebSocketErrorCode.CONNECTION_GONE


def test_fanout_to_many_connections(
    apigw: ApiGatewayWebSocketService, connections: ConnectionsState
) -> None:
    ids = [_join(apigw, "crowd") for _ in range(60)]
    gone = set(ids[:7])
    connections.gone.update(gone)
    result = apigw.trigger("crowd", "ev", {"x": 1}, socket_id=apigw.socket_id(ids[-1]))
    assert (result.delivered, result.gone, result.excluded) == (52, 7, 1)
    assert all(len(connections.frames(c)) == 1 for c in ids[7:-1])
    assert apigw.get_channel_info("crowd").subscription_count == 53


def test_webhook_failures_never_fail_the_call(apigw: ApiGatewayWebSocketService) -> None:
    from tests.conftest import free_port

    apigw.webhook_url = f"http://127.0.0.1:{free_port()}/nothing-listens"
    cid = _join(apigw, "team-w")
    apigw.disconnect(cid)
    assert not apigw.get_channel_info("team-w").occupied


def test_payload_limit_is_128_kib_of_the_frame(apigw: ApiGatewayWebSocketService) -> None:
    assert apigw.max_payload_bytes == 128 * 1024
    with pytest.raises(WebSocketError) as err:
        apigw.trigger("team", "ev", "x" * (128 * 1024 - 20))
    assert err.value.code is WebSocketErrorCode.PAYLOAD_TOO_LARGE
    with pytest.raises(WebSocketError) as err:
        apigw.authenticate_channel("1234.5678", "private-a")
    assert err.value.code is WebSocketErrorCode.INVALID_SOCKET_ID


def test_expired_records_are_not_counted(
    apigw: ApiGatewayWebSocketService, table: str, moto_endpoint: str
) -> None:
    ghost = _join(apigw, "presence-old", "ghost")
    _join(apigw, "presence-old", "live")
    ddb = boto3.client("dynamodb", endpoint_url=moto_endpoint)
    past = {":past": {"N": str(int(time.time()) - 60)}}
    for sk in ("USER#ghost", f"CONN#{ghost}"):
        ddb.update_item(
            TableName=table,
            Key={"pk": {"S": "CHAN#presence-old"}, "sk": {"S": sk}},
            UpdateExpression="SET expires_at = :past",
            ExpressionAttributeValues=past,
        )
    info = apigw.get_channel_info("presence-old")
    assert (info.subscription_count, info.user_count) == (1, 1)
    assert [u.id for u in apigw.get_channel_users("presence-old")] == ["live"]


def test_concurrent_joins_of_one_user_announce_once(
    apigw: ApiGatewayWebSocketService, connections: ConnectionsState
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    watcher = _join(apigw, "presence-race", "watcher")
    with ThreadPoolExecutor(max_workers=6) as pool:
        tabs = list(pool.map(lambda _: _join(apigw, "presence-race", "racer"), range(6)))
    added = [f for f in connections.frames(watcher) if f["event"] == "pusher_internal:member_added"]
    assert [f["data"]["user_id"] for f in added] == ["racer"]
    with ThreadPoolExecutor(max_workers=6) as pool:
        list(pool.map(apigw.disconnect, tabs))
    removed = [
        f for f in connections.frames(watcher) if f["event"] == "pusher_internal:member_removed"
    ]
    assert [f["data"]["user_id"] for f in removed] == ["racer"]
    assert apigw.get_channel_info("presence-race").user_count == 1


def test_many_gone_presence_members_are_cleaned_up(
    apigw: ApiGatewayWebSocketService, connections: ConnectionsState
) -> None:
    watcher = _join(apigw, "presence-big", "watcher")
    dead = [_join(apigw, "presence-big", f"user-{i}") for i in range(10)]
    connections.gone.update(dead)
    result = apigw.trigger("presence-big", "ev", {})
    assert (result.delivered, result.gone) == (1, 10)
    removed = sorted(
        f["data"]["user_id"]
        for f in connections.frames(watcher)
        if f["event"] == "pusher_internal:member_removed"
    )
    assert removed == sorted(f"user-{i}" for i in range(10))
    info = apigw.get_channel_info("presence-big")
    assert (info.subscription_count, info.user_count) == (1, 1)


# -- the Pusher protocol's server side --------------------------------------------------------


def test_announce_waits_until_the_connection_is_established(
    apigw: ApiGatewayWebSocketService, connections: ConnectionsState
) -> None:
    cid = new_connection_id()
    apigw.connect(cid)
    connections.not_yet[cid] = 3  # API Gateway answers 410 until $connect has returned
    frame = protocol.connection_established(apigw.socket_id(cid), 120)
    assert apigw.announce(cid, frame) is True
    assert connections.frames(cid) == [
        {
            "event": "pusher:connection_established",
            "data": {"socket_id": apigw.socket_id(cid), "activity_timeout": 120},
        }
    ]
    assert apigw._connection(cid) is not None


def test_announce_gives_up_on_a_connection_that_never_comes(
    table: str, management_endpoint: str, connections: ConnectionsState
) -> None:
    svc = _service(table, management_endpoint, announce_timeout_seconds=0.2)
    cid = new_connection_id()
    svc.connect(cid)
    connections.gone.add(cid)
    assert svc.announce(cid, protocol.pong()) is False
    assert svc._connection(cid) is None  # forgotten: it will never be reachable
    svc.close()


def test_a_refusal_is_announced_then_the_connection_closed(
    apigw: ApiGatewayWebSocketService, connections: ConnectionsState
) -> None:
    cid = new_connection_id()
    refusal = protocol.error("Unsupported protocol version 6", 4007)
    assert apigw.announce(cid, refusal, close=True) is True
    assert connections.frames(cid) == [
        {
            "event": "pusher:error",
            "data": {"code": 4007, "message": "Unsupported protocol version 6"},
        }
    ]
    assert connections.deleted == [cid]


def test_signed_in_connections_share_the_users_channel(
    apigw: ApiGatewayWebSocketService, connections: ConnectionsState, webhook_sink: WebhookSink
) -> None:
    apigw.webhook_url = webhook_sink.url
    cid = new_connection_id()
    apigw.connect(cid)
    intruder = new_connection_id()
    apigw.connect(intruder)
    with pytest.raises(WebSocketError) as err:
        apigw.subscribe(intruder, "#server-to-user-walker")
    assert err.value.code is WebSocketErrorCode.UNAUTHORIZED
    signed = apigw.authenticate_user(apigw.socket_id(cid), {"id": "walker"})
    assert apigw.signin(cid, signed["auth"], signed["user_data"]) == "walker"
    # pusher-js subscribes to the channel after signing in: already there, still fine.
    assert apigw.subscribe(cid, "#server-to-user-walker").already_subscribed
    for bad in (
        None,
        f"{APP_KEY}:{'0' * 64}",
        signed["auth"],  # the other connection's signature, replayed
    ):
        with pytest.raises(WebSocketError) as err:
            apigw.signin(intruder, bad, signed["user_data"])
        assert err.value.code is WebSocketErrorCode.UNAUTHORIZED
    result = apigw.send_to_user("walker", "badge", {"miles": 10})
    assert result.delivered == 1
    assert connections.frames(intruder) == []
    # The user's channel is internal: not listed, no occupancy webhooks.
    assert "#server-to-user-walker" not in apigw.get_channels()
    assert webhook_sink.events() == []
    assert apigw.terminate_user_connections("walker") == 1
    assert connections.frames(cid)[-1]["event"] == "pusher:error"
    assert connections.frames(cid)[-1]["data"]["code"] == 4009
    assert connections.deleted == [cid]
    assert apigw._connection(cid) is None
    assert apigw.send_to_user("walker", "badge", {}).delivered == 0


def test_client_events_are_rate_limited_per_connection(
    table: str, management_endpoint: str, connections: ConnectionsState
) -> None:
    svc = _service(table, management_endpoint, client_event_rate=3)
    sender = _join(svc, "private-chat", "a")
    other = _join(svc, "private-chat", "b")
    outcomes = []
    for _ in range(5):
        try:
            svc.send_client_event(sender, "private-chat", "client-typing", {})
            outcomes.append("sent")
        except WebSocketError as exc:
            outcomes.append(exc.code.value)
    # The window is one second; the test may straddle a boundary once at most.
    assert outcomes.count("sent") in (3, 4, 5)
    assert outcomes[:3] == ["sent"] * 3
    assert outcomes.count("sent") + outcomes.count("RATE_LIMITED") == 5
    assert len(connections.frames(other)) == outcomes.count("sent")
    svc.close()


@pytest.mark.usefixtures("no_scan")
def test_the_channel_list_follows_occupancy(apigw: ApiGatewayWebSocketService) -> None:
    a = _join(apigw, "presence-a", "u1")
    _join(apigw, "presence-a", "u2")
    b = _join(apigw, "team-b")
    assert set(apigw.get_channels()) == {"presence-a", "team-b"}
    assert apigw.get_channels("presence-", ["user_count"])["presence-a"].user_count == 2
    apigw.disconnect(b)
    apigw.disconnect(a)
    assert set(apigw.get_channels()) == {"presence-a"}
    assert apigw.get_channels("presence-", ["user_count"])["presence-a"].user_count == 1
