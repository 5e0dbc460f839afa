"""The WebSocket service's error type and codes."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import ClassVar

from milequest.services.errors import COMMON_HINTS, ServiceError


class WebSocketErrorCode(StrEnum):
    """What went wrong; the common codes share the values of ``CommonErrorCode``."""

    INVALID_CHANNEL = "INVALID_CHANNEL"
    INVALID_EVENT = "INVALID_EVENT"
    INVALID_SOCKET_ID = "INVALID_SOCKET_ID"
    INVALID_USER = "INVALID_USER"
    INVALID_MESSAGE = "INVALID_MESSAGE"
    PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
    UNAUTHORIZED = "UNAUTHORIZED"
    FORBIDDEN = "FORBIDDEN"
    CONNECTION_GONE = "CONNECTION_GONE"
    INVALID_WEBHOOK = "INVALID_WEBHOOK"
    CONFIGURATION = "CONFIGURATION"
    RATE_LIMITED = "RATE_LIMITED"
    PROVIDER_UNAVAILABLE = "PROVIDER_UNAVAILABLE"
    PROVIDER_ERROR = "PROVIDER_ERROR"


class WebSocketError(ServiceError):
    """Raised by every WebSocket provider; ``code`` is a :class:`WebSocketErrorCode`."""

    code: WebSocketErrorCode

    hints: ClassVar[Mapping[str, str]] = {
        **COMMON_HINTS,
        "INVALID_CHANNEL": "Channel names match ^[-a-zA-Z0-9_=@,.;]+$ and have at most 200 "
        "characters; private-/presence- channels need authentication.",
        "INVALID_EVENT": "Event names are non-empty, at most 200 characters; client events "
        "start with 'client-'.",
        "INVALID_SOCKET_ID": "Pass the socket id the client received on connection.",
        "INVALID_USER": "Presence channels need a user id (string) and optional user_info.",
        "INVALID_MESSAGE": "Send a JSON object with a known 'action'.",
        "PAYLOAD_TOO_LARGE": "Send less data (the limit is in UTF-8 bytes of the JSON).",
        "UNAUTHORIZED": "Check the credentials or the signature.",
        "FORBIDDEN": "This connection may not do that on this channel.",
        "CONNECTION_GONE": "The connection is closed; it has been forgotten.",
        "INVALID_WEBHOOK": "Reject the request: its signature, key or timestamp is not valid.",
    }
