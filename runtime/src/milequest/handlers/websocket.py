"""Lambda handlers of the API Gateway WebSocket API: authorizer, $connect, $disconnect, $default.

Thin: parse the event, call the WebSocket service (``get_service("websocket")``, the
``apigateway`` provider in AWS), shape the reply. The service and its dependencies are
imported on the first call so that importing this module stays cheap (cold starts).

The token verifier of :func:`authorize` is pluggable: call :func:`set_token_verifier` or set
``WEBSOCKET_TOKEN_VERIFIER=package.module:function`` (a callable ``token -> user_id`` that
raises on a bad token). The default accepts tokens from ``issue_connection_token``.
"""

from __future__ import annotations

import base64
import importlib
import json
import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger

if TYPE_CHECKING:
    from milequest.services.websocket import ConnectionService

logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", "milequest-websocket"))

TokenVerifier = Callable[[str], str]
_verifier: TokenVerifier | None = None


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


def _context(event: Mapping[str, Any]) -> Mapping[str, Any]:
    ctx = event.get("requestContext")
    return ctx if isinstance(ctx, Mapping) else {}


def _connection_id(event: Mapping[str, Any]) -> str:
    value = _context(event).get("connectionId")
    if not isinstance(value, str) or not value:
        raise ValueError("event has no requestContext.connectionId")
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


def _user_id(event: Mapping[str, Any]) -> str | None:
    authorizer = _context(event).get("authorizer")
    if not isinstance(authorizer, Mapping):
        return None
    for key in ("userId", "principalId"):
        value = authorizer.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def _service() -> ConnectionService:
    from milequest.services import get_service
    from milequest.services.websocket import ConnectionService, WebSocketError
    from milequest.services.websocket.errors import WebSocketErrorCode

    service = get_service("websocket")
    if not isinstance(service, ConnectionService):
        raise WebSocketError(
            WebSocketErrorCode.CONFIGURATION,
            f"the {service.provider_name} provider does not hold connections; "
            "set WEBSOCKET_PROVIDER=apigateway for the WebSocket handlers",
        )
    return service


# -- authorizer -----------------------------------------------------------------------------


def authorize(event: dict[str, Any], context: object) -> dict[str, Any]:
    """REQUEST authorizer on ``$connect``: Allow with ``context.userId``, else Unauthorized.

    The token comes from the ``token`` query parameter or the ``Authorization`` header.
    """
    token = _token(event)
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


# -- $connect / $disconnect -----------------------------------------------------------------


def on_connect(event: dict[str, Any], context: object) -> dict[str, Any]:
    """Store the connection with the user id the authorizer found."""
    try:
        connection_id = _connection_id(event)
        _service().connect(connection_id, _user_id(event))
    except Exception:
        logger.exception("connect failed")
        return {"statusCode": 500, "body": "connect failed"}
    logger.info("connected", extra={"connection_id": connection_id})
    return {"statusCode": 200}


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


# -- $default -------------------------------------------------------------------------------


def _reply(frame: Mapping[str, Any]) -> dict[str, Any]:
    return {"statusCode": 200, "body": json.dumps(frame, separators=(",", ":"))}


def _error_frame(code: str, message: str, channel: str | None = None) -> dict[str, Any]:
    frame: dict[str, Any] = {"event": "error", "data": {"code": code, "message": message}}
    if channel is not None:
        frame["channel"] = channel
    return frame


def _body(event: Mapping[str, Any]) -> Any:
    raw = event.get("body")
    if not isinstance(raw, str) or not raw:
        raise ValueError("empty message")
    if event.get("isBase64Encoded"):
        raw = base64.b64decode(raw).decode()
    return json.loads(raw)


def on_message(event: dict[str, Any], context: object) -> dict[str, Any]:
    """Handle one client message; the returned body is the frame sent back to the client."""
    try:
        return _reply(_handle(event))
    except Exception:
        logger.exception("message handling failed")
        return _reply(_error_frame("PROVIDER_ERROR", "internal error"))


def _handle(event: Mapping[str, Any]) -> dict[str, Any]:
    from milequest.services import ServiceError

    try:
        message = _body(event)
    except (ValueError, UnicodeDecodeError) as exc:
        return _error_frame("INVALID_MESSAGE", f"not a JSON message: {exc}")
    if not isinstance(message, dict):
        return _error_frame("INVALID_MESSAGE", "a message is a JSON object with an 'action'")
    action = message.get("action")
    channel = message.get("channel")
    channel_name = channel if isinstance(channel, str) else None
    if action == "ping":
        return {"event": "pong"}
    try:
        connection_id = _connection_id(event)
        if action == "whoami":
            return {"event": "connection_established", "data": {"socket_id": connection_id}}
        if action == "subscribe":
            return _subscribe(connection_id, message)
        if action == "unsubscribe":
            _service().unsubscribe(connection_id, _text(message, "channel"))
            return {"event": "unsubscribed", "channel": channel_name}
        if action == "client-event":
            result = _service().send_client_event(
                connection_id,
                _text(message, "channel"),
                _text(message, "event"),
                message.get("data"),
            )
            return {
                "event": "client_event_sent",
                "channel": channel_name,
                "data": {"event": message.get("event"), "delivered": result.delivered},
            }
    except ServiceError as exc:
        return _error_frame(exc.code.value, exc.message, channel_name)
    except ValueError as exc:
        return _error_frame("INVALID_MESSAGE", str(exc), channel_name)
    return _error_frame("INVALID_MESSAGE", f"unknown action {action!r}")


def _text(message: Mapping[str, Any], field: str) -> str:
    value = message.get(field)
    if not isinstance(value, str) or not value:
        raise ValueError(f"'{field}' must be a non-empty string")
    return value


def _optional_text(message: Mapping[str, Any], field: str) -> str | None:
    value = message.get(field)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"'{field}' must be a string")
    return value


def _subscribe(connection_id: str, message: Mapping[str, Any]) -> dict[str, Any]:
    from milequest.services import ServiceError

    channel = message.get("channel")
    try:
        name = _text(message, "channel")
        result = _service().subscribe(
            connection_id,
            name,
            _optional_text(message, "auth"),
            _optional_text(message, "channel_data"),
        )
    except ServiceError as exc:
        return {
            "event": "subscription_error",
            "channel": channel,
            "data": {"code": exc.code.value, "message": exc.message},
        }
    except ValueError as exc:
        return {
            "event": "subscription_error",
            "channel": channel,
            "data": {"code": "INVALID_MESSAGE", "message": str(exc)},
        }
    data: dict[str, Any] = {}
    if result.members is not None:
        data["presence"] = {
            "count": len(result.members),
            "ids": list(result.members),
            "hash": result.members,
        }
    return {"event": "subscription_succeeded", "channel": name, "data": data}
