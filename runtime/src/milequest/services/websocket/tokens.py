"""Connection tokens for the ``$connect`` authorizer (and the HTTP app's channel auth)."""

from __future__ import annotations

from .errors import WebSocketError, WebSocketErrorCode
from .settings import read_settings, require_app_credentials
from .signing import mint_token, read_token

DEFAULT_TOKEN_TTL_SECONDS = 3600


def _secret(secret: str | None) -> str:
    if secret:
        return secret
    return require_app_credentials(read_settings())[1]


def issue_connection_token(
    user_id: str, ttl_seconds: int = DEFAULT_TOKEN_TTL_SECONDS, *, secret: str | None = None
) -> str:
    """A token proving ``user_id`` for ``ttl_seconds``, signed with the app secret.

    The app secret comes from the settings (``WEBSOCKET_APP_SECRET``, ``WEBSOCKET_SECRET_ARN``
    or the Pusher secret) unless ``secret`` is given.
    """
    if not isinstance(user_id, str) or not user_id or len(user_id) > 200:
        raise WebSocketError(WebSocketErrorCode.INVALID_USER, "user_id must be 1-200 characters")
    if not isinstance(ttl_seconds, int) or ttl_seconds <= 0:
        raise WebSocketError(WebSocketErrorCode.INVALID_USER, "ttl_seconds must be positive")
    return mint_token(_secret(secret), user_id, ttl_seconds)


def verify_connection_token(token: str, *, secret: str | None = None) -> str:
    """The user id of a valid token from :func:`issue_connection_token`.

    Raises ``WebSocketError(UNAUTHORIZED)`` for a forged, malformed or expired token.
    """
    if not isinstance(token, str) or not token:
        raise WebSocketError(WebSocketErrorCode.UNAUTHORIZED, "missing connection token")
    user_id = read_token(_secret(secret), token)
    if user_id is None:
        raise WebSocketError(WebSocketErrorCode.UNAUTHORIZED, "invalid or expired token")
    return user_id
