"""Lambda handlers of the API Gateway WebSocket API, speaking the Pusher Channels protocol 7.

- :func:`on_connect` (``$connect``): checks the protocol version, stores the connection and
  asks :func:`announce` (an asynchronous invocation) to push the first frame, because
  ``$connect`` cannot post to its own connection.
- :func:`announce`: pushes ``pusher:connection_established`` (or the refusal, then closes)
  once the connection is established.
- :func:`on_message` (every other route): one Pusher frame in; the reply frame, if any, is
  the route response.
- :func:`on_disconnect` (``$disconnect``).
- :func:`authorize`: an optional ``$connect`` token authorizer (Pusher connections are
  anonymous until channel auth or ``pusher:signin``).

Thin: parse the event, call the WebSocket service (``get_service("websocket")``, the
``apigateway`` provider in AWS), shape the reply. The service and its dependencies are
imported on the first call so that importing this module stays cheap (cold starts). Only
:func:`announce` raises, on a transient failure, so that Lambda retries it.
"""

from __future__ import annotations

import base64
import binascii
import importlib
import json
import os
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger

from milequest.handlers import snapstart
from milequest.services.websocket import protocol
from milequest.services.websocket.protocol import ErrorCode, ProtocolError

if TYPE_CHECKING:
    from milequest.services import ServiceError
    from milequest.services.websocket import ConnectionService
    from milequest.services.websocket.settings import WebSocketSettings

logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", "milequest-websocket"))

TokenVerifier = Callable[[str], str]
_verifier: TokenVerifier | None = None
_lambda: tuple[str | None, Any] | None = None  # (endpoint, boto3 Lambda client)
_lambda_lock = threading.Lock()
_settings_of: tuple[object, WebSocketSettings] | None = None  # (the service, its settings)

# Service error codes that mean the client did something wrong (logged at INFO, not ERROR).
_CLIENT_MISTAKES = frozenset(
    {
        "INVALID_CHANNEL",
        "INVALID_EVENT",
        "INVALID_SOCKET_ID",
        "INVALID_USER",
        "INVALID_MESSAGE",
        "PAYLOAD_TOO_LARGE",
        "UNAUTHORIZED",
        "FORBIDDEN",
        "CONNECTION_GONE",
        "RATE_LIMITED",
    }
)


def set_token_verifier(verifier: TokenVerifier | None) -> None:
    """Use ``verifier`` (``token -> user_id``, raising when invalid); ``None`` = default."""
    global _verifier
    _verifier = verifier


def _token_verifier() -> TokenVerifier:
    if _verifier is not None:
        return _verifier
    target = os.environ.get("WEBSOCKET_TOKEN_VERIFIER", "").strip()
    if target:
        module_name, _, attr = target.partition(":")
        verifier: TokenVerifier = getattr(importlib.import_module(module_name), attr)
        return verifier
    from milequest.services.websocket import verify_connection_token

    return verify_connection_token


# -- event access ---------------------------------------------------------------------------
# API Gateway's event shapes are read with plain lookups rather than Powertools' parser
# models: those require every field of a full AWS event (identity, requestTimeEpoch, ...)
# and have no authorizer context on $connect, which local gateways do not all send.


def _context(event: object) -> Mapping[str, Any]:
    ctx = event.get("requestContext") if isinstance(event, Mapping) else None
    return ctx if isinstance(ctx, Mapping) else {}


def _connection_id(event: object) -> str:
    value = _context(event).get("connectionId")
    if not isinstance(value, str) or not protocol.CONNECTION_ID_RE.match(value):
        raise ValueError("event has no valid requestContext.connectionId")
    return value


def _lookup(values: object, name: str) -> str | None:
    if not isinstance(values, Mapping):
        return None
    for key, value in values.items():
        if str(key).lower() == name.lower() and isinstance(value, str) and value:
            return value
    return None


def _token(event: Mapping[str, Any]) -> str | None:
    token = _lookup(event.get("queryStringParameters"), "token")
    if token:
        return token
    header = _lookup(event.get("headers"), "authorization")
    if header and header.lower().startswith("bearer "):
        return header[7:].strip() or None
    return header


def _user_id(event: object) -> str | None:
    authorizer = _context(event).get("authorizer")
    if not isinstance(authorizer, Mapping):
        return None
    for key in ("userId", "principalId"):
        value = authorizer.get(key)
        if isinstance(value, str) and protocol.USER_ID_RE.match(value):
            return value
    return None


def _service() -> ConnectionService:
    from milequest.services import get_service
    from milequest.services.websocket import ConnectionService, WebSocketError
    from milequest.services.websocket.errors import WebSocketErrorCode

    service = get_service("websocket")
    from milequest.services.routing import RoutedWebSocketService

    if isinstance(service, RoutedWebSocketService):  # a migration: the side with connections
        service = service.connection_service() or service
    if not isinstance(service, ConnectionService):
        raise WebSocketError(
            WebSocketErrorCode.CONFIGURATION,
            f"the {service.provider_name} provider does not hold connections; "
            "set WEBSOCKET_PROVIDER=apigateway for the WebSocket handlers",
        )
    return service


def _settings() -> WebSocketSettings:
    """The settings the current service was made from, read once with it.

    Reading the environment costs about a millisecond (pydantic-settings), on every
    ``$connect`` and ``announce``; the service is made again when the settings may have
    changed (``reset_services``, a SnapStart restore), and these with it.
    """
    global _settings_of
    from milequest.services import get_service
    from milequest.services.websocket.settings import read_settings

    service = get_service("websocket")
    cached = _settings_of
    if cached is None or cached[0] is not service:
        cached = _settings_of = (service, read_settings())
    return cached[1]


# -- authorizer (opt-in) --------------------------------------------------------------------


def authorize(event: dict[str, Any], context: object) -> dict[str, Any]:
    """REQUEST authorizer on ``$connect``: Allow with ``context.userId``, else Unauthorized.

    Optional: Pusher clients connect anonymously. The token comes from the ``token`` query
    parameter or the ``Authorization`` header.
    """
    token = _token(event) if isinstance(event, Mapping) else None
    if not token:
        logger.info("connection refused: no token")
        raise Exception("Unauthorized")  # API Gateway answers 401 to exactly this message
    try:
        user_id = _token_verifier()(token)
    except Exception as exc:
        logger.info("connection refused: %s", exc)
        raise Exception("Unauthorized") from None
    if not isinstance(user_id, str) or not user_id:
        raise Exception("Unauthorized")
    resource = event.get("methodArn") or "*"
    return {
        "principalId": user_id,
        "policyDocument": {
            "Version": "2012-10-17",
            "Statement": [
                {"Action": "execute-api:Invoke", "Effect": "Allow", "Resource": resource}
            ],
        },
        "context": {"userId": user_id},
    }


# -- $connect, announce, $disconnect ---------------------------------------------------------


def _refusal(event: object) -> dict[str, Any] | None:
    """Why this connection is refused (the app disabled, the protocol version), or None."""
    if not _settings().websocket_app_enabled:
        return {"code": ErrorCode.APP_DISABLED, "message": "Application disabled"}
    query = event.get("queryStringParameters") if isinstance(event, Mapping) else None
    version = _lookup(query, "protocol")
    if version is None:
        return {"code": ErrorCode.NO_PROTOCOL, "message": "No protocol version supplied"}
    if not version.isdigit() or len(version) > 4:
        return {"code": ErrorCode.INVALID_VERSION, "message": "Invalid version string format"}
    if int(version) != protocol.PROTOCOL_VERSION:
        return {
            "code": ErrorCode.UNSUPPORTED_PROTOCOL,
            "message": f"Unsupported protocol version {version} (this server speaks 7)",
        }
    return None


def on_connect(event: dict[str, Any], context: object) -> dict[str, Any]:
    """Store the connection and have :func:`announce` push its first frame.

    An unsupported protocol version is still accepted here: API Gateway cannot send close
    codes from ``$connect`` (an HTTP refusal only makes pusher-js retry), so the refusal is
    pushed as the first frame (``pusher:error``, which pusher-js's handshake obeys) and the
    connection is then closed.
    """
    try:
        connection_id = _connection_id(event)
        refusal = _refusal(event)
        service = _service()
        if refusal is None:
            service.connect(connection_id, _user_id(event))
        _request_announce(service, {"connectionId": connection_id, "refusal": refusal})
    except Exception:
        logger.exception("connect failed")
        return {"statusCode": 500, "body": "connect failed"}
    logger.info("connected", extra={"connection_id": connection_id, "refused": bool(refusal)})
    return {"statusCode": 200}


def _lambda_client() -> Any:
    # One client per process, made again if the endpoint setting changed (local stacks
    # started one after another in one process point it elsewhere each time).
    global _lambda
    endpoint = os.environ.get("AWS_ENDPOINT_URL_LAMBDA") or os.environ.get("AWS_ENDPOINT_URL")
    with _lambda_lock:
        if _lambda is None or _lambda[0] != endpoint:
            import boto3

            _lambda = (endpoint, boto3.client("lambda"))
        return _lambda[1]


def _forget_lambda_client() -> None:
    global _lambda
    _lambda = None


snapstart.after_restore(_forget_lambda_client)


def _request_announce(service: ConnectionService, payload: dict[str, Any]) -> None:
    function = _settings().websocket_announce_function
    if not function:
        if service.provider_name == "apigateway":
            raise RuntimeError(
                "set WEBSOCKET_ANNOUNCE_FUNCTION: API Gateway cannot post to a connection "
                "from its own $connect"
            )
        announce(payload, None)  # in-memory providers can announce at once
        return
    _lambda_client().invoke(
        FunctionName=function, InvocationType="Event", Payload=json.dumps(payload).encode()
    )


def announce(event: dict[str, Any], context: object) -> dict[str, Any]:
    """Push ``pusher:connection_established`` (or the refusal) to a new connection.

    Invoked asynchronously by :func:`on_connect` with ``{"connectionId", "refusal"}``.
    Raises on a transient failure (throttling, the endpoint down) so that Lambda retries.
    """
    from milequest.services import ServiceError

    try:
        connection_id = _connection_id({"requestContext": event})
    except ValueError:
        logger.warning("announce without a valid connectionId: %s", type(event).__name__)
        return {"announced": False}
    refusal = event.get("refusal")
    try:
        service = _service()
        if isinstance(refusal, Mapping):
            frame = protocol.error(str(refusal.get("message", "refused")), refusal.get("code"))
        else:
            activity = _settings().websocket_activity_timeout
            frame = protocol.connection_established(service.socket_id(connection_id), activity)
        announced = service.announce(connection_id, frame, close=isinstance(refusal, Mapping))
    except ServiceError as exc:
        if exc.retryable:
            raise
        logger.error("announce failed: %s", exc)
        return {"announced": False}
    return {"announced": announced}


def on_disconnect(event: dict[str, Any], context: object) -> dict[str, Any]:
    """Forget the connection and its subscriptions (presence and webhooks as due)."""
    try:
        connection_id = _connection_id(event)
        _service().disconnect(connection_id)
    except Exception:
        logger.exception("disconnect cleanup failed; the TTL will remove the records")
        return {"statusCode": 200}
    logger.info("disconnected", extra={"connection_id": connection_id})
    return {"statusCode": 200}


# -- every other route: one Pusher frame ----------------------------------------------------


def on_message(event: dict[str, Any], context: object) -> dict[str, Any]:
    """Handle one client frame; the returned ``body`` (if any) is sent back to the client."""
    try:
        reply = _handle(event)
    except Exception:
        logger.exception("message handling failed")
        reply = protocol.error("Internal server error")
    return {"statusCode": 200, "body": reply} if reply is not None else {"statusCode": 200}


def _body(event: Mapping[str, Any]) -> str | bytes:
    raw = event.get("body")
    if not isinstance(raw, str) or not raw:
        raise ProtocolError("empty message")
    if event.get("isBase64Encoded") is True:
        try:
            return base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            raise ProtocolError("binary message is not valid base64") from None
    return raw


def _handle(event: object) -> str | None:
    try:
        connection_id = _connection_id(event)
        assert isinstance(event, Mapping)
        frame = protocol.parse_client_frame(_body(event))
    except (ProtocolError, ValueError, AssertionError) as exc:
        message = exc.message if isinstance(exc, ProtocolError) else str(exc)
        logger.info("refused a client message: %s", message)
        return protocol.error(message, getattr(exc, "code", None))
    name = frame.event
    if name == "pusher:ping":
        return protocol.pong()
    if name == "pusher:pong":
        return None
    try:
        if name == "pusher:subscribe":
            return _subscribe(connection_id, frame.data)
        if name == "pusher:unsubscribe":
            return _unsubscribe(connection_id, frame.data)
        if name == "pusher:signin":
            return _signin(connection_id, frame.data)
        if name.startswith(protocol.CLIENT_EVENT_PREFIX):
            return _client_event(connection_id, frame)
    except ProtocolError as exc:
        logger.info("refused %s: %s", name, exc.message)
        return protocol.error(exc.message, exc.code, frame.channel)
    logger.info("refused unknown event %s", name[:80])
    return protocol.error(f"Unsupported event {name[:80]!r}")


def _logged(exc: ServiceError, what: str) -> None:
    if exc.code.value in _CLIENT_MISTAKES:
        logger.info("%s refused: %s", what, exc)
    else:
        logger.error("%s failed: %s", what, exc)


def _subscribe(connection_id: str, data: Any) -> str:
    from milequest.services import ServiceError

    channel = protocol.field(data, "channel")
    assert channel is not None
    auth = protocol.field(data, "auth", required=False)
    channel_data = protocol.field(data, "channel_data", required=False)
    try:
        result = _service().subscribe(connection_id, channel, auth, channel_data)
    except ServiceError as exc:
        _logged(exc, f"subscription to {channel[:80]}")
        code = exc.code.value
        if code in {"UNAUTHORIZED", "INVALID_USER"}:
            return protocol.subscription_error(channel, "AuthError", exc.message, 401)
        if code in {"INVALID_CHANNEL", "INVALID_SOCKET_ID"}:
            return protocol.subscription_error(channel, "InvalidChannel", exc.message, 400)
        return protocol.subscription_error(channel, "ServerError", "subscription failed", 503)
    if result.already_subscribed and protocol.server_to_user_id(channel) is None:
        return protocol.error(f"Existing subscription to channel {channel}", None, channel)
    return protocol.subscription_succeeded(channel, result.members)


def _unsubscribe(connection_id: str, data: Any) -> str | None:
    from milequest.services import ServiceError

    channel = protocol.field(data, "channel")
    assert channel is not None
    try:
        existed = _service().unsubscribe(connection_id, channel)
    except ServiceError as exc:
        _logged(exc, "unsubscribe")
        return protocol.error(exc.message, None, channel)
    if not existed:
        return protocol.error(f"Not subscribed to channel {channel}", None, channel)
    return None


def _signin(connection_id: str, data: Any) -> str:
    from milequest.services import ServiceError

    auth = protocol.field(data, "auth", required=False)
    user_data = protocol.field(data, "user_data")
    try:
        _service().signin(connection_id, auth, user_data)
    except ServiceError as exc:
        _logged(exc, "signin")
        if exc.code.value in _CLIENT_MISTAKES:
            return protocol.error(f"Connection not authorized: {exc.message}", 4009)
        return protocol.error("sign-in failed", None)
    assert user_data is not None
    return protocol.signin_success(user_data)


def _client_event(connection_id: str, frame: protocol.ClientFrame) -> str | None:
    from milequest.services import ServiceError

    if frame.channel is None:
        raise ProtocolError("client events need a 'channel'")
    try:
        _service().send_client_event(connection_id, frame.channel, frame.event, frame.data)
    except ServiceError as exc:
        _logged(exc, "client event")
        code = ErrorCode.CLIENT_EVENT_RATE_LIMIT if exc.code.value == "RATE_LIMITED" else None
        return protocol.error(exc.message, code, frame.channel)
    return None
