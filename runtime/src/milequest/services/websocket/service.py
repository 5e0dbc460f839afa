"""The WebSocket service interface: validation and signing shared by every provider."""

from __future__ import annotations

import json
import re
from abc import abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar

from pydantic import ValidationError

from milequest.services.base import BaseService
from milequest.services.metrics import MetricsSink

from . import signing, webhooks
from .errors import WebSocketError, WebSocketErrorCode
from .models import (
    BatchEvent,
    ChannelInfo,
    ChannelUser,
    PresenceUser,
    SubscriptionResult,
    TriggerResult,
    WebhookEvent,
)

CHANNEL_RE = re.compile(r"\A[-a-zA-Z0-9_=@,.;]+\Z")
PUSHER_SOCKET_ID_RE = re.compile(r"\A\d+\.\d+\Z")
# API Gateway connection ids look like "L0SM9cOFvHcCIhw=" (base64-like); local gateways use
# other url-safe ids, so accept the base64 and url-safe alphabets.
APIGATEWAY_CONNECTION_ID_RE = re.compile(r"\A[A-Za-z0-9+/=_-]{1,128}\Z")
MAX_CHANNEL_LENGTH = 200
MAX_EVENT_LENGTH = 200
MAX_CHANNELS_PER_TRIGGER = 100
MAX_EVENTS_PER_BATCH = 10
CHANNEL_ATTRIBUTES = ("occupied", "subscription_count", "user_count")


def is_private(channel: str) -> bool:
    return channel.startswith(("private-", "presence-"))


def is_presence(channel: str) -> bool:
    return channel.startswith("presence-")


def encode_data(data: Any) -> str:
    """Pusher's rule: a string is sent as is, anything else as its JSON text."""
    if isinstance(data, str):
        return data
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


class WebSocketService(BaseService):
    """Real-time events to channels: trigger, channel auth, channel state and webhooks.

    Every public method validates its input against the provider's limits before any
    network call and raises :class:`WebSocketError` with a specific code.
    """

    service_name: ClassVar[str] = "websocket"
    error_type: ClassVar[type[WebSocketError]] = WebSocketError
    error_codes: ClassVar[type[WebSocketErrorCode]] = WebSocketErrorCode
    socket_id_pattern: ClassVar[re.Pattern[str]] = PUSHER_SOCKET_ID_RE

    def __init__(
        self,
        *,
        app_key: str | None,
        app_secret: str | None,
        max_payload_bytes: int,
        metrics: MetricsSink | None = None,
    ) -> None:
        super().__init__(metrics=metrics)
        self._app_key = app_key
        self._app_secret = app_secret
        self.max_payload_bytes = max_payload_bytes

    # -- public API --------------------------------------------------------------------------

    def trigger(
        self,
        channels: str | Sequence[str],
        event: str,
        data: Any,
        socket_id: str | None = None,
    ) -> TriggerResult:
        """Send ``event`` with ``data`` to every subscriber of ``channels``.

        ``socket_id`` excludes that connection (the sender). More than 100 channels are
        split into several provider calls.
        """
        names = self._channel_list(channels)
        self._check_event(event)
        if socket_id is not None:
            self._check_socket_id(socket_id)
        for name in names:
            self._check_payload(name, event, data)
        chunks = [
            names[i : i + MAX_CHANNELS_PER_TRIGGER]
            for i in range(0, len(names), MAX_CHANNELS_PER_TRIGGER)
        ]
        return self._run("trigger", self._trigger_chunks, chunks, event, data, socket_id)

    def trigger_batch(self, events: Iterable[BatchEvent | Mapping[str, Any]]) -> TriggerResult:
        """Send several events (``{channel, name, data, socket_id?}``), 10 per provider call."""
        batch = self._batch(events)
        chunks = [
            batch[i : i + MAX_EVENTS_PER_BATCH] for i in range(0, len(batch), MAX_EVENTS_PER_BATCH)
        ]
        return self._run("trigger_batch", self._trigger_batch_chunks, chunks)

    def authenticate_channel(
        self,
        socket_id: str,
        channel: str,
        user: str | Mapping[str, Any] | None = None,
    ) -> dict[str, str]:
        """Sign a private or presence subscription for ``socket_id``.

        Returns ``{"auth": "key:signature"}``, plus ``channel_data`` (the exact signed JSON)
        for presence channels, where ``user`` is a user id or ``{"user_id", "user_info"}``.
        """
        self._check_channel(channel)
        self._check_socket_id(socket_id)
        if not is_private(channel):
            raise self._error(
                "INVALID_CHANNEL", f"{channel!r} is public; only private-/presence- need auth"
            )
        channel_data = None
        if is_presence(channel):
            member = self._presence_user(user)
            channel_data = signing.presence_channel_data(member.user_id, member.user_info)
        return self._run(
            "authenticate_channel", self._sign_channel, socket_id, channel, channel_data
        )

    def get_channel_info(
        self, channel: str, attributes: Sequence[str] = ("subscription_count", "user_count")
    ) -> ChannelInfo:
        """Whether ``channel`` is occupied, and the requested counts.

        ``user_count`` is only reported for presence channels.
        """
        self._check_channel(channel)
        if isinstance(attributes, str):
            attributes = [attributes]
        if not isinstance(attributes, Iterable):
            raise self._error("INVALID_CHANNEL", "attributes must be a list of attribute names")
        unknown = sorted(map(str, set(attributes) - set(CHANNEL_ATTRIBUTES)))
        if unknown:
            raise self._error(
                "INVALID_CHANNEL",
                f"unknown channel attribute(s) {unknown}; accepted: {list(CHANNEL_ATTRIBUTES)}",
            )
        wanted = [a for a in attributes if a != "occupied"]
        if not is_presence(channel):
            wanted = [a for a in wanted if a != "user_count"]
        return self._run("get_channel_info", self._channel_info, channel, tuple(wanted))

    def get_channel_users(self, channel: str) -> list[ChannelUser]:
        """The members of a presence channel."""
        self._check_channel(channel)
        if not is_presence(channel):
            raise self._error("INVALID_CHANNEL", f"{channel!r} is not a presence channel")
        return self._run("get_channel_users", self._channel_users, channel)

    def validate_webhook(self, headers: Mapping[str, str], body: str | bytes) -> bool:
        """Whether a webhook is signed with this app's key and secret and is recent."""
        try:
            self.parse_webhook(headers, body)
        except WebSocketError:
            return False
        return True

    def parse_webhook(self, headers: Mapping[str, str], body: str | bytes) -> list[WebhookEvent]:
        """The events of a valid webhook; ``INVALID_WEBHOOK`` when it is not valid."""
        key, secret = self._credentials()
        try:
            hook = webhooks.parse_signed_webhook(key, secret, headers, body)
        except WebSocketError as exc:
            raise self._error("INVALID_WEBHOOK", exc.message) from None
        return list(hook.events)

    @property
    def app_key(self) -> str | None:
        """The public app key clients present in channel auth values."""
        return self._app_key

    # -- provider hooks ----------------------------------------------------------------------

    @abstractmethod
    def _trigger(
        self, channels: list[str], event: str, data: Any, socket_id: str | None
    ) -> TriggerResult:
        """Trigger one event on at most 100 already validated channels."""

    @abstractmethod
    def _trigger_batch(self, events: list[BatchEvent]) -> TriggerResult:
        """Trigger at most 10 already validated events."""

    @abstractmethod
    def _channel_info(self, channel: str, attributes: tuple[str, ...]) -> ChannelInfo: ...

    @abstractmethod
    def _channel_users(self, channel: str) -> list[ChannelUser]: ...

    def _payload_size(self, channel: str, event: str, data: Any) -> int:
        """Bytes the provider counts against its limit (Pusher: the ``data`` string)."""
        return len(encode_data(data).encode())

    # -- shared implementation ---------------------------------------------------------------

    def _trigger_chunks(
        self, chunks: list[list[str]], event: str, data: Any, socket_id: str | None
    ) -> TriggerResult:
        return merge_results([self._trigger(c, event, data, socket_id) for c in chunks])

    def _trigger_batch_chunks(self, chunks: list[list[BatchEvent]]) -> TriggerResult:
        return merge_results([self._trigger_batch(c) for c in chunks])

    def _credentials(self) -> tuple[str, str]:
        if not self._app_key or not self._app_secret:
            raise self._error(
                "CONFIGURATION",
                "no app key/secret: set WEBSOCKET_APP_KEY and WEBSOCKET_APP_SECRET "
                "(or WEBSOCKET_SECRET_ARN, or the Pusher credentials)",
            )
        return self._app_key, self._app_secret

    def _sign_channel(
        self, socket_id: str, channel: str, channel_data: str | None
    ) -> dict[str, str]:
        key, secret = self._credentials()
        result = {"auth": signing.channel_auth(key, secret, socket_id, channel, channel_data)}
        if channel_data is not None:
            result["channel_data"] = channel_data
        return result

    # -- validation --------------------------------------------------------------------------

    def _check_channel(self, channel: object) -> str:
        if not isinstance(channel, str) or not channel:
            raise self._error("INVALID_CHANNEL", f"channel must be a non-empty string: {channel!r}")
        if len(channel) > MAX_CHANNEL_LENGTH:
            raise self._error(
                "INVALID_CHANNEL", f"channel name has {len(channel)} characters (max 200)"
            )
        if not CHANNEL_RE.match(channel):
            raise self._error("INVALID_CHANNEL", f"invalid channel name {channel!r}")
        return channel

    def _channel_list(self, channels: object) -> list[str]:
        names: list[object]
        if isinstance(channels, str):
            names = [channels]
        elif isinstance(channels, Sequence | set | frozenset):
            names = list(channels)
        else:
            raise self._error("INVALID_CHANNEL", "channels must be a name or a list of names")
        if not names:
            raise self._error("INVALID_CHANNEL", "no channel given")
        checked = [self._check_channel(name) for name in names]
        return list(dict.fromkeys(checked))

    def _check_event(self, event: object, *, client: bool = False) -> str:
        if not isinstance(event, str) or not event:
            raise self._error("INVALID_EVENT", f"event name must be a non-empty string: {event!r}")
        if len(event) > MAX_EVENT_LENGTH:
            raise self._error("INVALID_EVENT", f"event name has {len(event)} characters (max 200)")
        if event.startswith(("pusher:", "pusher_internal:")):
            raise self._error("INVALID_EVENT", "event names starting with 'pusher:' are reserved")
        if client and not event.startswith("client-"):
            raise self._error(
                "INVALID_EVENT", f"client event names start with 'client-': {event!r}"
            )
        return event

    def _check_socket_id(self, socket_id: object) -> str:
        if not isinstance(socket_id, str) or not self.socket_id_pattern.match(socket_id):
            raise self._error(
                "INVALID_SOCKET_ID",
                f"invalid socket id {socket_id!r} for the {self.provider_name} provider",
            )
        return socket_id

    def _check_payload(self, channel: str, event: str, data: Any) -> None:
        try:
            size = self._payload_size(channel, event, data)
        except (TypeError, ValueError) as exc:
            raise self._error("INVALID_MESSAGE", f"data is not JSON-serializable: {exc}") from None
        if size > self.max_payload_bytes:
            raise self._error(
                "PAYLOAD_TOO_LARGE",
                f"payload is {size} bytes; the {self.provider_name} limit is "
                f"{self.max_payload_bytes} bytes",
            )

    def _batch(self, events: Iterable[BatchEvent | Mapping[str, Any]]) -> list[BatchEvent]:
        if isinstance(events, str | bytes | Mapping) or not isinstance(events, Iterable):
            raise self._error("INVALID_EVENT", "events must be a list of events")
        batch: list[BatchEvent] = []
        for item in events:
            try:
                event = item if isinstance(item, BatchEvent) else BatchEvent.model_validate(item)
            except ValidationError as exc:
                raise self._error("INVALID_EVENT", f"invalid batch event: {exc}") from None
            self._check_channel(event.channel)
            self._check_event(event.name)
            if event.socket_id is not None:
                self._check_socket_id(event.socket_id)
            self._check_payload(event.channel, event.name, event.data)
            batch.append(event)
        if not batch:
            raise self._error("INVALID_EVENT", "no events given")
        return batch

    def _presence_user(self, user: object) -> PresenceUser:
        if user is None:
            raise self._error("INVALID_USER", "presence channels need a user")
        try:
            if isinstance(user, str):
                return PresenceUser(user_id=user)
            if isinstance(user, Mapping):
                return PresenceUser.model_validate(dict(user))
        except ValidationError as exc:
            raise self._error("INVALID_USER", f"invalid presence user: {exc}") from None
        raise self._error("INVALID_USER", f"user must be an id or a mapping, not {type(user)}")


class ConnectionService(WebSocketService):
    """A provider that holds the connections itself (API Gateway, mock).

    The Lambda handlers drive these methods; each validates, then runs through ``_run``.
    """

    def connect(self, connection_id: str, user_id: str | None = None) -> None:
        """Remember a new connection and the user it authenticated as."""
        self._check_socket_id(connection_id)
        if user_id is not None and (not isinstance(user_id, str) or not 0 < len(user_id) <= 200):
            raise self._error("INVALID_USER", f"user id must be 1-200 characters: {user_id!r}")
        self._run("connect", self._connect, connection_id, user_id)

    def disconnect(self, connection_id: str) -> None:
        """Forget a connection and its subscriptions (presence and occupancy webhooks)."""
        self._check_socket_id(connection_id)
        self._run("disconnect", self._disconnect, connection_id)

    def subscribe(
        self,
        connection_id: str,
        channel: str,
        auth: str | None = None,
        channel_data: str | None = None,
    ) -> SubscriptionResult:
        """Subscribe a connection; private/presence channels need a valid ``auth``."""
        self._check_socket_id(connection_id)
        self._check_channel(channel)
        member: PresenceUser | None = None
        if is_private(channel):
            key, secret = self._credentials()
            signed_data = channel_data if is_presence(channel) else None
            if not signing.verify_channel_auth(
                key, secret, connection_id, channel, auth, signed_data
            ):
                raise self._error("UNAUTHORIZED", f"invalid or missing auth for {channel!r}")
        if is_presence(channel):
            member = self._member_from_channel_data(channel_data)
        return self._run("subscribe", self._subscribe, connection_id, channel, member)

    def unsubscribe(self, connection_id: str, channel: str) -> None:
        """Remove one subscription (presence ``member_removed`` on a user's last one)."""
        self._check_socket_id(connection_id)
        self._check_channel(channel)
        self._run("unsubscribe", self._unsubscribe, connection_id, channel)

    def send_client_event(
        self, connection_id: str, channel: str, event: str, data: Any
    ) -> TriggerResult:
        """Relay a ``client-`` event to the channel's other subscribers.

        Only on private/presence channels the sender has joined (else ``FORBIDDEN``).
        """
        self._check_socket_id(connection_id)
        self._check_channel(channel)
        self._check_event(event, client=True)
        if not is_private(channel):
            raise self._error("FORBIDDEN", "client events are only allowed on private channels")
        self._check_payload(channel, event, data)
        return self._run("client_event", self._client_event, connection_id, channel, event, data)

    def _member_from_channel_data(self, channel_data: str | None) -> PresenceUser:
        if not channel_data:
            raise self._error("INVALID_USER", "presence subscriptions need channel_data")
        try:
            return PresenceUser.model_validate_json(channel_data)
        except ValidationError as exc:
            raise self._error("INVALID_USER", f"invalid channel_data: {exc}") from None

    @abstractmethod
    def _connect(self, connection_id: str, user_id: str | None) -> None: ...

    @abstractmethod
    def _disconnect(self, connection_id: str) -> None: ...

    @abstractmethod
    def _subscribe(
        self, connection_id: str, channel: str, member: PresenceUser | None
    ) -> SubscriptionResult: ...

    @abstractmethod
    def _unsubscribe(self, connection_id: str, channel: str) -> None: ...

    @abstractmethod
    def _client_event(
        self, connection_id: str, channel: str, event: str, data: Any
    ) -> TriggerResult: ...


def merge_results(results: Sequence[TriggerResult]) -> TriggerResult:
    """One result for several provider calls."""
    channels: list[str] = []
    for r in results:
        channels.extend(c for c in r.channels if c not in channels)
    delivered = [r.delivered for r in results]
    return TriggerResult(
        channels=channels,
        events=sum(r.events for r in results),
        delivered=None if any(d is None for d in delivered) else sum(d or 0 for d in delivered),
        gone=sum(r.gone for r in results),
        failed=sum(r.failed for r in results),
        excluded=sum(r.excluded for r in results),
    )
