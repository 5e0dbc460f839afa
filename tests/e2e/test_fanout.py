"""Sharded fan-out through the whole local stack: a trigger queues shards on the embedded SQS,
the stack's fan-out workers run ``milequest.handlers.fanout`` and post through the gateway's
management API to real WebSocket clients speaking the Pusher protocol."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

import pytest
from milequest.local import LocalStack
from milequest.services.websocket import create_websocket_service, protocol

from .conftest import Client, run, stack_config

THRESHOLD = 5  # channels with more subscribers than this are sharded...
SHARD_SIZE = 4  # ...into shards of this many connections


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    with pytest.MonkeyPatch.context() as env:
        # Every service of this process (the HTTP app's, the workers') reads these.
        env.setenv("WEBSOCKET_FANOUT_THRESHOLD", str(THRESHOLD))
        env.setenv("WEBSOCKET_FANOUT_SHARD_SIZE", str(SHARD_SIZE))
        with LocalStack(stack_config(fanout_workers=3)) as running:
            yield running


async def _subscribed(stack: LocalStack, channel: str, count: int) -> list[Client]:
    clients = await asyncio.gather(*(Client.open(stack) for _ in range(count)))
    for client in clients:
        reply = await client.subscribe(channel)
        assert reply["event"] == "pusher_internal:subscription_succeeded", reply
    return list(clients)


async def _received(client: Client, event: str) -> list[object]:
    """The ``event`` payloads the client got, once nothing else is on its way."""
    payloads = []
    while True:
        frame = await client.next_frame()
        if frame["event"] == event:
            payloads.append(frame["data"])
        elif frame["event"] == "pusher:pong":
            return payloads
        if len(payloads) == 1:
            await client.send("pusher:ping")  # everything posted before comes first


def _wait_until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_a_large_channel_is_delivered_by_the_workers_exactly_once(stack: LocalStack) -> None:
    async def scenario() -> None:
        clients = await _subscribed(stack, "stadium", 14)
        sender = clients[0]
        service = create_websocket_service()
        result = await asyncio.to_thread(
            service.trigger, "stadium", "goal", {"minute": 90}, sender.socket_id
        )
        assert (result.delivered, result.excluded, result.queued, result.shards) == (0, 1, 13, 4)
        for client in clients[1:]:
            assert await _received(client, "goal") == [{"minute": 90}]
        await sender.assert_nothing_pending()  # excluded, as with Pusher
        for client in clients:
            await client.close()

    run(scenario)


def test_a_small_channel_is_still_delivered_inline(stack: LocalStack) -> None:
    async def scenario() -> None:
        clients = await _subscribed(stack, "team", THRESHOLD)
        service = create_websocket_service()
        result = await asyncio.to_thread(service.trigger, "team", "ping", 1)
        assert (result.delivered, result.shards) == (THRESHOLD, 0)
        for client in clients:
            assert await _received(client, "ping") == [1]
            await client.close()

    run(scenario)


def test_vanished_clients_are_cleaned_up_by_the_workers(stack: LocalStack) -> None:
    async def scenario() -> None:
        clients = await _subscribed(stack, "arena", 9)
        vanished = clients[:3]
        for client in vanished:  # gone without $disconnect (the stack sends none here)
            client.ws.transport.abort()
        service = create_websocket_service()
        ids = {protocol.decode_socket_id(c.socket_id) for c in vanished}
        await asyncio.to_thread(_wait_until, lambda: not ids & set(stack.gateway.connections), 10.0)
        result = await asyncio.to_thread(service.trigger, "arena", "ev", "x")
        assert result.queued == 9
        for client in clients[3:]:
            assert await _received(client, "ev") == ["x"]
        await asyncio.to_thread(
            _wait_until, lambda: service.get_channel_info("arena").subscription_count == 6
        )
        for client in clients[3:]:
            await client.close()

    run(scenario)


def test_pushers_http_api_shards_a_large_channel_too(stack: LocalStack) -> None:
    import pusher

    async def scenario() -> None:
        clients = await _subscribed(stack, "crowd", 8)
        sdk = pusher.Pusher(**stack.pusher_sdk_settings())
        await asyncio.to_thread(sdk.trigger, "crowd", "wave", {"n": 1})
        for client in clients:
            assert await _received(client, "wave") == [{"n": 1}]
            await client.close()

    run(scenario)
