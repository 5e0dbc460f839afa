"""Pusher's HTTP API, served by the HTTP app, so Pusher's server SDKs publish through us.

Every request is authenticated as Pusher authenticates it (``auth_key``, ``auth_timestamp``,
``auth_version``, ``body_md5`` and the HMAC ``auth_signature``) and then handed to the
configured :class:`WebSocketService`, so limits, fan-out, presence and webhooks behave as
through the Python API. Status codes are Pusher's: 400 for a malformed request, 401 for a
bad key, signature or timestamp, 403 while the app is disabled, 404 for another app id,
413 for an oversize payload. Nothing is published when a request is refused.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, TypeVar
from urllib.parse import parse_qsl

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from milequest.services import jsonsafe
from milequest.services.errors import ServiceError
from milequest.services.registry import get_service
from milequest.services.websocket import WebSocketService, protocol
from milequest.services.websocket.settings import WebSocketSettings

from .requests import buffered, error

logger = logging.getLogger("milequest.web")

MAX_BODY_BYTES = 1024 * 1024
MAX_CHANNELS = 100
MAX_BATCH = 10
T = TypeVar("T")

_STATUS = {
    "INVALID_CHANNEL": 400,
    "INVALID_EVENT": 400,
    "INVALID_SOCKET_ID": 400,
    "INVALID_USER": 400,
    "INVALID_MESSAGE": 400,
    "PAYLOAD_TOO_LARGE": 413,
    "UNAUTHORIZED": 401,
    "RATE_LIMITED": 429,
}


class ApiError(Exception):
    """A refused request: its status and a short reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _service() -> WebSocketService:
    service = get_service("websocket")
    if not isinstance(service, WebSocketService):
        raise ApiError(503, "no WebSocket service is configured")
    return service


async def _call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a service call in a worker thread; its typed errors become Pusher's statuses."""
    try:
        return await run_in_threadpool(fn, *args, **kwargs)
    except ServiceError as exc:
        status = _STATUS.get(exc.code.value)
        if status is None:
            logger.warning("Pusher HTTP API call failed: %s", exc)
            raise ApiError(503, "the service is unavailable, retry later") from None
        raise ApiError(status, exc.message) from None


def _query(request: Request) -> dict[str, str]:
    pairs = parse_qsl(request.url.query, keep_blank_values=True)
    params = dict(pairs)
    if len(params) != len(pairs):
        raise ApiError(400, "a query parameter is given twice")
    return params


async def _authentic(request: Request) -> tuple[WebSocketService, dict[str, str], bytes]:
    """The service, the query and the body of a request signed with this app's key."""
    settings: WebSocketSettings = request.app.state.websocket_settings
    if request.path_params.get("app_id", settings.websocket_app_id) != settings.websocket_app_id:
        raise ApiError(404, f"unknown app {jsonsafe.shorten(request.path_params['app_id'])}")
    request = await buffered(request, MAX_BODY_BYTES)
    body = await request.body()
    params = _query(request)
    service = await run_in_threadpool(_service)
    raw_path = request.scope.get("raw_path", b"").decode("latin-1").split("?", 1)[0]
    paths = [p for p in (raw_path, request.url.path) if p]
    await _call(service.verify_api_request, request.method, paths, params, body)
    if not settings.websocket_app_enabled:
        raise ApiError(403, "the app is disabled")
    return service, params, body


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        value = jsonsafe.loads(body)
    except ValueError as exc:
        raise ApiError(400, f"the body is not acceptable JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ApiError(400, "the body must be a JSON object")
    return value


def _text(value: object, name: str) -> str:
    if not isinstance(value, str):
        raise ApiError(400, f"'{name}' must be a string")
    return value


def _info(value: object) -> list[str]:
    """The ``info`` attributes (a comma-separated string)."""
    if value is None:
        return []
    names = [n.strip() for n in _text(value, "info").split(",") if n.strip()]
    unknown = sorted(set(names) - {"user_count", "subscription_count"})
    if unknown:
        raise ApiError(400, f"unknown info attribute(s) {unknown[:3]}")
    return names


def _attributes(channel: str, wanted: list[str]) -> tuple[str, ...]:
    if not protocol.is_presence(channel):
        return tuple(a for a in wanted if a != "user_count")
    return tuple(wanted)


async def _channel_attributes(
    service: WebSocketService, channel: str, wanted: list[str]
) -> dict[str, Any]:
    attributes = _attributes(channel, wanted)
    if not attributes:
        return {}
    info = await _call(service.get_channel_info, channel, attributes)
    return info.model_dump(include=set(attributes), exclude_none=True)


async def _publish(
    service: WebSocketService, event: Mapping[str, Any], channels: list[str]
) -> None:
    """One event to ``channels``; the SDKs' ``send_to_user`` arrives as a user channel."""
    name = _text(event.get("name"), "name")
    data = _text(event.get("data"), "data")
    socket_id = event.get("socket_id")
    if socket_id is not None:
        _text(socket_id, "socket_id")
    users = [protocol.server_to_user_id(c) for c in channels]
    if any(u is not None for u in users):
        if len(channels) != 1 or users[0] is None:
            raise ApiError(400, "an event for a user goes to that user's channel alone")
        await _call(service.send_to_user, users[0], name, data)
        return
    # Data for encrypted channels arrives sealed by the SDK: relayed as it is.
    await _call(service.trigger, channels, name, data, socket_id, encrypted=True)


def _channels_of(event: Mapping[str, Any]) -> list[str]:
    if "channels" in event:
        channels = event["channels"]
        if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
            raise ApiError(400, "'channels' must be a list of channel names")
    elif "channel" in event:
        channels = [_text(event["channel"], "channel")]
    else:
        raise ApiError(400, "give 'channel' or 'channels'")
    if not channels:
        raise ApiError(400, "no channel given")
    if len(channels) > MAX_CHANNELS:
        raise ApiError(400, f"at most {MAX_CHANNELS} channels per event")
    return list(channels)


# -- endpoints -------------------------------------------------------------------------------


async def events(request: Request) -> JSONResponse:
    """``POST /apps/{app_id}/events``: one event to up to 100 channels."""
    service, _, body = await _authentic(request)
    event = _json_object(body)
    channels = _channels_of(event)
    wanted = _info(event.get("info"))
    await _publish(service, event, channels)
    if not wanted:
        return JSONResponse({})
    found = {c: await _channel_attributes(service, c, wanted) for c in channels}
    return JSONResponse({"channels": found})


async def batch_events(request: Request) -> JSONResponse:
    """``POST /apps/{app_id}/batch_events``: up to 10 events, each to one channel."""
    service, _, body = await _authentic(request)
    batch = _json_object(body).get("batch")
    if not isinstance(batch, list) or not batch:
        raise ApiError(400, "'batch' must be a non-empty list of events")
    if len(batch) > MAX_BATCH:
        raise ApiError(400, f"at most {MAX_BATCH} events per batch")
    if not all(isinstance(e, dict) for e in batch):
        raise ApiError(400, "each batch item must be an event object")
    wanted = [_info(e.get("info")) for e in batch]
    plain = [e for e in batch if protocol.server_to_user_id(str(e.get("channel"))) is None]
    if len(plain) == len(batch):  # one provider call for the whole batch
        events_ = [
            {
                "channel": _text(e.get("channel"), "channel"),
                "name": _text(e.get("name"), "name"),
                "data": _text(e.get("data"), "data"),
                **({"socket_id": e["socket_id"]} if e.get("socket_id") is not None else {}),
            }
            for e in batch
        ]
        await _call(service.trigger_batch, events_, encrypted=True)
    else:
        for event in batch:
            await _publish(service, event, [_text(event.get("channel"), "channel")])
    if not any(wanted):
        return JSONResponse({})
    answers = [
        await _channel_attributes(service, str(e["channel"]), w)
        for e, w in zip(batch, wanted, strict=True)
    ]
    return JSONResponse({"batch": answers})


async def channels(request: Request) -> JSONResponse:
    """``GET /apps/{app_id}/channels``: occupied channels, by prefix; ``info=user_count``."""
    service, params, _ = await _authentic(request)
    prefix = params.get("filter_by_prefix") or None
    wanted = _info(params.get("info"))
    if "subscription_count" in wanted:
        raise ApiError(400, "the channel list only reports user_count")
    if wanted and prefix != "presence-":
        raise ApiError(400, "info=user_count needs filter_by_prefix=presence-")
    found = await _call(service.get_channels, prefix, wanted)
    return JSONResponse(
        {
            "channels": {
                name: info.model_dump(include={"user_count"}, exclude_none=True)
                for name, info in found.items()
            }
        }
    )


async def channel(request: Request) -> JSONResponse:
    """``GET /apps/{app_id}/channels/{channel}``: occupied, and the ``info`` counts."""
    service, params, _ = await _authentic(request)
    name = request.path_params["channel"]
    wanted = _info(params.get("info"))
    if "user_count" in wanted and not protocol.is_presence(name):
        raise ApiError(400, "user_count is only available for presence channels")
    info = await _call(service.get_channel_info, name, tuple(wanted))
    return JSONResponse(info.model_dump(include={"occupied", *wanted}, exclude_none=True))


async def users(request: Request) -> JSONResponse:
    """``GET /apps/{app_id}/channels/{channel}/users``: a presence channel's user ids."""
    service, _, _ = await _authentic(request)
    members = await _call(service.get_channel_users, request.path_params["channel"])
    return JSONResponse({"users": [{"id": member.id} for member in members]})


async def terminate_connections(request: Request) -> JSONResponse:
    """``POST /apps/{app_id}/users/{user_id}/terminate_connections`` (and the path without
    ``/apps/{app_id}`` that the Python SDK uses)."""
    service, _, _ = await _authentic(request)
    await _call(service.terminate_user_connections, request.path_params["user_id"])
    return JSONResponse({})


async def api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error(exc.status, exc.reason)


def pusher_api_routes() -> list[BaseRoute]:
    """The routes of Pusher's HTTP API (mount them at the root: SDKs sign the path)."""
    return [
        Route("/apps/{app_id}/events", events, methods=["POST"]),
        Route("/apps/{app_id}/batch_events", batch_events, methods=["POST"]),
        Route("/apps/{app_id}/channels", channels, methods=["GET"]),
        Route("/apps/{app_id}/channels/{channel}", channel, methods=["GET"]),
        Route("/apps/{app_id}/channels/{channel}/users", users, methods=["GET"]),
        Route(
            "/apps/{app_id}/users/{user_id}/terminate_connections",
            terminate_connections,
            methods=["POST"],
        ),
        Route("/users/{user_id}/terminate_connections", terminate_connections, methods=["POST"]),
    ]
