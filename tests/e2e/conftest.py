"""The local stack on free ports, and a small real WebSocket client for the scenarios."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest
from milequest.local import LocalStack, LocalStackConfig
from websockets.asyncio.client import ClientConnection, connect

T = TypeVar("T")
WAIT_S = 10.0


def stack_config(**overrides: Any) -> LocalStackConfig:
    """Every port free, and ``$disconnect`` never sent for vanished clients (the 410 path)."""
    options: dict[str, Any] = {
        "aws_port": 0,
        "gateway_port": 0,
        "management_port": 0,
        "http_port": 0,
        "smtp_port": 0,
        "lost_disconnect_delay": None,
        "email_delivery": "direct",  # sent before the call returns; the queue has its tests
    }
    options.update(overrides)
    return LocalStackConfig(**options)


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    with LocalStack(stack_config()) as running:
        yield running


def run(scenario: Callable[[], Awaitable[T]], timeout: float = 60.0) -> T:
    """Run an async scenario with an overall bound, so nothing can hang the suite."""

    async def bounded() -> T:
        return await asyncio.wait_for(scenario(), timeout)

    return asyncio.run(bounded())


PUSHER_JS_QUERY = "protocol=7&client=js&version=8.6.0&flash=false"


class Client:
    """A raw WebSocket client speaking the Pusher protocol (for what pusher-js hides)."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.socket_id = ""

    @classmethod
    async def open(cls, stack: LocalStack, query: str = PUSHER_JS_QUERY) -> Client:
        """Connect as pusher-js does and wait for ``pusher:connection_established``."""
        client = cls(await connect(f"{stack.urls['websocket']}?{query}"))
        frame = await client.expect("pusher:connection_established")
        client.socket_id = frame["data"]["socket_id"]
        return client

    async def send(self, event: str, data: Any = None, channel: str | None = None) -> None:
        message: dict[str, Any] = {"event": event, "data": data if data is not None else {}}
        if channel is not None:
            message["channel"] = channel
        await self.ws.send(json.dumps(message))

    async def next_frame(self) -> dict[str, Any]:
        """The next frame, ``data`` decoded from its JSON string."""
        raw = await asyncio.wait_for(self.ws.recv(), WAIT_S)
        frame: dict[str, Any] = json.loads(raw)
        if isinstance(frame.get("data"), str):
            with contextlib.suppress(ValueError):
                frame["data"] = json.loads(frame["data"])
        return frame

    async def expect(self, event: str) -> dict[str, Any]:
        """The next frame, which must be ``event``."""
        frame = await self.next_frame()
        assert frame.get("event") == event, frame
        return frame

    async def subscribe(self, channel: str, auth: dict[str, str] | None = None) -> dict[str, Any]:
        """Subscribe; the reply (``subscription_succeeded`` or ``subscription_error``)."""
        await self.send("pusher:subscribe", {"channel": channel, **(auth or {})})
        return await self.next_frame()

    async def assert_nothing_pending(self) -> None:
        """No frame arrived before now: a ping's pong is the very next frame.

        A trigger returns once every post to the gateway is done and the gateway keeps a
        connection's frames in order, so an event for this client would come before the pong.
        """
        await self.send("pusher:ping")
        await self.expect("pusher:pong")

    async def close(self) -> None:
        await self.ws.close()
