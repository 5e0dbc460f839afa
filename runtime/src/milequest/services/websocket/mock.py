"""In-memory provider for tests and local development: same contract, no network."""

from __future__ import annotations

import base64
import json
import os
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, ClassVar

from milequest.services.health import HealthState
from milequest.services.metrics import MetricsSink

from . import protocol, webhooks
from .models import (
    BatchEvent,
    ChannelInfo,
    ChannelUser,
    PresenceUser,
    SubscriptionResult,
    TriggerResult,
    WebhookEvent,
)
from .protocol import is_presence
from .service import ConnectionService, WebSocketService
from .settings import PUSHER_DEFAULT_MAX_PAYLOAD


@dataclass(frozen=True)
class MockMessage:
    """One triggered event as the mock recorded it (``data`` as subscribers get it)."""

    channel: str
    event: str
    data: str
    socket_id: str | None = None


class MockWebSocketService(ConnectionService):
    """Connections, subscriptions and presence members held in memory.

    ``messages`` lists every triggered event; ``received[connection_id]`` the frames each
    connection got, decoded (``{"event", "channel"?, "data"}`` with ``data`` a JSON string,
    as on the wire); ``webhooks`` the signed webhooks (headers, body) it emitted;
    ``closed`` the connections it closed. ``latency_ms`` delays every call;
    :meth:`fail_next` makes the next calls raise.
    """

    provider_name: ClassVar[str] = "mock"

    def __init__(
        self,
        *,
        app_key: str | None = "mock-key",
        app_secret: str | None = "mock-secret",
        max_payload_bytes: int = PUSHER_DEFAULT_MAX_PAYLOAD,
        encryption_master_key: bytes | None = None,
        client_event_rate: int = 10,
        latency_ms: float = 0.0,
        webhook_url: str | None = None,
        metrics: MetricsSink | None = None,
    ) -> None:
        super().__init__(
            app_key=app_key,
            app_secret=app_secret,
            max_payload_bytes=max_payload_bytes,
            encryption_master_key=encryption_master_key,
            metrics=metrics,
        )
        self.latency_ms = latency_ms
        self.webhook_url = webhook_url
        self.client_event_rate = client_event_rate
        self.connections: dict[str, str | None] = {}
        self.subscriptions: dict[str, dict[str, PresenceUser | None]] = {}
        self.messages: list[MockMessage] = []
        self.received: dict[str, list[dict[str, Any]]] = {}
        self.webhooks: list[tuple[dict[str, str], bytes]] = []
        self.closed: list[str] = []
        self._client_events: dict[str, deque[float]] = {}
        self._failures: list[Exception] = []
        self._lock = threading.RLock()

    # The mock stands in for any provider in application tests, so any Pusher-format socket
    # id may be signed or excluded, not only the ids of its own connections.

    def _check_socket_id(self, socket_id: object) -> str:
        return WebSocketService._check_socket_id(self, socket_id)

    def _connection_of(self, socket_id: object) -> str:
        try:
            return protocol.decode_socket_id(socket_id)  # type: ignore[arg-type]
        except (ValueError, TypeError):
            return str(socket_id)  # a foreign id: excludes none of the mock's connections

    # -- test helpers ------------------------------------------------------------------------

    def add_connection(self, user_id: str | None = None) -> str:
        """Create a connection and return its id (its socket id is ``socket_id(id)``)."""
        connection_id = base64.urlsafe_b64encode(os.urandom(11)).decode()
        self.connect(connection_id, user_id)
        return connection_id

    def add_subscriber(
        self, channel: str, user_id: str | None = None, user_info: dict[str, Any] | None = None
    ) -> str:
        """A new connection already subscribed to ``channel`` (signed as a client would)."""
        connection_id = self.add_connection()
        auth = channel_data = None
        if protocol.is_private(channel):
            user = {"user_id": user_id, "user_info": user_info} if user_id else None
            signed = self.authenticate_channel(self.socket_id(connection_id), channel, user)
            auth, channel_data = signed["auth"], signed.get("channel_data")
        self.subscribe(connection_id, channel, auth, channel_data)
        return connection_id

    def fail_next(self, error: Exception, times: int = 1) -> None:
        """Make the next ``times`` provider calls raise ``error`` (mapped like a real one)."""
        with self._lock:
            self._failures.extend([error] * times)

    def reset(self) -> None:
        """Forget everything."""
        with self._lock:
            self.connections.clear()
            self.subscriptions.clear()
            self.messages.clear()
            self.received.clear()
            self.webhooks.clear()
            self.closed.clear()
            self._client_events.clear()
            self._failures.clear()

    # -- internals ---------------------------------------------------------------------------

    def _enter(self) -> None:
        if self.latency_ms:
            time.sleep(self.latency_ms / 1000)
        with self._lock:
            if self._failures:
                raise self._failures.pop(0)

    def _send(self, connection_id: str, frame: str) -> None:
        self.received.setdefault(connection_id, []).append(json.loads(frame))

    def _deliver(self, channel: str, frame: str, exclude: str | None) -> tuple[int, int]:
        delivered = excluded = 0
        for connection_id in list(self.subscriptions.get(channel, {})):
            if connection_id == exclude:
                excluded += 1
                continue
            self._send(connection_id, frame)
            delivered += 1
        return delivered, excluded

    def _webhook(self, events: list[WebhookEvent]) -> None:
        if not events or not self._app_key or not self._app_secret:
            return
        headers, body = webhooks.signed_webhook(self._app_key, self._app_secret, events)
        self.webhooks.append((headers, body))
        if self.webhook_url:
            webhooks.send_webhook(self.webhook_url, self._app_key, self._app_secret, events)

    def _members(self, channel: str) -> dict[str, dict[str, Any] | None]:
        members: dict[str, dict[str, Any] | None] = {}
        for member in self.subscriptions.get(channel, {}).values():
            if member is not None:
                members.setdefault(member.user_id, member.user_info)
        return members

    def _notify(self, channel: str, frame: str, user_id: str) -> None:
        for connection_id, other in self.subscriptions.get(channel, {}).items():
            if other is None or other.user_id != user_id:
                self._send(connection_id, frame)

    # -- WebSocketService hooks --------------------------------------------------------------

    def _publish(self, wanted: list[tuple[str, str, str, str | None]]) -> tuple[int, int]:
        """Deliver several (channel, event, data, excluded socket); delivered and excluded."""
        self._enter()
        delivered = excluded = 0
        with self._lock:
            for channel, event, data, socket_id in wanted:
                self.messages.append(MockMessage(channel, event, data, socket_id))
                exclude = self._connection_of(socket_id) if socket_id is not None else None
                d, e = self._deliver(channel, protocol.event(event, channel, data), exclude)
                delivered, excluded = delivered + d, excluded + e
        return delivered, excluded

    def _trigger(
        self, channels: list[str], event: str, data: str, socket_id: str | None
    ) -> TriggerResult:
        delivered, excluded = self._publish([(c, event, data, socket_id) for c in channels])
        return TriggerResult(channels=channels, delivered=delivered, excluded=excluded)

    def _trigger_batch(self, events: list[BatchEvent]) -> TriggerResult:
        delivered, excluded = self._publish(
            [(e.channel, e.name, e.data, e.socket_id) for e in events]
        )
        return TriggerResult(
            channels=list(dict.fromkeys(e.channel for e in events)),
            events=len(events),
            delivered=delivered,
            excluded=excluded,
        )

    def _channel_info(self, channel: str, attributes: tuple[str, ...]) -> ChannelInfo:
        self._enter()
        with self._lock:
            subs = self.subscriptions.get(channel, {})
            users = {m.user_id for m in subs.values() if m is not None}
        return ChannelInfo(
            channel=channel,
            occupied=bool(subs),
            subscription_count=len(subs) if "subscription_count" in attributes else None,
            user_count=len(users) if "user_count" in attributes else None,
        )

    def _channels(self, prefix: str, attributes: tuple[str, ...]) -> dict[str, ChannelInfo]:
        self._enter()
        with self._lock:
            return {
                name: ChannelInfo(
                    channel=name,
                    occupied=True,
                    user_count=len(self._members(name)) if "user_count" in attributes else None,
                )
                for name, subs in self.subscriptions.items()
                if subs and name.startswith(prefix) and protocol.server_to_user_id(name) is None
            }

    def _channel_users(self, channel: str) -> list[ChannelUser]:
        self._enter()
        with self._lock:
            return [ChannelUser(id=u, user_info=i) for u, i in self._members(channel).items()]

    def _terminate_user(self, user_id: str) -> int:
        self._enter()
        channel = protocol.server_to_user_channel(user_id)
        with self._lock:
            targets = list(self.subscriptions.get(channel, {}))
            notice = protocol.error("Connection terminated by the application", 4009)
            for connection_id in targets:
                self._send(connection_id, notice)
                self.closed.append(connection_id)
        for connection_id in targets:
            self._drop(connection_id)
        return len(targets)

    def _probe(self) -> tuple[HealthState, dict[str, Any]]:
        self._enter()
        return HealthState.HEALTHY, {"connections": len(self.connections)}

    # -- connection lifecycle ----------------------------------------------------------------

    def _connect(self, connection_id: str, user_id: str | None) -> None:
        self._enter()
        with self._lock:
            self.connections[connection_id] = user_id

    def _announce(self, connection_id: str, frame: bytes, close: bool) -> bool:
        self._enter()
        with self._lock:
            if connection_id not in self.connections and not close:
                return False  # never connected, or gone already
            self._send(connection_id, frame.decode())
            if close:
                self.closed.append(connection_id)
        if close:
            self._drop(connection_id)
        return True

    def _disconnect(self, connection_id: str) -> None:
        self._enter()
        self._drop(connection_id)

    def _drop(self, connection_id: str) -> None:
        hooks: list[WebhookEvent] = []
        with self._lock:
            for channel in [c for c, s in self.subscriptions.items() if connection_id in s]:
                hooks.extend(self._remove(connection_id, channel))
            self.connections.pop(connection_id, None)
            self._client_events.pop(connection_id, None)
        self._webhook(hooks)

    def _known(self, connection_id: str) -> None:
        if connection_id not in self.connections:
            raise self._error("CONNECTION_GONE", f"unknown connection {connection_id!r}")

    def _subscribe(
        self, connection_id: str, channel: str, member: PresenceUser | None
    ) -> SubscriptionResult:
        self._enter()
        hooks: list[WebhookEvent] = []
        with self._lock:
            self._known(connection_id)
            subs = self.subscriptions.setdefault(channel, {})
            if connection_id in subs:
                members = self._members(channel) if is_presence(channel) else None
                return SubscriptionResult(channel=channel, members=members, already_subscribed=True)
            if not subs:
                hooks.append(WebhookEvent(name="channel_occupied", channel=channel))
            first = member is not None and member.user_id not in self._members(channel)
            subs[connection_id] = member
            if member is not None and first:
                hooks.append(
                    WebhookEvent(name="member_added", channel=channel, user_id=member.user_id)
                )
                notice = protocol.member_added(channel, member.user_id, member.user_info)
                self._notify(channel, notice, member.user_id)
            members = self._members(channel) if member is not None else None
        self._webhook(hooks)
        return SubscriptionResult(channel=channel, members=members)

    def _subscribe_user_channel(self, connection_id: str, user_id: str) -> SubscriptionResult:
        self._enter()
        channel = protocol.server_to_user_channel(user_id)
        with self._lock:
            self._known(connection_id)
            if self.connections[connection_id] != user_id:
                raise self._error("UNAUTHORIZED", "sign in as this user to join its channel")
            subs = self.subscriptions.setdefault(channel, {})
            existed = connection_id in subs
            subs[connection_id] = None
        return SubscriptionResult(channel=channel, already_subscribed=existed)

    def _signin(self, connection_id: str, user_id: str) -> None:
        self._enter()
        with self._lock:
            self._known(connection_id)
            self.connections[connection_id] = user_id
            channel = protocol.server_to_user_channel(user_id)
            self.subscriptions.setdefault(channel, {})[connection_id] = None

    def _unsubscribe(self, connection_id: str, channel: str) -> bool:
        self._enter()
        with self._lock:
            existed = connection_id in self.subscriptions.get(channel, {})
            hooks = self._remove(connection_id, channel)
        self._webhook(hooks)
        return existed

    def _remove(self, connection_id: str, channel: str) -> list[WebhookEvent]:
        """Drop one subscription; returns the webhook events to send once unlocked."""
        subs = self.subscriptions.get(channel, {})
        if connection_id not in subs:
            return []
        member = subs.pop(connection_id)
        internal = protocol.server_to_user_id(channel) is not None
        hooks: list[WebhookEvent] = []
        if member is not None and member.user_id not in self._members(channel):
            hooks.append(
                WebhookEvent(name="member_removed", channel=channel, user_id=member.user_id)
            )
            self._notify(channel, protocol.member_removed(channel, member.user_id), member.user_id)
        if not subs:
            self.subscriptions.pop(channel, None)
            if not internal:
                hooks.append(WebhookEvent(name="channel_vacated", channel=channel))
        return hooks

    def _client_event(
        self, connection_id: str, channel: str, event: str, data: str
    ) -> TriggerResult:
        self._enter()
        with self._lock:
            subs = self.subscriptions.get(channel, {})
            if connection_id not in subs:
                raise self._error("FORBIDDEN", f"connection has not joined {channel!r}")
            now = time.monotonic()
            window = self._client_events.setdefault(connection_id, deque())
            while window and now - window[0] >= 1.0:
                window.popleft()
            if len(window) >= self.client_event_rate:
                raise self._error(
                    "RATE_LIMITED", f"more than {self.client_event_rate} client events per second"
                )
            window.append(now)
            member = subs[connection_id]
            user_id = member.user_id if member else None
            frame = protocol.event(event, channel, data, user_id=user_id)
            delivered, excluded = self._deliver(channel, frame, connection_id)
        self._webhook(
            [
                WebhookEvent(
                    name="client_event",
                    channel=channel,
                    event=event,
                    data=data,
                    socket_id=protocol.encode_socket_id(connection_id),
                    user_id=user_id,
                )
            ]
        )
        return TriggerResult(channels=[channel], delivered=delivered, excluded=excluded)
