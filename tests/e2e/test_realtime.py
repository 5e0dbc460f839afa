"""Real WebSocket clients against the local stack: authorizer, channels, presence, cleanup."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import boto3
import httpx
import pytest
from milequest.local import LocalStack
from milequest.services.websocket import WebSocketService, create_websocket_service
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from .conftest import Client, run

pytestmark = pytest.mark.slow

API_GATEWAY_ID = re.compile(r"\A[A-Za-z0-9=]{16}\Z")


def _service() -> WebSocketService:
    return create_websocket_service()


async def _trigger(channel: str, event: str, data: Any, socket_id: str | None = None) -> Any:
    return await asyncio.to_thread(_service().trigger, channel, event, data, socket_id)


async def _channel_auth(stack: LocalStack, user_id: str, socket_id: str, channel: str) -> Any:
    async with httpx.AsyncClient(base_url=stack.urls["http"]) as http:
        response = await http.post(
            "/realtime/auth",
            data={"socket_id": socket_id, "channel_name": channel},
            headers={"Authorization": f"Bearer {stack.connection_token(user_id)}"},
        )
    assert response.status_code == 200, response.text
    return response.json()


def test_the_authorizer_refuses_a_bad_or_missing_token(stack: LocalStack) -> None:
    async def scenario() -> list[int]:
        statuses = []
        for query in ("?token=forged.token", "?token=" + stack.connection_token("a") + "x", ""):
            with pytest.raises(InvalidStatus) as refused:
                async with connect(stack.urls["websocket"] + query):
                    pass
            statuses.append(refused.value.response.status_code)
        return statuses

    assert run(scenario) == [401, 401, 401]
    assert stack.gateway.connections == {}


def test_a_client_learns_its_socket_id_with_a_query_or_header_token(stack: LocalStack) -> None:
    async def scenario() -> tuple[str, str, dict[str, Any]]:
        by_query = await Client.open(stack, "alice")
        by_header = await Client.open(stack, "bob", header=True)
        api = boto3.client(
            "apigatewaymanagementapi", endpoint_url=stack.env["APIGW_MANAGEMENT_ENDPOINT"]
        )
        info = await asyncio.to_thread(api.get_connection, ConnectionId=by_header.socket_id)
        await by_query.close()
        await by_header.close()
        return by_query.socket_id, by_header.socket_id, info

    first, second, info = run(scenario)
    assert API_GATEWAY_ID.match(first)
    assert API_GATEWAY_ID.match(second)
    assert first != second
    assert info["Identity"]["SourceIp"] == "127.0.0.1"


def test_public_channel_events_honour_socket_id_exclusion(stack: LocalStack) -> None:
    async def scenario() -> Any:
        sender, receiver = await Client.open(stack, "alice"), await Client.open(stack, "bob")
        for client in (sender, receiver):
            reply = await client.subscribe("public-e2e")
            assert reply["event"] == "subscription_succeeded", reply
        result = await _trigger("public-e2e", "activity-update", {"km": 5.2}, sender.socket_id)
        frame = await receiver.expect("activity-update")
        await sender.assert_nothing_pending()
        await sender.close()
        await receiver.close()
        return result, frame

    result, frame = run(scenario)
    assert frame == {"event": "activity-update", "channel": "public-e2e", "data": {"km": 5.2}}
    assert (result.delivered, result.excluded, result.gone) == (1, 1, 0)


def test_private_channel_with_auth_from_the_http_app(stack: LocalStack) -> None:
    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        client = await Client.open(stack, "alice")
        auth = await _channel_auth(stack, "alice", client.socket_id, "private-team-1")
        reply = await client.subscribe("private-team-1", auth)
        await _trigger("private-team-1", "goal-reached", {"team": 1})
        frame = await client.expect("goal-reached")
        await client.close()
        return reply, frame

    reply, frame = run(scenario)
    assert reply == {"event": "subscription_succeeded", "channel": "private-team-1", "data": {}}
    assert frame["data"] == {"team": 1}


def test_a_forged_private_signature_gets_an_error_frame_and_no_events(stack: LocalStack) -> None:
    async def scenario() -> tuple[dict[str, Any], Any]:
        intruder = await Client.open(stack, "mallory")
        real = await _channel_auth(stack, "mallory", intruder.socket_id, "private-other")
        # A valid signature for another channel, replayed for this one.
        reply = await intruder.subscribe("private-secret", {"auth": real["auth"]})
        result = await _trigger("private-secret", "salary", {"amount": 1})
        await intruder.assert_nothing_pending()
        await intruder.close()
        return reply, result

    reply, result = run(scenario)
    assert reply["event"] == "subscription_error"
    assert reply["data"]["code"] == "UNAUTHORIZED"
    assert result.delivered == 0


def test_presence_members_are_added_and_removed(stack: LocalStack) -> None:
    async def scenario() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        alice, bob = await Client.open(stack, "alice"), await Client.open(stack, "bob")
        channel = "presence-race-7"
        first = await alice.subscribe(
            channel, await _channel_auth(stack, "alice", alice.socket_id, channel)
        )
        assert first["data"]["presence"]["ids"] == ["alice"], first
        joined = await bob.subscribe(
            channel, await _channel_auth(stack, "bob", bob.socket_id, channel)
        )
        added = await alice.expect("member_added")
        await bob.close()
        removed = await alice.expect("member_removed")
        await alice.close()
        return joined, added, removed

    joined, added, removed = run(scenario)
    assert sorted(joined["data"]["presence"]["ids"]) == ["alice", "bob"]
    assert added["data"]["user_id"] == "bob"
    assert removed["data"]["user_id"] == "bob"


def test_client_events_reach_the_other_members_only(stack: LocalStack) -> None:
    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        alice, bob = await Client.open(stack, "alice"), await Client.open(stack, "bob")
        channel = "private-chat-3"
        for client, user in ((alice, "alice"), (bob, "bob")):
            auth = await _channel_auth(stack, user, client.socket_id, channel)
            assert (await client.subscribe(channel, auth))["event"] == "subscription_succeeded"
        ack = await alice.request(
            {
                "action": "client-event",
                "channel": channel,
                "event": "client-typing",
                "data": {"who": "alice"},
            },
            "client_event_sent",
        )
        got = await bob.expect("client-typing")
        await alice.assert_nothing_pending()
        await alice.close()
        await bob.close()
        return ack, got

    ack, got = run(scenario)
    assert ack["data"]["delivered"] == 1
    assert got == {"event": "client-typing", "channel": "private-chat-3", "data": {"who": "alice"}}


def test_an_abruptly_dropped_client_is_cleaned_up_on_the_next_trigger(
    stack: LocalStack,
) -> None:
    async def scenario() -> tuple[Any, Any, list[Any]]:
        stays, drops = await Client.open(stack, "alice"), await Client.open(stack, "bob")
        for client in (stays, drops):
            assert (await client.subscribe("public-drop"))["event"] == "subscription_succeeded"
        dropped_id = drops.socket_id
        drops.ws.transport.abort()  # TCP gone, no close frame: $disconnect never arrives
        async with asyncio.timeout(10):
            while dropped_id in stack.gateway.connections:
                await asyncio.sleep(0.02)
        first = await _trigger("public-drop", "tick", 1)
        await stays.expect("tick")
        second = await _trigger("public-drop", "tick", 2)
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
        client = await Client.open(stack, "alice")
        await client.ws.send('{"action": "ping", "pad": "' + "x" * (128 * 1024) + '"}')
        await asyncio.wait_for(client.ws.wait_closed(), 10)
        return client.ws.close_code

    assert run(scenario) == 1009


def test_dropping_motos_model_tracking_keeps_the_connections_table_intact(
    stack: LocalStack,
) -> None:
    async def scenario() -> tuple[int, Any, dict[str, Any]]:
        client = await Client.open(stack, "alice")
        assert (await client.subscribe("public-trim"))["event"] == "subscription_succeeded"
        await _trigger("public-trim", "before", 1)
        await client.expect("before")
        dropped = stack.aws.forget_tracked_models()
        result = await _trigger("public-trim", "after", 2)
        frame = await client.expect("after")
        await client.close()
        return dropped, result, frame

    dropped, result, frame = run(scenario)
    assert dropped > 0
    assert result.delivered == 1
    assert frame["data"] == 2
