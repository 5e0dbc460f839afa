"""The dev console: one static page plus a small JSON API over the running local stack."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
from moto.core.models import DEFAULT_ACCOUNT_ID
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    Response,
)
from starlette.routing import Route

from milequest.services.email.addresses import AddressError, normalize_address
from milequest.services.email.events import sample_sns_event
from milequest.services.errors import ServiceError
from milequest.services.registry import get_service

from .lambda_runtime import LocalLambdaContext

if TYPE_CHECKING:
    from .stack import LocalStack

CONSOLE_USER = "dev-console"
MAX_LISTED_CONNECTIONS = 100  # each listed connection costs a DynamoDB query per refresh
EMAILS_PER_PAGE = 50  # the state (polled every 2 s) carries the newest page only


PUSHER_JS = Path("node_modules", "pusher-js", "dist", "web", "pusher-with-encryption.min.js")


def find_pusher_js() -> Path | None:
    """pusher-js's browser build, installed from npm (``npm ci``), served with no CDN.

    ``MILEQUEST_PUSHER_JS`` names the file; otherwise the nearest ``node_modules`` above the
    working directory or this package (a checkout of the repository) has it.
    """
    named = os.environ.get("MILEQUEST_PUSHER_JS")
    if named:
        return Path(named) if Path(named).is_file() else None
    for start in (Path.cwd(), Path(__file__).resolve().parent):
        for folder in (start, *start.parents):
            if (folder / PUSHER_JS).is_file():
                return folder / PUSHER_JS
    return None


class BadRequestError(ValueError):
    """A console API request the stack cannot act on (answered with ``status``, 400)."""

    def __init__(self, message: str, status: int = 400, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def _error(exc: Exception, status: int) -> JSONResponse:
    body: dict[str, Any] = {"error": getattr(exc, "message", None) or str(exc)}
    code = getattr(exc, "code", None)
    if code is not None:
        body["code"] = str(getattr(code, "value", code))
    return JSONResponse(body, status_code=status)


async def _json_body(request: Request) -> dict[str, Any]:
    content_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if content_type != "application/json":
        # A page on another origin can post text/plain here without a CORS preflight; it
        # cannot send application/json, so requiring it keeps such pages from acting.
        raise BadRequestError("send the body as application/json", 415)
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError:
        raise BadRequestError("the body must be JSON") from None
    if not isinstance(body, dict):
        raise BadRequestError("the body must be a JSON object")
    return body


def _text(body: dict[str, Any], name: str, default: str | None = None) -> str:
    value = body.get(name, default)
    if not isinstance(value, str) or not value.strip():
        raise BadRequestError(f"'{name}' is required")
    return value.strip()


def _subscriptions(stack: LocalStack, connection_ids: list[str]) -> dict[str, list[str]]:
    """Channels per connection, from the connections table's by-connection index."""
    from milequest.services.websocket.apigateway import CONNECTION_INDEX

    if not connection_ids:
        return {}
    ddb = boto3.client("dynamodb", **stack.aws.client_options())
    table = stack.config.resources.connections_table
    found: dict[str, list[str]] = {}
    for connection_id in connection_ids:
        items = ddb.query(
            TableName=table,
            IndexName=CONNECTION_INDEX,
            KeyConditionExpression="connection_id = :c",
            ExpressionAttributeValues={":c": {"S": connection_id}},
        )["Items"]
        found[connection_id] = sorted(
            item["pk"]["S"].removeprefix("CHAN#")
            for item in items
            if item["pk"]["S"].startswith("CHAN#")
        )
    return found


def _suppressed() -> list[dict[str, Any]]:
    try:
        entries = get_service("email").get_suppressed_emails()
    except Exception as exc:
        return [{"error": str(exc)}]
    return [
        {
            "email": entry.address,
            "reason": str(entry.reason.value),
            "category": entry.category,
            "source": entry.source,
            "last_update": entry.last_update.isoformat() if entry.last_update else None,
        }
        for entry in entries
    ]


def create_console_app(stack: LocalStack) -> Starlette:
    """The console for ``stack`` (mounted at ``/console`` of the stack's HTTP app)."""
    page = resources.files("milequest.local").joinpath("console.html").read_text("utf-8")

    async def index(request: Request) -> HTMLResponse:
        return HTMLResponse(page)

    def stored(connection_ids: list[str]) -> dict[str, Any]:
        try:
            subs = _subscriptions(stack, connection_ids)
        except Exception:
            subs = {}
        emails = _newest_first(stack.emails())
        queue: dict[str, Any] | None = None
        if stack.email_queue is not None:
            try:
                queue = stack.email_queue.state()
            except Exception as exc:
                queue = {"error": f"{type(exc).__name__}: {exc}"}
        return {
            "email_queue": queue,
            "subscriptions": subs,
            "emails": emails[:EMAILS_PER_PAGE],
            "emails_total": len(emails),
            "suppressed": _suppressed(),
        }

    async def api_state(request: Request) -> JSONResponse:
        # The gateway's state is read here, on its own event loop, where it cannot change
        # mid-read; only the boto3 calls go to a worker thread.
        every = stack.gateway.snapshot()
        connections = every[-MAX_LISTED_CONNECTIONS:]
        deliveries = list(stack.gateway.deliveries)
        webhooks = list(stack.webhooks)
        found = await run_in_threadpool(stored, [c["connection_id"] for c in connections])
        for conn in connections:
            conn["channels"] = found["subscriptions"].get(conn["connection_id"], [])
        return JSONResponse(
            {
                "urls": stack.urls,
                "email_provider": stack.config.email_provider,
                "connections": connections,
                "connections_total": len(every),
                "deliveries": [d.describe() for d in reversed(deliveries)],
                "webhooks": webhooks[::-1],
                "emails": found["emails"],
                "emails_total": found["emails_total"],
                "suppressed": found["suppressed"],
                "email_delivery": stack.config.email_delivery,
                "email_queue": found["email_queue"],
            }
        )

    async def pusher_js(request: Request) -> Response:
        script = find_pusher_js()
        if script is None:
            return PlainTextResponse("pusher-js is not installed: run npm ci\n", status_code=404)
        return FileResponse(script, media_type="text/javascript")

    async def api_emails(request: Request) -> JSONResponse:
        try:
            offset = max(0, int(request.query_params.get("offset", "0")))
            limit = min(EMAILS_PER_PAGE, max(1, int(request.query_params.get("limit", "50"))))
        except ValueError:
            raise BadRequestError("offset and limit are numbers") from None
        emails = _newest_first(await run_in_threadpool(stack.emails))
        return JSONResponse(
            {"emails": emails[offset : offset + limit], "emails_total": len(emails)}
        )

    async def api_token(request: Request) -> JSONResponse:
        user = request.query_params.get("user_id") or CONSOLE_USER
        token = await run_in_threadpool(stack.connection_token, user)
        return JSONResponse(
            {
                "token": token,
                "user_id": user,
                "url": stack.urls["websocket"],
                "key": stack.config.resources.websocket_app_key,
                "options": stack.pusher_js_options(),
            }
        )

    async def api_trigger(request: Request) -> JSONResponse:
        body = await _json_body(request)
        channel, event = _text(body, "channel"), _text(body, "event")
        data: Any = body.get("data")
        if isinstance(data, str):
            # Plain text is a valid event payload too.
            with contextlib.suppress(ValueError):
                data = json.loads(data)
        socket_id = body.get("socket_id") or None

        def trigger() -> dict[str, Any]:
            from milequest.services.websocket import WebSocketService

            service = get_service("websocket")
            if not isinstance(service, WebSocketService):
                raise BadRequestError("no WebSocket service is configured")
            result = service.trigger(channel, event, data, socket_id=socket_id)
            return dict(result.model_dump(mode="json"))

        return JSONResponse(await run_in_threadpool(trigger))

    async def api_email(request: Request) -> JSONResponse:
        body = await _json_body(request)
        to = _text(body, "to")
        template = body.get("template") or None
        data = body.get("template_data") or {}
        if isinstance(data, str):
            try:
                data = json.loads(data)
            except ValueError as exc:
                raise BadRequestError(f"template_data must be JSON: {exc}") from None

        def send() -> Any:
            service = get_service("email")
            if template:
                result = service.send_templated_email(str(template), to, data)
            else:
                result = service.send_email(
                    {
                        "to": [to],
                        "subject": body.get("subject") or "Test email from the dev console",
                        "text": body.get("text") or "Hello from the Mile Quest dev console.",
                        "html": body.get("html") or None,
                    }
                )
            return _jsonable(_plain(result))

        return JSONResponse(await run_in_threadpool(send))

    async def api_simulate(request: Request) -> JSONResponse:
        body = await _json_body(request)
        address = _text(body, "address")
        try:
            normalize_address(address)
        except AddressError as exc:  # a bounce for it could never be recorded
            raise BadRequestError(str(exc), code="INVALID_EMAIL") from None
        kind = body.get("kind", "bounce")
        if kind not in ("bounce", "complaint"):
            raise BadRequestError("'kind' is bounce or complaint")
        res = stack.config.resources
        event = sample_sns_event(
            kind,
            address,
            topic_arn=f"arn:aws:sns:{res.region}:{DEFAULT_ACCOUNT_ID}:milequest-local-ses-events",
            source=f"noreply@{res.sender_domain}",
            configuration_set=res.configuration_set,
        )

        def run() -> Any:
            from milequest.handlers.ses_events import handler

            return handler(event, LocalLambdaContext(function_name="local-ses-events"))

        result = await run_in_threadpool(run)
        return JSONResponse({"handler_result": _jsonable(result), "event": event})

    async def bad_request(request: Request, exc: Exception) -> JSONResponse:
        return _error(exc, getattr(exc, "status", 400))

    async def service_error(request: Request, exc: Exception) -> JSONResponse:
        # The service's own failures are 502; anything else it refused is the request's fault.
        code = str(getattr(exc, "code", ""))
        upstream = {"CONFIGURATION", "PROVIDER_UNAVAILABLE", "PROVIDER_ERROR", "RATE_LIMITED"}
        status = 502 if code in upstream else 400
        return _error(exc, status)

    return Starlette(
        routes=[
            Route("/", index),
            Route("/pusher.js", pusher_js),
            Route("/api/state", api_state),
            Route("/api/emails", api_emails),
            Route("/api/token", api_token),
            Route("/api/trigger", api_trigger, methods=["POST"]),
            Route("/api/email", api_email, methods=["POST"]),
            Route("/api/simulate", api_simulate, methods=["POST"]),
        ],
        exception_handlers={BadRequestError: bad_request, ServiceError: service_error},
    )


def _newest_first(emails: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Captured emails (SMTP sink and embedded SES together), newest first."""
    return sorted(emails, key=lambda m: m.get("received_at") or 0.0, reverse=True)


def _plain(value: Any) -> Any:
    """A result object (pydantic model or dataclass) as plain data."""
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return json.loads(json.dumps(dataclasses.asdict(value), default=str))
    return value


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)
    return value
