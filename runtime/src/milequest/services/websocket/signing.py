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
from collections.abc import Mapping, Sequence

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


# -- Pusher's HTTP API request signatures ----------------------------------------------------

API_AUTH_VERSION = "1.0"
API_MAX_SKEW_SECONDS = 600


def api_string_to_sign(method: str, path: str, params: Mapping[str, str]) -> str:
    """``METHOD\\nPATH\\nk=v&...``: the query's keys lower-cased and sorted, values as they are,
    ``auth_signature`` left out."""
    query = "&".join(
        f"{key}={value}"
        for key, value in sorted((k.lower(), v) for k, v in params.items())
        if key != "auth_signature"
    )
    return f"{method.upper()}\n{path}\n{query}"


def sign_api_request(
    key: str,
    secret: str,
    method: str,
    path: str,
    params: Mapping[str, str],
    body: bytes = b"",
    now: float | None = None,
) -> dict[str, str]:
    """``params`` plus the authentication parameters a Pusher SDK adds to a request."""
    signed = {
        **params,
        "auth_key": key,
        "auth_timestamp": str(int(now if now is not None else time.time())),
        "auth_version": API_AUTH_VERSION,
    }
    if body:
        signed["body_md5"] = hashlib.md5(body).hexdigest()
    signed["auth_signature"] = sign(secret, api_string_to_sign(method, path, signed))
    return signed


def api_request_problem(
    key: str,
    secret: str,
    method: str,
    paths: Sequence[str],
    params: Mapping[str, str],
    body: bytes,
    now: float | None = None,
) -> str | None:
    """Why a Pusher HTTP API request is not authentic, or None when it is.

    ``paths`` are the spellings of the request path the signature may cover (as sent, and
    percent-decoded). Checked as Pusher checks: key, version, a timestamp within 600 s either
    way, the body's MD5, then the HMAC (compared in constant time).
    """
    lowered = {k.lower(): v for k, v in params.items()}
    missing = [
        name
        for name in ("auth_key", "auth_timestamp", "auth_version", "auth_signature")
        if not lowered.get(name)
    ]
    if missing:
        return f"missing {', '.join(missing)}"
    if not constant_time_equal(lowered["auth_key"], key):
        return "unknown auth_key"
    if lowered["auth_version"] != API_AUTH_VERSION:
        return f"auth_version must be {API_AUTH_VERSION}"
    stamp = lowered["auth_timestamp"]
    if not stamp.isdigit() or len(stamp) > 12:
        return "auth_timestamp must be seconds since the epoch"
    skew = abs((now if now is not None else time.time()) - int(stamp))
    if skew > API_MAX_SKEW_SECONDS:
        return f"auth_timestamp is {int(skew)} s from the server's clock (limit 600 s)"
    if body or "body_md5" in lowered:
        given = lowered.get("body_md5", "")
        if not constant_time_equal(given, hashlib.md5(body).hexdigest()):
            return "body_md5 does not match the body"
    signature = lowered["auth_signature"]
    for path in dict.fromkeys(paths):
        if verify(secret, api_string_to_sign(method, path, params), signature):
            return None
    return "invalid auth_signature"
