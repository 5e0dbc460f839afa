"""One way to drive and observe each provider, so the contract suite runs against all three.

Every harness hands out Pusher-format socket ids and reports what a subscriber received as
``{"event", "channel", "data"}`` with ``data`` decoded from its JSON string, as pusher-js
would hand it to the application.
"""

from __future__ import annotations

import contextlib
import itertools
import json
from typing import Any, Protocol

from milequest.services.websocket import ConnectionService, WebSocketService, protocol
from milequest.services.websocket.apigateway import ApiGatewayWebSocketService
from milequest.services.websocket.mock import MockWebSocketService
from milequest.services.websocket.pusher import PusherWebSocketService

from .conftest import AsgiServer, new_connection_id
from .endpoints import ConnectionsState, PusherState

_INTERNAL = ("pusher:", "pusher_internal:")


def decoded(frame: dict[str, Any]) -> dict[str, Any]:
    """A wire frame with its ``data`` string decoded as pusher-js decodes it."""
    out = dict(frame)
    data = out.get("data")
    if isinstance(data, str):
        with contextlib.suppress(ValueError):
            out["data"] = json.loads(data)
    return out


def application_events(frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The frames an application sees as events (not protocol or presence internals)."""
    return [decoded(f) for f in frames if not str(f.get("event", "")).startswith(_INTERNAL)]


class Harness(Protocol):
    service: WebSocketService

    def new_socket_id(self) -> str: ...

    def add_subscriber(
        self, channel: str, user_id: str | None = None, user_info: dict[str, Any] | None = None
    ) -> str: ...

    def add_user_connection(self, user_id: str) -> str:
        """A connection signed in (``pusher:signin``) as ``user_id``; its socket id."""
        ...

    def received(self, socket_id: str) -> list[dict[str, Any]]: ...

    def network_calls(self) -> int: ...


class MockHarness:
    def __init__(self, service: MockWebSocketService) -> None:
        self.service = service

    def new_socket_id(self) -> str:
        return protocol.encode_socket_id(new_connection_id())

    def add_subscriber(
        self, channel: str, user_id: str | None = None, user_info: dict[str, Any] | None = None
    ) -> str:
        return self.service.socket_id(self.service.add_subscriber(channel, user_id, user_info))

    def add_user_connection(self, user_id: str) -> str:
        return _signed_in(self.service, self.service.add_connection(), user_id)

    def received(self, socket_id: str) -> list[dict[str, Any]]:
        frames = self.service.received.get(protocol.decode_socket_id(socket_id), [])
        return application_events(frames)

    def network_calls(self) -> int:
        return len(self.service.messages)


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

    def add_user_connection(self, user_id: str) -> str:
        return self.add_subscriber(protocol.server_to_user_channel(user_id))

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
        return protocol.encode_socket_id(new_connection_id())

    def add_subscriber(
        self, channel: str, user_id: str | None = None, user_info: dict[str, Any] | None = None
    ) -> str:
        connection_id = new_connection_id()
        socket_id = self.service.socket_id(connection_id)
        self.service.connect(connection_id)
        auth = data = None
        if protocol.is_private(channel):
            user = {"user_id": user_id, "user_info": user_info} if user_id else None
            signed = self.service.authenticate_channel(socket_id, channel, user)
            auth, data = signed["auth"], signed.get("channel_data")
        self.service.subscribe(connection_id, channel, auth, data)
        return socket_id

    def add_user_connection(self, user_id: str) -> str:
        connection_id = new_connection_id()
        self.service.connect(connection_id)
        return _signed_in(self.service, connection_id, user_id)

    def received(self, socket_id: str) -> list[dict[str, Any]]:
        return application_events(self.state.frames(protocol.decode_socket_id(socket_id)))

    def network_calls(self) -> int:
        with self.state.lock:
            return self.state.requests


def _signed_in(service: ConnectionService, connection_id: str, user_id: str) -> str:
    socket_id = service.socket_id(connection_id)
    signed = service.authenticate_user(socket_id, user_id)
    service.signin(connection_id, signed["auth"], signed["user_data"])
    return socket_id


class PusherApiHarness(ApiGatewayHarness):
    """The pusher provider publishing through our own Pusher HTTP API to API Gateway
    connections: subscribers are the apigateway provider's, requests cross real HTTP."""

    def __init__(
        self,
        service: PusherWebSocketService,
        backend: ApiGatewayWebSocketService,
        state: ConnectionsState,
        api: AsgiServer,
    ) -> None:
        super().__init__(backend, state)
        self.backend = backend
        self.service = service  # type: ignore[assignment]
        self.api = api

    def add_subscriber(
        self, channel: str, user_id: str | None = None, user_info: dict[str, Any] | None = None
    ) -> str:
        with _acting_as(self):
            return super().add_subscriber(channel, user_id, user_info)

    def add_user_connection(self, user_id: str) -> str:
        with _acting_as(self):
            return super().add_user_connection(user_id)

    def network_calls(self) -> int:
        return self.api.requests + super().network_calls()


class _acting_as:
    """Within the block, the harness's ``service`` is the apigateway backend (which holds
    the connections); outside it, the pusher provider under test."""

    def __init__(self, harness: PusherApiHarness) -> None:
        self.harness = harness

    def __enter__(self) -> None:
        self.saved = self.harness.service
        self.harness.service = self.harness.backend

    def __exit__(self, *exc: object) -> None:
        self.harness.service = self.saved
