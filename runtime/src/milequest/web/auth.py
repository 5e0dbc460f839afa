"""Who is calling: the pluggable authenticator of the channel-auth endpoint."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.requests import Request

User = str | Mapping[str, Any]
"""A user id, or ``{"user_id": ..., "user_info": {...}}`` (what presence channels sign)."""

Authenticator = Callable[[Request], User | Awaitable[User | None] | None]
"""Resolves the request's user, or None when the request is not authenticated.

Synchronous authenticators run in a worker thread, so they may do blocking I/O.
"""

ChannelPolicy = Callable[[User, str], bool]
"""Whether ``user`` may subscribe to the private or presence channel ``channel``."""


def bearer_token(request: Request) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, if any."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def connection_token_authenticator(request: Request) -> User | None:
    """The default: a bearer connection token (``issue_connection_token``) names the user."""
    from milequest.services.websocket import WebSocketError, verify_connection_token

    token = bearer_token(request)
    if token is None:
        return None
    try:
        return verify_connection_token(token)
    except WebSocketError:
        return None


def allow_all_channels(user: User, channel: str) -> bool:
    """The default channel policy: any authenticated user may join any private channel."""
    return True
