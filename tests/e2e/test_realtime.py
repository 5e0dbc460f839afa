"""Unmodified pusher-js (npm, run by Node) and raw Pusher-protocol clients against the stack.

What a front end built for Pusher does, with only its host options changed: connect,
channels of every kind, presence, client events, user sign-in, reconnection and pings.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from milequest.local import LocalStack
from milequest.services import reset_services
from milequest.services.websocket import WebSocketService, create_websocket_service, protocol
from websockets.asyncio.client import connect

from .conftest import Client, run, stack_config
from .pusherjs import PusherJs, pusher_js_clients

pytestmark = pytest.mark.slow

ACTIVITY_TIMEOUT = 1  # seconds: pusher-js pings after this much silence


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    with LocalStack(stack_config(activity_timeout=ACTIVITY_TIMEOUT)) as running:
        yield running


def _options(stack: LocalStack, user: str) -> dict[str, Any]:
    """What a front end passes to ``new Pusher(key, options)``: the stack's host options and
    its app's own user authentication (a bearer token)."""
    options = stack.pusher_js_options()
    headers = {"Authorization": f"Bearer {stack.connection_token(user)}"}
    options["channelAuthorization"]["headers"] = headers
    options["userAuthentication"]["headers"] = headers
    return options


def _connected(stack: LocalStack, client: PusherJs, user: str) -> str:
    return client.connect(stack.config.resources.websocket_app_key, _options(stack, user))


def _service() -> WebSocketService:
    return create_websocket_service()


def test_pusher_js_connects_and_gets_a_pusher_socket_id(stack: LocalStack) -> None:
    with pusher_js_clients(1) as [client]:
        socket_id = _connected(stack, client, "alice")
        assert protocol.SOCKET_ID_RE.match(socket_id)
        assert protocol.decode_socket_id(socket_id) in stack.gateway.connections
        states = [e["current"] for e in client.of_type("state")]
        assert states[-1] == "connected"
        assert not {"unavailable", "failed", "disconnected"} & set(states)


def test_every_kind_of_channel_and_a_trigger_from_python(stack: LocalStack) -> None:
    channels = ("team-1", "private-team-1", "presence-team-1", "private-encrypted-team-1")
    with pusher_js_clients(1) as [client]:
        socket_id = _connected(stack, client, "alice")
        for channel in channels:
            assert client.subscribe(channel)["type"] == "subscribed", client.events
        service = _service()
        assert service.provider_name == "apigateway"
        for channel in channels:
            result = service.trigger(channel, "activity-update", {"distance": 5.2, "on": channel})
            assert result.delivered == 1
        for channel in channels:
            event = client.wait_type("event", channel=channel, event="activity-update")
            # pusher-js parsed the data (and decrypted it on the encrypted channel).
            assert event["data"] == {"distance": 5.2, "on": channel}
        # The sender's own socket id excludes it, as with Pusher.
        service.trigger("team-1", "excluded", {}, socket_id=socket_id)
        service.trigger("team-1", "after", {})
        client.wait_type("event", event="after")
        assert not [e for e in client.of_type("event") if e["event"] == "excluded"]


def test_presence_members_come_and_go_across_two_clients(stack: LocalStack) -> None:
    with pusher_js_clients(2) as [alice, bob]:
        _connected(stack, alice, "alice")
        _connected(stack, bob, "bob")
        joined = alice.subscribe("presence-walk")
        assert joined["members"] == {
            "count": 1,
            "me": {"id": "alice", "info": None},
            "ids": ["alice"],
        }
        seen = bob.subscribe("presence-walk")
        assert seen["members"]["count"] == 2
        assert sorted(seen["members"]["ids"]) == ["alice", "bob"]
        assert alice.wait_type("member_added", channel="presence-walk")["id"] == "bob"
        bob.send("unsubscribe", channel="presence-walk")
        assert alice.wait_type("member_removed", channel="presence-walk")["id"] == "bob"
        users = _service().get_channel_users("presence-walk")
        assert [u.id for u in users] == ["alice"]


def test_client_events_reach_the_other_members_only(stack: LocalStack) -> None:
    with pusher_js_clients(2) as [alice, bob]:
        _connected(stack, alice, "alice")
        _connected(stack, bob, "bob")
        alice.subscribe("presence-chat")
        bob.subscribe("presence-chat")
        bob.send("bind", channel="presence-chat", event="client-typing")
        alice.send("trigger", channel="presence-chat", event="client-typing", data={"on": True})
        assert alice.wait_type("triggered")["ok"] is True
        event = bob.wait_type("bound_event", event="client-typing")
        # On presence channels the receiver learns who sent it.
        assert (event["data"], event["user_id"]) == ({"on": True}, "alice")
        alice.settle(0.3)
        assert not [e for e in alice.of_type("event") if e["event"] == "client-typing"]


def test_signin_then_send_to_user(stack: LocalStack) -> None:
    with pusher_js_clients(2) as [walker, other]:
        _connected(stack, walker, "walker-1")
        _connected(stack, other, "walker-2")
        walker.send("signin")
        assert walker.wait_type("signed_in")["user"] == {"id": "walker-1"}
        walker.wait_for(
            lambda e: e.get("type") == "message" and e.get("channel") == "#server-to-user-walker-1"
        )  # pusher-js subscribed to its server-to-user channel
        assert _service().send_to_user("walker-1", "badge", {"miles": 100}).delivered == 1
        assert walker.wait_type("user_event", event="badge")["data"] == {"miles": 100}
        other.settle(0.3)
        assert other.of_type("user_event") == []


def test_pusher_js_reconnects_after_the_server_closes_the_socket(stack: LocalStack) -> None:
    with pusher_js_clients(1) as [client]:
        first = _connected(stack, client, "alice")
        client.subscribe("team-reconnect")
        management = boto3.client(
            "apigatewaymanagementapi", endpoint_url=stack.env["APIGW_MANAGEMENT_ENDPOINT"]
        )
        management.delete_connection(ConnectionId=protocol.decode_socket_id(first))
        second = client.wait_for(
            lambda e: e.get("type") == "connected" and e["socket_id"] != first, timeout=20
        )["socket_id"]
        # pusher-js subscribes again by itself on the new connection.
        client.wait_for(
            lambda e: e.get("type") == "subscribed" and e is not client.of_type("subscribed")[0]
        )
        _service().trigger("team-reconnect", "back", {"ok": 1})
        assert client.wait_type("event", event="back")["data"] == {"ok": 1}
        assert protocol.decode_socket_id(second) in stack.gateway.connections


def test_the_activity_ping_is_answered(stack: LocalStack) -> None:
    with pusher_js_clients(1) as [client]:
        socket_id = _connected(stack, client, "alice")
        # Silence: pusher-js pings after the activity timeout and needs a pong in time.
        client.wait_for(lambda e: e.get("type") == "message" and e["event"] == "pusher:pong")
        client.settle(3 * ACTIVITY_TIMEOUT)
        pongs = [e for e in client.of_type("message") if e["event"] == "pusher:pong"]
        assert len(pongs) >= 2
        connected = [e["socket_id"] for e in client.of_type("connected")]
        assert connected == [socket_id]  # never had to reconnect


# -- what pusher-js hides: refusals and limits, with a raw client -----------------------------


def test_an_unsupported_protocol_version_is_refused_in_the_first_frame(stack: LocalStack) -> None:
    async def scenario() -> tuple[list[dict[str, Any]], int | None]:
        client = Client(await connect(f"{stack.urls['websocket']}?protocol=6&client=js"))
        first = await client.next_frame()
        await asyncio.wait_for(client.ws.wait_closed(), 10)
        return [first], client.ws.close_code

    frames, code = run(scenario)
    assert frames[0]["event"] == "pusher:error"
    assert frames[0]["data"]["code"] == 4007
    assert code == 1000  # closed by DeleteConnection, as in AWS (no close code from $connect)


def test_an_unknown_app_key_is_refused_with_4001(stack: LocalStack) -> None:
    async def scenario() -> tuple[dict[str, Any], int | None]:
        url = stack.urls["websocket"].rsplit("/", 1)[0] + "/not-our-key?protocol=7"
        client = Client(await connect(url))
        first = await client.next_frame()
        await asyncio.wait_for(client.ws.wait_closed(), 10)
        return first, client.ws.close_code

    first, code = run(scenario)
    assert (first["event"], first["data"]["code"], code) == ("pusher:error", 4001, 4001)


def test_an_abruptly_dropped_client_is_cleaned_up_on_the_next_trigger(
    stack: LocalStack,
) -> None:
    async def scenario() -> tuple[Any, Any, list[Any]]:
        stays, drops = await Client.open(stack), await Client.open(stack)
        for client in (stays, drops):
            frame = await client.subscribe("public-drop")
            assert frame["event"] == "pusher_internal:subscription_succeeded"
        dropped_id = protocol.decode_socket_id(drops.socket_id)
        drops.ws.transport.abort()  # TCP gone, no close frame: $disconnect never arrives
        async with asyncio.timeout(10):
            while dropped_id in stack.gateway.connections:
                await asyncio.sleep(0.02)
        first = await asyncio.to_thread(_service().trigger, "public-drop", "tick", 1)
        await stays.expect("tick")
        second = await asyncio.to_thread(_service().trigger, "public-drop", "tick", 2)
        await stays.expect("tick")
        ddb = boto3.client("dynamodb")
        leftovers = await asyncio.to_thread(
            ddb.query,
            TableName=stack.env["CONNECTIONS_TABLE"],
            IndexName="by_connection",
            KeyConditionExpression="connection_id = :c",
            ExpressionAttributeValues={":c": {"S": dropped_id}},
        )
        await stays.close()
        return first, second, leftovers["Items"]

    first, second, leftovers = run(scenario)
    assert (first.delivered, first.gone) == (1, 1)
    assert (second.delivered, second.gone) == (1, 0)
    assert leftovers == []


def test_a_message_over_128_kb_closes_the_connection_with_1009(stack: LocalStack) -> None:
    async def scenario() -> int | None:
        client = await Client.open(stack)
        await client.ws.send('{"event": "pusher:ping", "pad": "' + "x" * (128 * 1024) + '"}')
        await asyncio.wait_for(client.ws.wait_closed(), 10)
        return client.ws.close_code

    assert run(scenario) == 1009


def test_a_flood_of_client_events_is_refused_with_4301_and_others_are_unharmed(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The local gateway runs one connection's messages in turn (API Gateway runs them in
    # parallel), so a lower limit is what a flood exceeds here.
    monkeypatch.setenv("WEBSOCKET_CLIENT_EVENT_RATE", "2")
    reset_services()

    async def scenario() -> tuple[list[Any], int]:
        flooder, calm = await Client.open(stack), await Client.open(stack)
        for client, user in ((flooder, "f"), (calm, "c")):
            auth = await asyncio.to_thread(
                _service().authenticate_channel, client.socket_id, "presence-flood", user
            )
            frame = await client.subscribe("presence-flood", auth)
            assert frame["event"] == "pusher_internal:subscription_succeeded"
        await flooder.expect("pusher_internal:member_added")
        for i in range(25):
            await flooder.send("client-spam", {"i": i}, channel="presence-flood")
        errors = [
            f["data"]["code"]
            for f in await _frames_until_quiet(flooder, quiet=3)
            if f["event"] == "pusher:error"
        ]
        received = sum(f["event"] == "client-spam" for f in await _frames_until_quiet(calm))
        await calm.assert_nothing_pending()
        await flooder.close()
        await calm.close()
        return errors, received

    errors, received = run(scenario)
    reset_services()
    assert errors
    assert set(errors) == {4301}
    assert received + len(errors) == 25  # each one either relayed or refused, never lost


async def _frames_until_quiet(client: Client, quiet: float = 1.0) -> list[dict[str, Any]]:
    frames = []
    while True:
        try:
            frames.append(await asyncio.wait_for(client.next_frame(), quiet))
        except TimeoutError:
            return frames


def test_dropping_motos_model_tracking_keeps_the_connections_table_intact(
    stack: LocalStack,
) -> None:
    async def scenario() -> tuple[int, Any, dict[str, Any]]:
        client = await Client.open(stack)
        frame = await client.subscribe("public-trim")
        assert frame["event"] == "pusher_internal:subscription_succeeded"
        await asyncio.to_thread(_service().trigger, "public-trim", "before", 1)
        await client.expect("before")
        dropped = stack.aws.forget_tracked_models()
        result = await asyncio.to_thread(_service().trigger, "public-trim", "after", 2)
        frame = await client.expect("after")
        await client.close()
        return dropped, result, frame

    dropped, result, frame = run(scenario)
    assert dropped > 0
    assert result.delivered == 1
    assert frame["data"] == 2


def test_dual_publish_reaches_pusher_js_here_and_a_client_of_the_other_provider(
    stack: LocalStack, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from milequest.services import flags, get_service
    from milequest.services.routing import RoutedTriggerResult, RoutedWebSocketService
    from milequest.services.websocket.mock import MockWebSocketService

    flag_file = tmp_path / "flags.json"
    flag_file.write_text('{"websocket_dual_publish": {"default": true}}')
    monkeypatch.setenv("FEATURE_FLAGS_FILE", str(flag_file))
    monkeypatch.setenv("WEBSOCKET_SECONDARY_PROVIDER", "mock")
    reset_services()
    flags.reset_flags()
    try:
        routed = get_service("websocket")
        assert isinstance(routed, RoutedWebSocketService)
        other_side = routed.secondary
        assert isinstance(other_side, MockWebSocketService)
        with pusher_js_clients(1) as [client]:
            _connected(stack, client, "alice")
            client.subscribe("team-dual")
            elsewhere = other_side.add_subscriber("team-dual")
            result = routed.trigger("team-dual", "both", {"n": 1})
            assert isinstance(result, RoutedTriggerResult)
            assert {n: r.delivered for n, r in result.providers.items()} == {
                "apigateway": 1,
                "mock": 1,
            }
            assert client.wait_type("event", event="both")["data"] == {"n": 1}
            assert [f["event"] for f in other_side.received[elsewhere]] == ["both"]
    finally:
        reset_services()
        flags.reset_flags()
