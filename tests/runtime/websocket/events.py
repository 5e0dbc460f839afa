"""API Gateway WebSocket event shapes, as documented by AWS, for driving the handlers."""

from __future__ import annotations

import json
import time
from typing import Any

API_ID = "abcdef1234"
DOMAIN = f"{API_ID}.execute-api.us-east-1.amazonaws.com"
STAGE = "local"
METHOD_ARN = f"arn:aws:execute-api:us-east-1:123456789012:{API_ID}/{STAGE}/$connect"


def _request_context(
    connection_id: str, route_key: str, event_type: str, **extra: Any
) -> dict[str, Any]:
    now = int(time.time() * 1000)
    return {
        "routeKey": route_key,
        "eventType": event_type,
        "extendedRequestId": "PkQp1Fz-IAMFeLQ=",
        "requestTime": "26/Nov/2026:04:20:00 +0000",
        "messageDirection": "IN",
        "stage": STAGE,
        "connectedAt": now,
        "requestTimeEpoch": now,
        "identity": {"sourceIp": "192.0.2.1", "userAgent": "test"},
        "requestId": "PkQp1Fz-IAMFeLQ=",
        "domainName": DOMAIN,
        "connectionId": connection_id,
        "apiId": API_ID,
        **extra,
    }


def authorizer_event(
    *, token: str | None = None, header: str | None = None, connection_id: str = "AbCdEfGhIjKlMn0="
) -> dict[str, Any]:
    """A REQUEST authorizer event on $connect (identity sources: query string / header)."""
    headers = {"Host": DOMAIN, "Sec-WebSocket-Version": "13"}
    if header is not None:
        headers["Authorization"] = header
    return {
        "type": "REQUEST",
        "methodArn": METHOD_ARN,
        "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": {"token": token} if token is not None else None,
        "multiValueQueryStringParameters": {"token": [token]} if token is not None else None,
        "stageVariables": None,
        "requestContext": _request_context(connection_id, "$connect", "CONNECT"),
    }


def connect_event(connection_id: str, user_id: str | None) -> dict[str, Any]:
    authorizer = {"principalId": user_id, "userId": user_id} if user_id else None
    headers = {"Host": DOMAIN}
    ctx = _request_context(connection_id, "$connect", "CONNECT")
    if authorizer:
        ctx["authorizer"] = authorizer
    return {
        "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "requestContext": ctx,
        "isBase64Encoded": False,
    }


def disconnect_event(connection_id: str) -> dict[str, Any]:
    headers = {"Host": DOMAIN}
    return {
        "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "requestContext": _request_context(
            connection_id,
            "$disconnect",
            "DISCONNECT",
            disconnectStatusCode=1001,
            disconnectReason="Going away",
        ),
        "isBase64Encoded": False,
    }


def message_event(connection_id: str, body: Any, *, raw: str | None = None) -> dict[str, Any]:
    return {
        "requestContext": _request_context(
            connection_id, "$default", "MESSAGE", messageId="d4NsecoByQ0CH-Q="
        ),
        "body": raw if raw is not None else json.dumps(body),
        "isBase64Encoded": False,
    }


# What pusher-js 8 puts in the query string of /app/{key}.
PUSHER_JS_QUERY = {"protocol": "7", "client": "js", "version": "8.6.0", "flash": "false"}
