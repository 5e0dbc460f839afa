"""Who is calling, and which channels they may join: the auth endpoints' pluggable parts."""

from __future__ import annotations

import importlib
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


def user_id_of(user: User) -> str | None:
    """The id of a user as an authenticator returns it."""
    if isinstance(user, str):
        return user
    value = user.get("user_id", user.get("id"))
    return value if isinstance(value, str) else None


def deny_all_channels(user: User, channel: str) -> bool:
    """The default outside ``make dev``: nobody joins a private channel until the
    application says who may (``REALTIME_CHANNEL_POLICY`` or ``create_app(channel_policy=)``)."""
    return False


def allow_all_channels(user: User, channel: str) -> bool:
    """Any authenticated user may join any private channel (``make dev`` uses this)."""
    return True


def channel_policy_from_setting(value: str) -> ChannelPolicy:
    """The policy a ``REALTIME_CHANNEL_POLICY`` value names.

    ``deny``, ``allow-all``, or ``package.module:function`` taking ``(user, channel)``.
    Raises ``ValueError`` for anything else, naming the variable.
    """
    name = value.strip()
    if name == "deny":
        return deny_all_channels
    if name == "allow-all":
        return allow_all_channels
    module_name, _, attr = name.partition(":")
    if not module_name or not attr:
        raise ValueError(
            f"REALTIME_CHANNEL_POLICY must be deny, allow-all or module:function (got {name!r})"
        )
    try:
        policy = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"REALTIME_CHANNEL_POLICY: cannot load {name!r}: {exc}") from None
    if not callable(policy):
        raise ValueError(f"REALTIME_CHANNEL_POLICY: {name!r} is not callable")
    return policy  # type: ignore[no-any-return]
