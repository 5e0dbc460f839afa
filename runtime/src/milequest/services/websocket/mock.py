"""In-memory provider for tests and local development: same contract, no network."""

from __future__ import annotations

import itertools
import re
import threading
import time
from dataclasses import dataclass
from typing import Any, ClassVar

from milequest.services.health import HealthState
from milequest.services.metrics import MetricsSink

from . import webhooks
from .models import (
    BatchEvent,
    ChannelInfo,
    ChannelUser,
    PresenceUser,
    SubscriptionResult,
    TriggerResult,
    WebhookEvent,
)
from .service import (
    APIGATEWAY_CONNECTION_ID_RE,
    PUSHER_SOCKET_ID_RE,
    ConnectionService,
    encode_data,
    is_presence,
)
from .settings import PUSHER_DEFAULT_MAX_PAYLOAD


@dataclass(frozen=True)
class MockMessage:
    """One triggered event as the mock recorded it."""

    channel: str
    event: str
    data: Any
    socket_id: str | None = None


# Tests use either Pusher socket ids or API Gateway connection ids with the mock.
_EITHER_SOCKET_ID_RE = re.compile(
    rf"(?:{PUSHER_SOCKET_ID_RE.pattern})|(?:{APIGATEWAY_CONNECTION_ID_RE.pattern})"
)


class MockWebSocketService(ConnectionService):
    """Connections, subscriptions and presence members held in memory.

    ``messages`` lists every triggered event; ``received[socket_id]`` what each connection
    got (frames ``{"event", "channel", "data"}``); ``webhooks`` the signed webhooks
    (headers, body) it emitted. ``latency_ms`` delays every call; :meth:`fail_next` makes
    the next calls raise.
    """

    provider_name: ClassVar[str] = "mock"
    socket_id_pattern: ClassVar[re.Pattern[str]] = _EITHER_SOCKET_ID_RE

    def __init__(
        self,
        *,
        app_key: str | None = "mock-key",
        app_secret: str | None = "mock-secret",
        max_payload_bytes: int = PUSHER_DEFAULT_MAX_PAYLOAD,
        latency_ms: float = 0.0,
        webhook_url: str | None = None,
        metrics: MetricsSink | None = None,
    ) -> None:
        super().__init__(
            app_key=app_key,
            app_secret=app_secret,
            max_payload_bytes=max_payload_bytes,
            metrics=metrics,
        )
        self.latency_ms = latency_ms
        self.webhook_url = webhook_url
        self.connections: dict[str, str | None] = {}
        self.subscriptions: dict[str, dict[str, PresenceUser | None]] = {}
        self.messages: list[MockMessage] = []
        self.received: dict[str, list[dict[str, Any]]] = {}
        self.webhooks: list[tuple[dict[str, str], bytes]] = []
        self._failures: list[Exception] = []
        self._ids = itertools.count(1)
        self._lock = threading.RLock()

    # -- test helpers ------------------------------------------------------------------------

    def add_connection(self, user_id: str | None = None, socket_id: str | None = None) -> str:
        """Create a connection (a Pusher-style socket id unless given) and return its id."""
        sid = socket_id or f"{next(self._ids)}.{time.time_ns() % 1_000_000}"
        self.connect(sid, user_id)
        return sid

    def add_subscriber(
        self, channel: str, user_id: str | None = None, user_info: dict[str, Any] | None = None
    ) -> str:
        """A new connection already subscribed to ``channel`` (signed as a client would)."""
        sid = self.add_connection(user_id)
        auth = channel_data = None
        if channel.startswith(("private-", "presence-")):
            user = {"user_id": user_id, "user_info": user_info} if user_id else None
            signed = self.authenticate_channel(sid, channel, user)
            auth, channel_data = signed["auth"], signed.get("channel_data")
        self.subscribe(sid, channel, auth, channel_data)
        return sid

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
            self._failures.clear()

    # -- internals ---------------------------------------------------------------------------

    def _enter(self) -> None:
        if self.latency_ms:
            time.sleep(self.latency_ms / 1000)
        with self._lock:
            if self._failures:
                raise self._failures.pop(0)

    def _deliver(
        self, channel: str, event: str, data: Any, exclude: str | None, *, record: bool = True
    ) -> tuple[int, int]:
        if record:
            self.messages.append(MockMessage(channel, event, data, exclude))
        delivered = excluded = 0
        for sid in list(self.subscriptions.get(channel, {})):
            if sid == exclude:
                excluded += 1
                continue
            self.received.setdefault(sid, []).append(
                {"event": event, "channel": channel, "data": data}
            )
            delivered += 1
        return delivered, excluded

    def _webhook(self, events: list[WebhookEvent]) -> None:
        if not events or not self._app_key or not self._app_secret:
            return
        headers, body = webhooks.signed_webhook(self._app_key, self._app_secret, events)
        self.webhooks.append((headers, body))
        if self.webhook_url:
            webhooks.send_webhook(self.webhook_url, self._app_key, self._app_secret, events)

    # -- WebSocketService hooks --------------------------------------------------------------

    def _publish(self, wanted: list[tuple[str, str, Any, str | None]]) -> tuple[int, int]:
        """Deliver several (channel, event, data, excluded socket); delivered and excluded."""
        self._enter()
        delivered = excluded = 0
        with self._lock:
            for channel, event, data, exclude in wanted:
                d, e = self._deliver(channel, event, data, exclude)
                delivered, excluded = delivered + d, excluded + e
        return delivered, excluded

    def _trigger(
        self, channels: list[str], event: str, data: Any, socket_id: str | None
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

    def _channel_users(self, channel: str) -> list[ChannelUser]:
        self._enter()
        with self._lock:
            return [ChannelUser(id=u, user_info=i) for u, i in self._members(channel).items()]

    def _members(self, channel: str) -> dict[str, dict[str, Any] | None]:
        members: dict[str, dict[str, Any] | None] = {}
        for member in self.subscriptions.get(channel, {}).values():
            if member is not None:
                members.setdefault(member.user_id, member.user_info)
        return members

    def _probe(self) -> tuple[HealthState, dict[str, Any]]:
        self._enter()
        return HealthState.HEALTHY, {"connections": len(self.connections)}

    # -- connection lifecycle ----------------------------------------------------------------

    def _connect(self, connection_id: str, user_id: str | None) -> None:
        self._enter()
        with self._lock:
            self.connections[connection_id] = user_id

    def _disconnect(self, connection_id: str) -> None:
        self._enter()
        hooks: list[WebhookEvent] = []
        with self._lock:
            for channel in [c for c, s in self.subscriptions.items() if connection_id in s]:
                hooks.extend(self._remove(connection_id, channel))
            self.connections.pop(connection_id, None)
        self._webhook(hooks)

    def _subscribe(
        self, connection_id: str, channel: str, member: PresenceUser | None
    ) -> SubscriptionResult:
        self._enter()
        hooks: list[WebhookEvent] = []
        with self._lock:
            if connection_id not in self.connections:
                raise self._error("CONNECTION_GONE", f"unknown connection {connection_id!r}")
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
                self._notify(channel, "member_added", member.model_dump(), member.user_id)
            members = self._members(channel) if member is not None else None
        self._webhook(hooks)
        return SubscriptionResult(channel=channel, members=members)

    def _notify(self, channel: str, event: str, data: Any, user_id: str) -> None:
        for sid, other in self.subscriptions.get(channel, {}).items():
            if other is None or other.user_id != user_id:
                self.received.setdefault(sid, []).append(
                    {"event": event, "channel": channel, "data": data}
                )

    def _unsubscribe(self, connection_id: str, channel: str) -> None:
        self._enter()
        with self._lock:
            hooks = self._remove(connection_id, channel)
        self._webhook(hooks)

    def _remove(self, connection_id: str, channel: str) -> list[WebhookEvent]:
        """Drop one subscription; returns the webhook events to send once unlocked."""
        subs = self.subscriptions.get(channel, {})
        if connection_id not in subs:
            return []
        member = subs.pop(connection_id)
        hooks: list[WebhookEvent] = []
        if member is not None and member.user_id not in self._members(channel):
            hooks.append(
                WebhookEvent(name="member_removed", channel=channel, user_id=member.user_id)
            )
            self._notify(channel, "member_removed", {"user_id": member.user_id}, member.user_id)
        if not subs:
            self.subscriptions.pop(channel, None)
            hooks.append(WebhookEvent(name="channel_vacated", channel=channel))
        return hooks

    def _client_event(
        self, connection_id: str, channel: str, event: str, data: Any
    ) -> TriggerResult:
        self._enter()
        with self._lock:
            subs = self.subscriptions.get(channel, {})
            if connection_id not in subs:
                raise self._error("FORBIDDEN", f"connection has not joined {channel!r}")
            member = subs[connection_id]
            delivered, excluded = self._deliver(channel, event, data, connection_id, record=False)
        self._webhook(
            [
                WebhookEvent(
                    name="client_event",
                    channel=channel,
                    event=event,
                    data=encode_data(data),
                    socket_id=connection_id,
                    user_id=member.user_id if member else None,
                )
            ]
        )
        return TriggerResult(channels=[channel], delivered=delivered, excluded=excluded)
