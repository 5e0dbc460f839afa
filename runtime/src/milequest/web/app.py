"""The runtime's HTTP app: health, channel auth for clients and Pusher-format webhooks."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, cast

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from milequest.services import jsonsafe
from milequest.services.errors import ServiceError
from milequest.services.health import HealthState
from milequest.services.jsonsafe import shorten
from milequest.services.registry import check_services_health, get_service
from milequest.services.websocket import WebSocketService
from milequest.services.websocket.settings import read_settings as read_websocket_settings

from .auth import (
    Authenticator,
    ChannelPolicy,
    User,
    channel_policy_from_setting,
    connection_token_authenticator,
    user_id_of,
)
from .client_config import client_config
from .email_routes import email_routes
from .pusher_api import ApiError, api_error, pusher_api_routes
from .requests import buffered, error
from .settings import WebSettings
from .webhooks import WebhookDispatcher, WebhookHandler

logger = logging.getLogger("milequest.web")

DEFAULT_HEALTH_SERVICES: tuple[str, ...] = ("websocket",)
MAX_AUTH_BODY_BYTES = 16 * 1024
MAX_WEBHOOK_BODY_BYTES = 1024 * 1024

# Error codes of the services that mean "the caller sent something wrong".
_CLIENT_ERROR_CODES = frozenset(
    {"INVALID_CHANNEL", "INVALID_SOCKET_ID", "INVALID_USER", "INVALID_EVENT", "INVALID_MESSAGE"}
)


def _service_error_response(exc: ServiceError) -> JSONResponse:
    code = exc.code.value
    if code in _CLIENT_ERROR_CODES:
        return error(400, exc.message, code)
    if code in {"UNAUTHORIZED", "FORBIDDEN"}:
        return error(403, exc.message, code)
    if code == "RATE_LIMITED":
        return error(429, exc.message, code)
    logger.warning("service error: %s", exc)
    return error(503 if exc.retryable else 500, "the service failed", code)


async def _fields(request: Request, names: tuple[str, ...]) -> dict[str, str] | JSONResponse:
    """String fields from a form (as pusher-js posts them) or a JSON object body."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    fields: Mapping[str, Any]
    if content_type == "application/json":
        try:
            parsed = jsonsafe.loads(await request.body())
        except ValueError as exc:
            return error(400, f"body is not acceptable JSON: {exc}")
        if not isinstance(parsed, dict):
            return error(400, "body must be a JSON object")
        fields = parsed
    elif content_type in {"application/x-www-form-urlencoded", "multipart/form-data"}:
        try:
            form = await request.form(max_files=0, max_fields=50)
        except Exception:  # a malformed multipart body is the client's mistake
            return error(400, "malformed form body")
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
    else:
        return error(415, "send application/x-www-form-urlencoded or application/json")
    missing = [name for name in names if not fields.get(name)]
    if missing:
        return error(400, f"missing field(s): {', '.join(missing)}")
    values = {name: fields[name] for name in names}
    if not all(isinstance(v, str) for v in values.values()):
        return error(400, f"{' and '.join(names)} must be strings")
    return values


def _websocket() -> WebSocketService:
    service = get_service("websocket")
    if not isinstance(service, WebSocketService):
        raise TypeError(f"the registered websocket service is a {type(service).__name__}")
    return service


async def _resolve_user(authenticator: Authenticator, request: Request) -> User | None:
    if inspect.iscoroutinefunction(authenticator):
        result = await authenticator(request)
    else:
        result = await run_in_threadpool(authenticator, request)
    if inspect.isawaitable(result):
        result = await result
    return cast("User | None", result)


def create_app(
    *,
    authenticator: Authenticator | None = None,
    channel_policy: ChannelPolicy | None = None,
    webhook_handlers: Mapping[str, Iterable[WebhookHandler]] | None = None,
    health_services: Sequence[str] | None = DEFAULT_HEALTH_SERVICES,
    cors_origins: Sequence[str] | None = None,
    debug: bool = False,
) -> Starlette:
    """Build the HTTP app.

    - ``authenticator``: ``(request) -> user | None`` (sync or async); default: a bearer
      connection token verified with the WebSocket app secret.
    - ``channel_policy``: ``(user, channel) -> bool``; default: ``REALTIME_CHANNEL_POLICY``
      (``deny`` unless set: name your rule there or pass it here).
    - ``webhook_handlers``: handlers by webhook event name (``"*"`` for every event); more
      can be added later through ``app.state.webhooks``.
    - ``health_services``: the services ``/healthz`` checks (None: those initialized).
    - ``cors_origins``: browser origins allowed to call the app; default
      ``WEB_CORS_ORIGINS``.

    Services come from the registry (``get_service``) at request time, so tests can
    ``register_service``/``override_service`` them.
    """
    settings = WebSettings()
    resolve = authenticator or connection_token_authenticator
    may_join = channel_policy or channel_policy_from_setting(settings.realtime_channel_policy)
    if cors_origins is None:
        cors_origins = [o.strip() for o in settings.web_cors_origins.split(",") if o.strip()]
    dispatcher = WebhookDispatcher(webhook_handlers)

    async def livez(request: Request) -> JSONResponse:
        # Liveness only: load balancers and container health checks poll this, and must not
        # turn a provider hiccup (or throttled probes) into every task being replaced.
        return JSONResponse({"status": "alive"})

    async def healthz(request: Request) -> JSONResponse:
        report = await run_in_threadpool(check_services_health, health_services)
        status = 503 if report.status is HealthState.UNHEALTHY else 200
        return JSONResponse(report.model_dump(mode="json"), status_code=status)

    async def realtime_auth(request: Request) -> JSONResponse:
        """pusher-js's ``channelAuthorization`` endpoint."""
        request = await buffered(request, MAX_AUTH_BODY_BYTES)
        fields = await _fields(request, ("socket_id", "channel_name"))
        if isinstance(fields, JSONResponse):
            return fields
        user = await _resolve_user(resolve, request)
        if user is None:
            return error(403, "not authenticated")
        channel = fields["channel_name"]
        if not await run_in_threadpool(may_join, user, channel):
            return error(403, f"not allowed on {shorten(channel)}")
        try:
            service = await run_in_threadpool(_websocket)
            signed = await run_in_threadpool(
                service.authenticate_channel, fields["socket_id"], channel, user
            )
        except ServiceError as exc:
            return _service_error_response(exc)
        return JSONResponse(signed)

    async def user_auth(request: Request) -> JSONResponse:
        """pusher-js's ``userAuthentication`` endpoint (``pusher.signin()``)."""
        request = await buffered(request, MAX_AUTH_BODY_BYTES)
        fields = await _fields(request, ("socket_id",))
        if isinstance(fields, JSONResponse):
            return fields
        user = await _resolve_user(resolve, request)
        if user is None:
            return error(403, "not authenticated")
        try:
            service = await run_in_threadpool(_websocket)
            signed = await run_in_threadpool(service.authenticate_user, fields["socket_id"], user)
        except ServiceError as exc:
            return _service_error_response(exc)
        return JSONResponse(signed)

    async def realtime_config(request: Request) -> JSONResponse:
        """The pusher-js options of the provider the user is assigned to (migration flags)."""
        user = await _resolve_user(resolve, request)
        user_id = user_id_of(user) if user is not None else None
        if user_id is None:
            return error(403, "not authenticated")
        try:
            service = await run_in_threadpool(_websocket)
        except ServiceError as exc:
            return _service_error_response(exc)
        base = str(request.base_url).rstrip("/")
        config = await run_in_threadpool(client_config, service, user_id, base, settings)
        if config is None:
            return error(503, "set REALTIME_WS_HOST: where pusher-js reaches this stage")
        return JSONResponse(config)

    async def pusher_webhook(request: Request) -> JSONResponse:
        request = await buffered(request, MAX_WEBHOOK_BODY_BYTES)
        body = await request.body()
        try:
            service = await run_in_threadpool(_websocket)
            events = await run_in_threadpool(service.parse_webhook, dict(request.headers), body)
        except ServiceError as exc:
            if exc.code.value == "INVALID_WEBHOOK":
                return error(401, exc.message, exc.code.value)
            return _service_error_response(exc)
        handled, failed = await dispatcher.dispatch(events)
        if failed:
            # A non-2xx answer makes the sender retry the webhook later.
            return error(500, f"{failed} webhook handler(s) failed")
        return JSONResponse({"events": len(events), "handled": handled})

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        response = error(exc.status_code, exc.detail)
        response.headers.update(exc.headers or {})  # e.g. Allow on a 405
        return response

    middleware = []
    if cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(cors_origins),
                allow_methods=["GET", "POST"],
                allow_headers=["Authorization", "Content-Type"],
                allow_credentials="*" not in cors_origins,
                max_age=600,
            )
        )
    app = Starlette(
        debug=debug,
        exception_handlers={HTTPException: http_error, ApiError: api_error},
        middleware=middleware,
        routes=[
            Route("/livez", livez, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/realtime/auth", realtime_auth, methods=["POST"]),
            Route("/realtime/user-auth", user_auth, methods=["POST"]),
            Route("/realtime/config", realtime_config, methods=["GET"]),
            Route("/webhooks/pusher", pusher_webhook, methods=["POST"]),
            *email_routes(),
            *pusher_api_routes(),
        ],
    )
    app.state.webhooks = dispatcher
    # Read once: the app id and the kill switch of Pusher's HTTP API (a change needs a restart,
    # as every deployed setting does).
    app.state.websocket_settings = read_websocket_settings()
    return app
