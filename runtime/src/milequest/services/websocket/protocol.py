"""The Pusher Channels protocol (version 7): frames, error codes and socket ids.

Pure functions shared by the Lambda handlers, the providers, the local gateway and the tests.
Every frame the server sends is ``{"event": E, "channel"?: C, "data": D}`` where ``D`` is a
JSON-encoded *string* (pusher-js parses it), except ``pusher:error`` and
``pusher:subscription_error``, whose ``data`` is an object, as Pusher sends them.
"""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import dataclass
from typing import Any

from milequest.services import jsonsafe

PROTOCOL_VERSION = 7
SERVER_TO_USER_PREFIX = "#server-to-user-"
ENCRYPTED_PREFIX = "private-encrypted-"
CLIENT_EVENT_PREFIX = "client-"
MAX_FRAME_BYTES = 128 * 1024  # API Gateway's message limit; Pusher's own is lower

# API Gateway connection ids look like "L0SM9cOFvHcCIhw=" (base64 of 11 bytes); accept the
# base64 and url-safe alphabets so any gateway's ids encode.
CONNECTION_ID_RE = re.compile(r"\A[A-Za-z0-9+/=_-]{1,128}\Z")
SOCKET_ID_RE = re.compile(r"\A\d+\.\d+\Z")
# What Pusher's SDKs accept as a user id (pusher-http-python's ``validate_user_id``).
USER_ID_RE = re.compile(r"\A[-a-zA-Z0-9_=@,.;]{1,200}\Z")
_MAX_SOCKET_ID_LENGTH = 320  # the encoding of a 128-character connection id, with room


class ErrorCode:
    """``pusher:error`` codes from the protocol (4000-4099: do not reconnect, 4100-4199:
    reconnect with back-off, 4200-4299: reconnect now, 4300-4399: other)."""

    APP_NOT_FOUND = 4001
    APP_DISABLED = 4003
    INVALID_VERSION = 4006
    UNSUPPORTED_PROTOCOL = 4007
    NO_PROTOCOL = 4008
    UNAUTHORIZED = 4009
    RECONNECT = 4200
    CLIENT_EVENT_RATE_LIMIT = 4301


class ProtocolError(Exception):
    """A client frame we refuse: answered with ``pusher:error`` (``code`` may be None)."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


@dataclass(frozen=True)
class ClientFrame:
    """A parsed client message: its event, channel (if any) and ``data`` (any JSON value)."""

    event: str
    channel: str | None
    data: Any


# -- socket ids ------------------------------------------------------------------------------
# Pusher's SDKs and auth endpoints only accept socket ids matching ^\d+\.\d+$. A connection
# id is encoded reversibly (no lookup table): its ASCII bytes after a 0x01 marker (which
# keeps leading characters), read as one big-endian number, written in decimal and split in
# two halves. Only the canonical split decodes, so one connection has exactly one socket id.


def encode_socket_id(connection_id: str) -> str:
    """The Pusher-format socket id of a gateway connection id."""
    if not CONNECTION_ID_RE.match(connection_id):
        raise ValueError(f"not a connection id: {jsonsafe.shorten(connection_id)}")
    digits = str(int.from_bytes(b"\x01" + connection_id.encode("ascii"), "big"))
    cut = len(digits) // 2
    return f"{digits[:cut]}.{digits[cut:]}"


def decode_socket_id(socket_id: str) -> str:
    """The connection id a socket id from :func:`encode_socket_id` stands for.

    Raises ``ValueError`` for anything else (Pusher-format ids of other servers included).
    """
    if (
        not isinstance(socket_id, str)
        or len(socket_id) > _MAX_SOCKET_ID_LENGTH
        or not SOCKET_ID_RE.match(socket_id)
    ):
        raise ValueError("not a socket id")
    number = int(socket_id.replace(".", ""))
    raw = number.to_bytes((number.bit_length() + 7) // 8, "big")
    if not raw.startswith(b"\x01"):
        raise ValueError("not a socket id of this server")
    try:
        connection_id = raw[1:].decode("ascii")
    except UnicodeDecodeError:
        raise ValueError("not a socket id of this server") from None
    if not CONNECTION_ID_RE.match(connection_id) or encode_socket_id(connection_id) != socket_id:
        raise ValueError("not a socket id of this server")
    return connection_id


# -- channels --------------------------------------------------------------------------------


def is_private(channel: str) -> bool:
    """Private, encrypted and presence channels need a signed subscription."""
    return channel.startswith(("private-", "presence-"))


def is_presence(channel: str) -> bool:
    return channel.startswith("presence-")


def is_encrypted(channel: str) -> bool:
    return channel.startswith(ENCRYPTED_PREFIX)


def server_to_user_channel(user_id: str) -> str:
    """The channel a signed-in user's connections share (``send_to_user`` targets it)."""
    return f"{SERVER_TO_USER_PREFIX}{user_id}"


def server_to_user_id(channel: object) -> str | None:
    """The user id of a ``#server-to-user-`` channel, else None (also for a non-string)."""
    if isinstance(channel, str) and channel.startswith(SERVER_TO_USER_PREFIX):
        user_id = channel[len(SERVER_TO_USER_PREFIX) :]
        return user_id if USER_ID_RE.match(user_id) else None
    return None


# -- parsing client frames -------------------------------------------------------------------


def parse_client_frame(raw: str | bytes) -> ClientFrame:
    """Parse one client message; :class:`ProtocolError` for anything malformed.

    ``data`` may be an object or a JSON-encoded string (pusher-js sends objects; other
    clients send strings): a string that holds a JSON object or array is decoded.
    """
    if len(raw) > MAX_FRAME_BYTES:
        raise ProtocolError(f"message is larger than {MAX_FRAME_BYTES} bytes")
    try:
        message = jsonsafe.loads(raw)
    except jsonsafe.JsonSafetyError as exc:
        raise ProtocolError(f"invalid JSON: {exc}") from None
    if not isinstance(message, dict):
        raise ProtocolError("a message is a JSON object with an 'event'")
    event = message.get("event")
    if not isinstance(event, str) or not event:
        raise ProtocolError("a message needs an 'event' name")
    if len(event) > 200:
        raise ProtocolError("event names have at most 200 characters")
    channel = message.get("channel")
    if channel is not None and not isinstance(channel, str):
        raise ProtocolError("'channel' must be a string")
    data = message.get("data")
    if isinstance(data, str) and data[:1] in ("{", "["):
        with contextlib.suppress(jsonsafe.JsonSafetyError):  # a client event may carry any string
            data = jsonsafe.loads(data)
    return ClientFrame(event=event, channel=channel, data=data)


def field(data: Any, name: str, *, required: bool = True) -> str | None:
    """A string field of a frame's ``data`` object; :class:`ProtocolError` when wrong."""
    value = data.get(name) if isinstance(data, dict) else None
    if value is None:
        if required:
            raise ProtocolError(f"'data.{name}' is required")
        return None
    if not isinstance(value, str):
        raise ProtocolError(f"'data.{name}' must be a string")
    return value


# -- building server frames ------------------------------------------------------------------


def encode(frame: dict[str, Any]) -> str:
    """The wire text of a frame."""
    return json.dumps(frame, ensure_ascii=False, separators=(",", ":"))


def _data(value: Any) -> str:
    return value if isinstance(value, str) else jsonsafe.dumps(value)


def event(name: str, channel: str | None, data: Any, user_id: str | None = None) -> str:
    """An event as subscribers receive it; ``data`` is sent as a JSON string."""
    frame: dict[str, Any] = {"event": name}
    if channel is not None:
        frame["channel"] = channel
    frame["data"] = _data(data)
    if user_id is not None:
        frame["user_id"] = user_id
    return encode(frame)


def connection_established(socket_id: str, activity_timeout: int) -> str:
    return event(
        "pusher:connection_established",
        None,
        {"socket_id": socket_id, "activity_timeout": activity_timeout},
    )


def error(message: str, code: int | None = None, channel: str | None = None) -> str:
    """``pusher:error``: ``code`` is a protocol code, or None where the spec names none."""
    frame: dict[str, Any] = {"event": "pusher:error"}
    if channel is not None:
        frame["channel"] = channel
    frame["data"] = {"code": code, "message": message}
    return encode(frame)


def pong() -> str:
    return event("pusher:pong", None, {})


def ping() -> str:
    return event("pusher:ping", None, {})


def subscription_succeeded(
    channel: str, members: dict[str, dict[str, Any] | None] | None = None
) -> str:
    """Success; presence channels carry ``{"presence": {"ids", "hash", "count"}}``."""
    data: dict[str, Any] = {}
    if members is not None:
        data = {"presence": {"ids": list(members), "hash": members, "count": len(members)}}
    return event("pusher_internal:subscription_succeeded", channel, data)


def subscription_error(channel: str, error_type: str, message: str, status: int) -> str:
    """A refused subscription, named by channel so pusher-js fires it on that channel."""
    return encode(
        {
            "event": "pusher:subscription_error",
            "channel": channel,
            "data": {"type": error_type, "error": message, "status": status},
        }
    )


def member_added(channel: str, user_id: str, user_info: Any) -> str:
    return event(
        "pusher_internal:member_added", channel, {"user_id": user_id, "user_info": user_info}
    )


def member_removed(channel: str, user_id: str) -> str:
    return event("pusher_internal:member_removed", channel, {"user_id": user_id})


def signin_success(user_data: str) -> str:
    return event("pusher:signin_success", None, {"user_data": user_data})
