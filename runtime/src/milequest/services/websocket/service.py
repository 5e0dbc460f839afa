"""The WebSocket service interface: validation, signing and encryption shared by every provider."""

from __future__ import annotations

import base64
import re
from abc import abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar

from pydantic import ValidationError

from milequest.services import jsonsafe
from milequest.services.base import BaseService
from milequest.services.jsonsafe import shorten
from milequest.services.metrics import MetricsSink

from . import encryption, protocol, signing, webhooks
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
from .protocol import is_encrypted, is_presence, is_private

CHANNEL_RE = re.compile(r"\A[-a-zA-Z0-9_=@,.;]+\Z")
PUSHER_SOCKET_ID_RE = protocol.SOCKET_ID_RE
MAX_CHANNEL_LENGTH = 200
MAX_EVENT_LENGTH = 200
MAX_CHANNELS_PER_TRIGGER = 100
MAX_EVENTS_PER_BATCH = 10
CHANNEL_ATTRIBUTES = ("occupied", "subscription_count", "user_count")

__all__ = [
    "ConnectionService",
    "WebSocketService",
    "encode_data",
    "is_encrypted",
    "is_presence",
    "is_private",
    "merge_results",
]


def encode_data(data: Any) -> str:
    """Pusher's rule: a string is sent as is, anything else as its JSON text.

    Raises :class:`~milequest.services.jsonsafe.JsonSafetyError` (a ``ValueError``) for
    values that are not plain JSON data, nested too deeply or not valid Unicode.
    """
    if isinstance(data, str):
        jsonsafe.check(data)
        return data
    return jsonsafe.dumps(data)


class WebSocketService(BaseService):
    """Real-time events to channels: trigger, auth, channel state, users and webhooks.

    Every public method validates its input against the provider's limits before any
    network call and raises :class:`WebSocketError` with a specific code.
    """

    service_name: ClassVar[str] = "websocket"
    error_type: ClassVar[type[WebSocketError]] = WebSocketError
    error_codes: ClassVar[type[WebSocketErrorCode]] = WebSocketErrorCode

    def __init__(
        self,
        *,
        app_key: str | None,
        app_secret: str | None,
        max_payload_bytes: int,
        encryption_master_key: bytes | None = None,
        metrics: MetricsSink | None = None,
    ) -> None:
        super().__init__(metrics=metrics)
        self._app_key = app_key
        self._app_secret = app_secret
        self._master_key = encryption_master_key
        self.max_payload_bytes = max_payload_bytes

    # -- publishing --------------------------------------------------------------------------

    def trigger(
        self,
        channels: str | Sequence[str],
        event: str,
        data: Any,
        socket_id: str | None = None,
        *,
        encrypted: bool = False,
    ) -> TriggerResult:
        """Send ``event`` with ``data`` to every subscriber of ``channels``.

        ``socket_id`` excludes that connection (the sender). More than 100 channels are
        split into several provider calls. Data for a ``private-encrypted-`` channel is
        encrypted here (one channel per call, as with Pusher) unless ``encrypted`` says it
        already is (a Pusher SDK encrypted it before calling our HTTP API).
        """
        names = self._channel_list(channels)
        self._check_event(event)
        if socket_id is not None:
            self._check_socket_id(socket_id)
        payload = self._payload(names, event, data, encrypted)
        chunks = [
            names[i : i + MAX_CHANNELS_PER_TRIGGER]
            for i in range(0, len(names), MAX_CHANNELS_PER_TRIGGER)
        ]
        return self._run("trigger", self._trigger_chunks, chunks, event, payload, socket_id)

    def trigger_batch(
        self, events: Iterable[BatchEvent | Mapping[str, Any]], *, encrypted: bool = False
    ) -> TriggerResult:
        """Send several events (``{channel, name, data, socket_id?}``), 10 per provider call."""
        batch = self._batch(events, encrypted)
        chunks = [
            batch[i : i + MAX_EVENTS_PER_BATCH] for i in range(0, len(batch), MAX_EVENTS_PER_BATCH)
        ]
        return self._run("trigger_batch", self._trigger_batch_chunks, chunks)

    def send_to_user(self, user_id: str, event: str, data: Any) -> TriggerResult:
        """Send ``event`` to every connection signed in (``pusher:signin``) as ``user_id``."""
        channel = protocol.server_to_user_channel(self._check_user_id(user_id))
        self._check_event(event)
        payload = self._payload([channel], event, data, False)
        return self._run("send_to_user", self._trigger, [channel], event, payload, None)

    def terminate_user_connections(self, user_id: str) -> int | None:
        """Close every connection signed in as ``user_id``; how many (None: not counted)."""
        self._check_user_id(user_id)
        return self._run("terminate_user_connections", self._terminate_user, user_id)

    # -- authentication ----------------------------------------------------------------------

    def authenticate_channel(
        self,
        socket_id: str,
        channel: str,
        user: str | Mapping[str, Any] | None = None,
    ) -> dict[str, str]:
        """What pusher-js's ``channelAuthorization`` endpoint returns for ``socket_id``.

        ``{"auth": "key:signature"}``, plus ``channel_data`` (the exact signed JSON) for
        presence channels, where ``user`` is a user id or ``{"user_id", "user_info"}``, and
        ``shared_secret`` (base64) for ``private-encrypted-`` channels.
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
            try:
                channel_data = signing.presence_channel_data(member.user_id, member.user_info)
            except ValueError as exc:
                raise self._error("INVALID_USER", f"invalid user_info: {exc}") from None
        secret = self._shared_secret(channel) if is_encrypted(channel) else None
        signed = self._run(
            "authenticate_channel", self._sign_channel, socket_id, channel, channel_data
        )
        if secret is not None:
            signed["shared_secret"] = secret
        return signed

    def authenticate_user(self, socket_id: str, user: str | Mapping[str, Any]) -> dict[str, str]:
        """What pusher-js's ``userAuthentication`` endpoint returns: ``{"auth", "user_data"}``.

        ``user`` is a user id or Pusher's user object (``{"id", "user_info"?, ...}``).
        """
        self._check_socket_id(socket_id)
        user_data = self._user_data(user)
        key, secret = self._credentials()
        auth = signing.user_auth(key, secret, socket_id, user_data)
        return {"auth": auth, "user_data": user_data}

    # -- channel state -----------------------------------------------------------------------

    def get_channel_info(
        self, channel: str, attributes: Sequence[str] = ("subscription_count", "user_count")
    ) -> ChannelInfo:
        """Whether ``channel`` is occupied, and the requested counts.

        ``user_count`` is only reported for presence channels.
        """
        self._check_channel(channel)
        wanted = [a for a in self._attributes(attributes) if a != "occupied"]
        if not is_presence(channel):
            wanted = [a for a in wanted if a != "user_count"]
        return self._run("get_channel_info", self._channel_info, channel, tuple(wanted))

    def get_channels(
        self, prefix: str | None = None, attributes: Sequence[str] = ()
    ) -> dict[str, ChannelInfo]:
        """The occupied channels (those starting with ``prefix``), by name.

        As with Pusher, the only attribute is ``user_count``, and only with
        ``prefix="presence-"``.
        """
        if prefix is not None and (not isinstance(prefix, str) or not CHANNEL_RE.match(prefix)):
            raise self._error("INVALID_CHANNEL", f"invalid channel prefix {shorten(prefix)}")
        wanted = tuple(a for a in self._attributes(attributes) if a != "occupied")
        if set(wanted) - {"user_count"}:
            raise self._error("INVALID_CHANNEL", "the channel list only reports user_count")
        if wanted and prefix != "presence-":
            raise self._error("INVALID_CHANNEL", "user_count needs the prefix 'presence-'")
        return self._run("get_channels", self._channels, prefix or "", wanted)

    def get_channel_users(self, channel: str) -> list[ChannelUser]:
        """The members of a presence channel."""
        self._check_channel(channel)
        if not is_presence(channel):
            raise self._error("INVALID_CHANNEL", f"{channel!r} is not a presence channel")
        return self._run("get_channel_users", self._channel_users, channel)

    # -- webhooks ----------------------------------------------------------------------------

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

    def verify_api_request(
        self,
        method: str,
        paths: Sequence[str],
        params: Mapping[str, str],
        body: bytes,
    ) -> None:
        """``UNAUTHORIZED`` unless a Pusher HTTP API request is signed with this app's key.

        ``paths``: the request path as sent and percent-decoded (either may be signed).
        """
        well_formed = (
            isinstance(method, str)
            and isinstance(paths, list | tuple)
            and all(isinstance(p, str) for p in paths)
            and isinstance(params, Mapping)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in params.items())
            and isinstance(body, bytes)
        )
        if not well_formed:
            raise self._error("INVALID_MESSAGE", "method, paths, params and body are malformed")
        key, secret = self._credentials()
        problem = signing.api_request_problem(key, secret, method, paths, params, body)
        if problem is not None:
            raise self._error("UNAUTHORIZED", problem)

    @property
    def app_key(self) -> str | None:
        """The public app key clients present in channel auth values."""
        return self._app_key

    # -- provider hooks ----------------------------------------------------------------------

    @abstractmethod
    def _trigger(
        self, channels: list[str], event: str, data: str, socket_id: str | None
    ) -> TriggerResult:
        """Trigger one event (``data`` already a string) on at most 100 validated channels."""

    @abstractmethod
    def _trigger_batch(self, events: list[BatchEvent]) -> TriggerResult:
        """Trigger at most 10 validated events (their ``data`` already strings)."""

    @abstractmethod
    def _channel_info(self, channel: str, attributes: tuple[str, ...]) -> ChannelInfo: ...

    @abstractmethod
    def _channels(self, prefix: str, attributes: tuple[str, ...]) -> dict[str, ChannelInfo]: ...

    @abstractmethod
    def _channel_users(self, channel: str) -> list[ChannelUser]: ...

    @abstractmethod
    def _terminate_user(self, user_id: str) -> int | None: ...

    def _payload_size(self, channel: str, event: str, data: str) -> int:
        """Bytes the provider counts against its limit (Pusher: the ``data`` string)."""
        return len(data.encode())

    # -- shared implementation ---------------------------------------------------------------

    def _trigger_chunks(
        self, chunks: list[list[str]], event: str, data: str, socket_id: str | None
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

    def _encryption_key(self) -> bytes:
        if self._master_key is None:
            raise self._error(
                "CONFIGURATION",
                "private-encrypted- channels need WEBSOCKET_ENCRYPTION_MASTER_KEY (base64 of "
                "32 bytes) or 'encryption_master_key' in the app's secret",
            )
        return self._master_key

    def _shared_secret(self, channel: str) -> str:
        secret = encryption.shared_secret(channel, self._encryption_key())
        return base64.b64encode(secret).decode()

    def _payload(self, names: list[str], event: str, data: Any, encrypted: bool) -> str:
        """``data`` as the string subscribers receive, encrypted where due, size-checked."""
        try:
            text = encode_data(data)
        except ValueError as exc:
            raise self._error("INVALID_MESSAGE", f"data is not JSON-serializable: {exc}") from None
        if any(is_encrypted(n) for n in names) and not encrypted:
            if len(names) > 1:
                raise self._error(
                    "INVALID_CHANNEL",
                    "an event for an encrypted channel goes to that one channel only",
                )
            text = encryption.encrypt(names[0], text, self._encryption_key())
        for name in names:
            size = self._payload_size(name, event, text)
            if size > self.max_payload_bytes:
                raise self._error(
                    "PAYLOAD_TOO_LARGE",
                    f"payload is {size} bytes; the {self.provider_name} limit is "
                    f"{self.max_payload_bytes} bytes",
                )
        return text

    # -- validation --------------------------------------------------------------------------

    def _check_channel(self, channel: object) -> str:
        if not isinstance(channel, str) or not channel:
            raise self._error(
                "INVALID_CHANNEL", f"channel must be a non-empty string: {shorten(channel)}"
            )
        if len(channel) > MAX_CHANNEL_LENGTH:
            raise self._error(
                "INVALID_CHANNEL", f"channel name has {len(channel)} characters (max 200)"
            )
        if not CHANNEL_RE.match(channel):
            raise self._error("INVALID_CHANNEL", f"invalid channel name {shorten(channel)}")
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
            raise self._error(
                "INVALID_EVENT", f"event name must be a non-empty string: {shorten(event)}"
            )
        if len(event) > MAX_EVENT_LENGTH:
            raise self._error("INVALID_EVENT", f"event name has {len(event)} characters (max 200)")
        if event.startswith(("pusher:", "pusher_internal:")):
            raise self._error("INVALID_EVENT", "event names starting with 'pusher:' are reserved")
        try:
            jsonsafe.check(event)
        except ValueError as exc:
            raise self._error("INVALID_EVENT", f"invalid event name: {exc}") from None
        if client and not event.startswith(protocol.CLIENT_EVENT_PREFIX):
            raise self._error(
                "INVALID_EVENT", f"client event names start with 'client-': {shorten(event)}"
            )
        return event

    def _check_socket_id(self, socket_id: object) -> str:
        if not isinstance(socket_id, str) or not PUSHER_SOCKET_ID_RE.match(socket_id):
            raise self._error("INVALID_SOCKET_ID", f"invalid socket id {shorten(socket_id)}")
        return socket_id

    def _check_user_id(self, user_id: object) -> str:
        if not isinstance(user_id, str) or not protocol.USER_ID_RE.match(user_id):
            raise self._error(
                "INVALID_USER",
                f"user ids are 1-200 characters of [-a-zA-Z0-9_=@,.;]: {shorten(user_id)}",
            )
        return user_id

    def _attributes(self, attributes: object) -> list[str]:
        if isinstance(attributes, str):
            attributes = [attributes]
        if not isinstance(attributes, Iterable):
            raise self._error("INVALID_CHANNEL", "attributes must be a list of attribute names")
        names = list(attributes)
        unknown = [
            shorten(a) for a in names if not isinstance(a, str) or a not in CHANNEL_ATTRIBUTES
        ]
        if unknown:
            raise self._error(
                "INVALID_CHANNEL",
                f"unknown channel attribute(s) {unknown[:5]}; accepted: {list(CHANNEL_ATTRIBUTES)}",
            )
        return list(dict.fromkeys(names))

    def _batch(
        self, events: Iterable[BatchEvent | Mapping[str, Any]], encrypted: bool
    ) -> list[BatchEvent]:
        if isinstance(events, str | bytes | Mapping) or not isinstance(events, Iterable):
            raise self._error("INVALID_EVENT", "events must be a list of events")
        batch: list[BatchEvent] = []
        for item in events:
            try:
                event = item if isinstance(item, BatchEvent) else BatchEvent.model_validate(item)
            except (ValidationError, TypeError, ValueError) as exc:
                raise self._error("INVALID_EVENT", f"invalid batch event: {_brief(exc)}") from None
            self._check_channel(event.channel)
            self._check_event(event.name)
            if event.socket_id is not None:
                self._check_socket_id(event.socket_id)
            data = self._payload([event.channel], event.name, event.data, encrypted)
            batch.append(event.model_copy(update={"data": data}))
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
                member = PresenceUser.model_validate(dict(user))
                if member.user_info is not None:
                    jsonsafe.check(member.user_info)
                return member
        except (ValidationError, ValueError, TypeError) as exc:
            raise self._error("INVALID_USER", f"invalid presence user: {_brief(exc)}") from None
        raise self._error("INVALID_USER", f"user must be an id or a mapping, not {type(user)}")

    def _user_data(self, user: object) -> str:
        """Pusher's ``user_data`` JSON for a user id or user object (it needs an ``id``)."""
        if isinstance(user, str):
            user = {"id": user}
        if not isinstance(user, Mapping):
            raise self._error("INVALID_USER", f"user must be an id or a mapping, not {type(user)}")
        user = dict(user)
        if "id" not in user and "user_id" in user:  # our presence shape
            user = {"id": user.pop("user_id"), **user}
        user_id = user.get("id")
        self._check_user_id(user_id)
        try:
            return jsonsafe.dumps(user)
        except ValueError as exc:
            raise self._error("INVALID_USER", f"invalid user data: {exc}") from None


class ConnectionService(WebSocketService):
    """A provider that holds the connections itself (API Gateway, mock).

    The Lambda handlers drive these methods with the gateway's connection ids; clients and
    Pusher SDKs see the socket id :func:`protocol.encode_socket_id` makes of each.
    """

    def socket_id(self, connection_id: str) -> str:
        """The Pusher-format socket id of a connection."""
        return protocol.encode_socket_id(self._check_connection_id(connection_id))

    def connect(self, connection_id: str, user_id: str | None = None) -> None:
        """Remember a new connection and the user it authenticated as (if any)."""
        self._check_connection_id(connection_id)
        if user_id is not None:
            self._check_user_id(user_id)
        self._run("connect", self._connect, connection_id, user_id)

    def disconnect(self, connection_id: str) -> None:
        """Forget a connection and its subscriptions (presence and occupancy webhooks)."""
        self._check_connection_id(connection_id)
        self._run("disconnect", self._disconnect, connection_id)

    def announce(self, connection_id: str, frame: str, *, close: bool = False) -> bool:
        """Push the first frame of a connection once it can be reached; False if it never was.

        ``$connect`` cannot post to its own connection, so ``pusher:connection_established``
        (or a refusal, then ``close``) is pushed from an asynchronous invocation that
        retries while the gateway still answers "gone" for the new connection.
        """
        self._check_connection_id(connection_id)
        try:
            data = frame.encode()
        except (AttributeError, UnicodeEncodeError):
            raise self._error("INVALID_MESSAGE", "the frame must be valid text") from None
        return self._run("announce", self._announce, connection_id, data, close)

    def subscribe(
        self,
        connection_id: str,
        channel: str,
        auth: str | None = None,
        channel_data: str | None = None,
    ) -> SubscriptionResult:
        """Subscribe a connection; private/presence channels need a valid ``auth``.

        ``#server-to-user-<id>`` is only open to a connection signed in as that user.
        """
        self._check_connection_id(connection_id)
        member: PresenceUser | None = None
        owner = protocol.server_to_user_id(channel) if isinstance(channel, str) else None
        if owner is not None:
            return self._run("subscribe", self._subscribe_user_channel, connection_id, owner)
        self._check_channel(channel)
        if is_private(channel):
            key, secret = self._credentials()
            signed_data = channel_data if is_presence(channel) else None
            socket_id = protocol.encode_socket_id(connection_id)
            if not signing.verify_channel_auth(key, secret, socket_id, channel, auth, signed_data):
                raise self._error("UNAUTHORIZED", f"invalid or missing auth for {channel!r}")
        if is_presence(channel):
            member = self._member_from_channel_data(channel_data)
        return self._run("subscribe", self._subscribe, connection_id, channel, member)

    def unsubscribe(self, connection_id: str, channel: str) -> bool:
        """Remove one subscription (presence ``member_removed`` on a user's last one).

        Returns whether the connection was subscribed.
        """
        self._check_connection_id(connection_id)
        if protocol.server_to_user_id(channel) is None:
            self._check_channel(channel)
        return self._run("unsubscribe", self._unsubscribe, connection_id, channel)

    def signin(self, connection_id: str, auth: str | None, user_data: str | None) -> str:
        """``pusher:signin``: verify ``auth`` over ``user_data``; returns the user id.

        The connection is then recorded under that user: ``send_to_user`` and
        ``terminate_user_connections`` reach it.
        """
        self._check_connection_id(connection_id)
        key, secret = self._credentials()
        socket_id = protocol.encode_socket_id(connection_id)
        if not isinstance(user_data, str) or not signing.verify_user_auth(
            key, secret, socket_id, auth, user_data
        ):
            raise self._error("UNAUTHORIZED", "invalid or missing user authentication")
        try:
            user = jsonsafe.loads(user_data)
        except ValueError as exc:
            raise self._error("INVALID_USER", f"user_data is not JSON: {exc}") from None
        user_id = user.get("id") if isinstance(user, dict) else None
        if isinstance(user_id, int) and not isinstance(user_id, bool):
            user_id = str(user_id)
        self._check_user_id(user_id)
        assert isinstance(user_id, str)
        self._run("signin", self._signin, connection_id, user_id)
        return user_id

    def send_client_event(
        self, connection_id: str, channel: str, event: str, data: Any
    ) -> TriggerResult:
        """Relay a ``client-`` event to the channel's other subscribers.

        Only on private/presence channels the sender has joined (else ``FORBIDDEN``), not
        on encrypted ones (as with Pusher), and at most the configured number per second
        per connection (else ``RATE_LIMITED``).
        """
        self._check_connection_id(connection_id)
        self._check_channel(channel)
        self._check_event(event, client=True)
        if not is_private(channel):
            raise self._error("FORBIDDEN", "client events are only allowed on private channels")
        if is_encrypted(channel):
            raise self._error("FORBIDDEN", "client events are not supported on encrypted channels")
        payload = self._payload([channel], event, data, True)
        return self._run("client_event", self._client_event, connection_id, channel, event, payload)

    def _check_connection_id(self, connection_id: object) -> str:
        if not isinstance(connection_id, str) or not protocol.CONNECTION_ID_RE.match(connection_id):
            raise self._error(
                "INVALID_SOCKET_ID", f"invalid connection id {shorten(connection_id)}"
            )
        return connection_id

    def _check_socket_id(self, socket_id: object) -> str:
        self._connection_of(socket_id)
        assert isinstance(socket_id, str)
        return socket_id

    def _connection_of(self, socket_id: object) -> str:
        """The connection id behind a socket id of this provider."""
        try:
            return protocol.decode_socket_id(socket_id)  # type: ignore[arg-type]
        except (ValueError, TypeError):
            raise self._error(
                "INVALID_SOCKET_ID",
                f"invalid socket id {shorten(socket_id)} (not one this server issued)",
            ) from None

    def _member_from_channel_data(self, channel_data: str | None) -> PresenceUser:
        if not isinstance(channel_data, str) or not channel_data:
            raise self._error("INVALID_USER", "presence subscriptions need channel_data")
        try:
            data = jsonsafe.loads(channel_data)
            if isinstance(data, dict) and isinstance(data.get("user_id"), int):
                data["user_id"] = str(data["user_id"])  # Pusher allows numeric user ids
            return PresenceUser.model_validate(data)
        except (ValidationError, ValueError) as exc:
            raise self._error("INVALID_USER", f"invalid channel_data: {_brief(exc)}") from None

    @abstractmethod
    def _connect(self, connection_id: str, user_id: str | None) -> None: ...

    @abstractmethod
    def _disconnect(self, connection_id: str) -> None: ...

    @abstractmethod
    def _announce(self, connection_id: str, frame: bytes, close: bool) -> bool: ...

    @abstractmethod
    def _subscribe(
        self, connection_id: str, channel: str, member: PresenceUser | None
    ) -> SubscriptionResult: ...

    @abstractmethod
    def _subscribe_user_channel(self, connection_id: str, user_id: str) -> SubscriptionResult:
        """Subscribe to ``#server-to-user-<user_id>`` if the connection signed in as that user
        (``UNAUTHORIZED`` otherwise)."""

    @abstractmethod
    def _unsubscribe(self, connection_id: str, channel: str) -> bool: ...

    @abstractmethod
    def _signin(self, connection_id: str, user_id: str) -> None: ...

    @abstractmethod
    def _client_event(
        self, connection_id: str, channel: str, event: str, data: str
    ) -> TriggerResult: ...


def _brief(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        errors = exc.errors()
        if not errors:
            return "invalid"
        where = ".".join(str(p) for p in errors[0]["loc"]) or "-"
        return f"{exc.error_count()} problem(s), first: {where}: {errors[0]['msg']}"
    return shorten(str(exc), 120)


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
