"""One way to drive and observe each provider, so the contract suite runs against all three."""

from __future__ import annotations

import itertools
from typing import Any, Protocol

from milequest.services.websocket import WebSocketService
from milequest.services.websocket.apigateway import ApiGatewayWebSocketService
from milequest.services.websocket.mock import MockWebSocketService
from milequest.services.websocket.pusher import PusherWebSocketService

from .conftest import new_connection_id
from .endpoints import ConnectionsState, PusherState


class Harness(Protocol):
    service: WebSocketService

    def new_socket_id(self) -> str: ...

    def add_subscriber(
        self, channel: str, user_id: str | None = None, user_info: dict[str, Any] | None = None
    ) -> str: ...

    def received(self, socket_id: str) -> list[dict[str, Any]]: ...

    def network_calls(self) -> int: ...


class MockHarness:
    def __init__(self, service: MockWebSocketService) -> None:
        self.service = service
        self._ids = itertools.count(1)

    def new_socket_id(self) -> str:
        return f"{next(self._ids)}.999"

    def add_subscriber(
        self, channel: str, user_id: str | None = None, user_info: dict[str, Any] | None = None
    ) -> str:
        return self.service.add_subscriber(channel, user_id, user_info)

    def received(self, socket_id: str) -> list[dict[str, Any]]:
        return [m for m in self.service.received.get(socket_id, []) if m["event"] not in _PRESENCE]

    def network_calls(self) -> int:
        return len(self.service.messages)


_PRESENCE = {"member_added", "member_removed"}


class PusherHarness:
    """Subscribers live in the local Pusher server, as a real Pusher app would hold them."""

    def __init__(self, service: PusherWebSocketService, state: PusherState) -> None:
        self.service = service
        self.state = state
        self._ids = itertools.count(1)

    def new_socket_id(self) -> str:
        return f"{next(self._ids)}.{next(self._ids)}"

    def add_subscriber(
        self, channel: str, user_id: str | None = None, user_info: dict[str, Any] | None = None
    ) -> str:
        sid = self.new_socket_id()
        with self.state.lock:
            self.state.channels.setdefault(channel, {})[sid] = user_id
        return sid

    def received(self, socket_id: str) -> list[dict[str, Any]]:
        with self.state.lock:
            return list(self.state.received.get(socket_id, []))

    def network_calls(self) -> int:
        with self.state.lock:
            return len(self.state.requests) + self.state.rejected_signatures


class ApiGatewayHarness:
    """Subscribers are connections stored through the provider and reached over @connections."""

    def __init__(self, service: ApiGatewayWebSocketService, state: ConnectionsState) -> None:
        self.service = service
        self.state = state

    def new_socket_id(self) -> str:
        return new_connection_id()

    def add_subscriber(
        self, channel: str, user_id: str | None = None, user_info: dict[str, Any] | None = None
    ) -> str:
        sid = self.new_socket_id()
        self.service.connect(sid, user_id)
        auth = data = None
        if channel.startswith(("private-", "presence-")):
            user = {"user_id": user_id, "user_info": user_info} if user_id else None
            signed = self.service.authenticate_channel(sid, channel, user)
            auth, data = signed["auth"], signed.get("channel_data")
        self.service.subscribe(sid, channel, auth, data)
        return sid

    def received(self, socket_id: str) -> list[dict[str, Any]]:
        return [f for f in self.state.frames(socket_id) if f["event"] not in _PRESENCE]

    def network_calls(self) -> int:
        with self.state.lock:
            return self.state.requests
