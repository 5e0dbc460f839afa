"""Pusher's HMAC-SHA256 schemes: channel auth, webhook signatures and connection tokens.

Hand-written (a few lines of ``hmac``) rather than taken from the ``pusher`` package so that
the API Gateway provider and the Lambda handlers do not import it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time

from milequest.services import jsonsafe


def _bytes(text: str | bytes) -> bytes:
    # "surrogatepass": a lone surrogate in hostile input must fail the comparison, not raise.
    return text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text


def sign(secret: str, message: str | bytes) -> str:
    """Hex HMAC-SHA256 of ``message`` with ``secret`` (Pusher's signature format)."""
    return hmac.new(_bytes(secret), _bytes(message), hashlib.sha256).hexdigest()


def verify(secret: str, message: str | bytes, signature: object) -> bool:
    """Whether ``signature`` is the signature of ``message``, compared in constant time."""
    if not isinstance(signature, str):
        return False
    return hmac.compare_digest(sign(secret, message).encode(), _bytes(signature))


def constant_time_equal(given: str, expected: str) -> bool:
    """Whether two strings are equal, compared in constant time (never raises on odd text)."""
    return hmac.compare_digest(_bytes(given), _bytes(expected))


def channel_string_to_sign(socket_id: str, channel: str, channel_data: str | None = None) -> str:
    """``socket_id:channel[:channel_data]``: what a channel auth signature covers."""
    text = f"{socket_id}:{channel}"
    return f"{text}:{channel_data}" if channel_data is not None else text


def channel_auth(
    key: str, secret: str, socket_id: str, channel: str, channel_data: str | None = None
) -> str:
    """The ``auth`` value a client presents to subscribe: ``key:hex-signature``."""
    return f"{key}:{sign(secret, channel_string_to_sign(socket_id, channel, channel_data))}"


def verify_channel_auth(
    key: str,
    secret: str,
    socket_id: str,
    channel: str,
    auth: str | None,
    channel_data: str | None = None,
) -> bool:
    """Whether ``auth`` was produced by :func:`channel_auth` for these values."""
    if not isinstance(auth, str) or ":" not in auth:
        return False
    if channel_data is not None and not isinstance(channel_data, str):
        return False
    given_key, _, signature = auth.partition(":")
    expected = sign(secret, channel_string_to_sign(socket_id, channel, channel_data))
    key_ok = constant_time_equal(given_key, key)
    return constant_time_equal(signature, expected) and key_ok


def user_string_to_sign(socket_id: str, user_data: str) -> str:
    """``socket_id::user::user_data``: what a ``pusher:signin`` signature covers."""
    return f"{socket_id}::user::{user_data}"


def user_auth(key: str, secret: str, socket_id: str, user_data: str) -> str:
    """The ``auth`` value of ``pusher:signin``: ``key:hex-signature``."""
    return f"{key}:{sign(secret, user_string_to_sign(socket_id, user_data))}"


def verify_user_auth(key: str, secret: str, socket_id: str, auth: object, user_data: str) -> bool:
    """Whether ``auth`` was produced by :func:`user_auth` for these values."""
    if not isinstance(auth, str) or ":" not in auth:
        return False
    given_key, _, signature = auth.partition(":")
    expected = sign(secret, user_string_to_sign(socket_id, user_data))
    key_ok = constant_time_equal(given_key, key)
    return constant_time_equal(signature, expected) and key_ok


def presence_channel_data(user_id: str, user_info: object | None = None) -> str:
    """The ``channel_data`` JSON string signed for a presence subscription.

    Raises ``ValueError`` when ``user_info`` is not plain JSON data.
    """
    data: dict[str, object] = {"user_id": user_id}
    if user_info is not None:
        data["user_info"] = user_info
    return jsonsafe.dumps(data)


# -- connection tokens -----------------------------------------------------------------------
# Format: base64url(JSON {"sub": user_id, "exp": epoch seconds}) "." hex HMAC of that part.
# A small, dependency-free token (no JWT library in the Lambda bundle); a JWT verifier can
# replace it (see docs/realtime-protocol.md).

TOKEN_PREFIX = "mq1."


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def mint_token(secret: str, user_id: str, ttl_seconds: int, now: float | None = None) -> str:
    """A token naming ``user_id`` that expires ``ttl_seconds`` from ``now``."""
    issued = int(now if now is not None else time.time())
    claims = {"sub": user_id, "exp": issued + ttl_seconds}
    body = _b64encode(json.dumps(claims, separators=(",", ":")).encode())
    return f"{TOKEN_PREFIX}{body}.{sign(secret, TOKEN_PREFIX + body)}"


def read_token(secret: str, token: str, now: float | None = None) -> str | None:
    """The user id of a valid, unexpired token minted with ``secret``, else ``None``."""
    if not token.startswith(TOKEN_PREFIX) or token.count(".") != 2:
        return None
    body, _, signature = token[len(TOKEN_PREFIX) :].partition(".")
    if not verify(secret, TOKEN_PREFIX + body, signature):
        return None
    try:
        claims = jsonsafe.loads(_b64decode(body))
    except (ValueError, binascii.Error):
        return None
    if not isinstance(claims, dict):
        return None
    user_id, expires = claims.get("sub"), claims.get("exp")
    if not isinstance(user_id, str) or not user_id or not isinstance(expires, int):
        return None
    if expires <= (now if now is not None else time.time()):
        return None
    return user_id
