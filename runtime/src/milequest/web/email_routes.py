"""The email routes of the HTTP app: provider webhooks and one-click unsubscribe.

- ``POST /webhooks/ses``: SES events published to SNS topics, delivered over HTTPS
  (SNS signatures v1 and v2; topics in ``SES_EVENTS_TOPIC_ARNS``; subscriptions confirmed).
- ``POST /webhooks/resend``: Resend's webhooks, signed by Svix (``RESEND_WEBHOOK_SECRET``).
- ``POST /webhooks/sendgrid``: SendGrid's signed Event Webhook
  (``SENDGRID_WEBHOOK_PUBLIC_KEY``).
- ``POST /email/unsubscribe?token=...``: RFC 8058 one-click unsubscribe;
  ``GET`` shows a page that asks first (mail clients and scanners follow links).

Every webhook is verified before its body is read as events: a request that fails gets 401
and nothing is recorded. Events that cannot be read are skipped and logged, never failing
the others. Permanent bounces, complaints and unsubscribes go to the shared suppression
list; when that write fails on our side the answer is 503, so that the sender retries.

Mount them with ``Starlette(routes=[..., *email_routes()])``.
"""

from __future__ import annotations

import functools
import html
import logging
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route

from milequest.services.errors import ServiceError

from .email_webhooks.errors import WebhookNotConfigured, WebhookRejected
from .requests import buffered, error

if TYPE_CHECKING:
    from milequest.services.email.events import EmailEvent, EventReport
    from milequest.services.email.service import EmailService

    from .email_webhooks.sns import SnsVerifier

logger = logging.getLogger("milequest.web.email")

MAX_SNS_BODY_BYTES = 512 * 1024  # an SNS message is at most 256 KB, plus its envelope
MAX_RESEND_BODY_BYTES = 1024 * 1024
MAX_SENDGRID_BODY_BYTES = 8 * 1024 * 1024  # SendGrid batches events into one POST
MAX_UNSUBSCRIBE_BODY_BYTES = 4 * 1024
_RECORD_ERRORS = frozenset({"INVALID_EMAIL", "INVALID_MESSAGE"})


def _email_service() -> EmailService:
    from milequest.services.email.service import EmailService
    from milequest.services.registry import get_service

    service = get_service("email")
    if not isinstance(service, EmailService):
        raise TypeError(f"the registered email service is a {type(service).__name__}")
    return service


def _rejected(exc: WebhookRejected) -> JSONResponse:
    logger.warning("webhook refused: %s", exc.message)
    return error(exc.status, exc.message, "INVALID_SIGNATURE" if exc.status == 401 else "FORBIDDEN")


def _unavailable(exc: Exception) -> JSONResponse:
    logger.warning("email webhook unavailable: %s", exc)
    code = getattr(getattr(exc, "code", None), "value", None) or "CONFIGURATION"
    return error(503, getattr(exc, "message", None) or str(exc), code)


def _answer(report: EventReport) -> JSONResponse:
    summary = report.summary()
    if report.failed_suppressions:
        # Non-2xx: the sender delivers the same events again later.
        return JSONResponse(
            {"error": "could not record every event; retry", "code": "PROVIDER_UNAVAILABLE"}
            | summary,
            status_code=503,
        )
    return JSONResponse(summary)


async def _record(service: EmailService, events: list[EmailEvent], skipped: int) -> JSONResponse:
    from milequest.services.email.events import EventReport, record_events

    report = await run_in_threadpool(record_events, events, service, EventReport(skipped=skipped))
    return _answer(report)


def _json(body: bytes) -> tuple[Any, bool]:
    """The body's JSON, and whether it was readable (logged when not)."""
    from milequest.services.jsonsafe import JsonSafetyError, loads

    try:
        return loads(body), True
    except JsonSafetyError as exc:
        logger.warning("skipping a signed webhook body that is not JSON: %s", exc)
        return None, False


@functools.lru_cache(maxsize=4)
def _sendgrid_key(text: str) -> Any:
    from .email_webhooks.sendgrid import load_public_key

    try:
        return load_public_key(text)
    except ValueError as exc:
        raise WebhookNotConfigured(f"SENDGRID_WEBHOOK_PUBLIC_KEY: {exc}") from None


def email_routes(*, sns_verifier: SnsVerifier | None = None) -> list[BaseRoute]:
    """The email routes. ``sns_verifier`` replaces the production SNS verifier (tests only:
    they serve a test certificate from a local host)."""
    from .email_webhooks.sns import SnsVerifier

    sns = sns_verifier or SnsVerifier()

    async def ses_webhook(request: Request) -> Response:
        from milequest.services.email.events import MalformedEvent, parse_ses_message

        request = await buffered(request, MAX_SNS_BODY_BYTES)
        body = await request.body()
        try:
            service = await run_in_threadpool(_email_service)
            message = await run_in_threadpool(sns.verify, body, service.settings.sns_topic_arns)
        except WebhookRejected as exc:
            return _rejected(exc)
        except ServiceError as exc:
            return _unavailable(exc)
        if message.type == "SubscriptionConfirmation":
            try:
                await run_in_threadpool(sns.confirm, message)
            except OSError as exc:
                return error(502, f"could not confirm the subscription: {exc}", "UPSTREAM")
            logger.info("confirmed the SNS subscription to %s", message.topic_arn)
            return JSONResponse({"confirmed": message.topic_arn})
        if message.type == "UnsubscribeConfirmation":
            logger.warning("SNS unsubscribed this endpoint from %s", message.topic_arn)
            return JSONResponse({"unsubscribed": message.topic_arn})
        try:
            events = parse_ses_message(message.message)
        except MalformedEvent as exc:
            logger.warning("skipping SNS message %s: %s", message.message_id, exc)
            return await _record(service, [], 1)
        return await _record(service, events, 0)

    async def resend_webhook(request: Request) -> Response:
        from milequest.services.email.credentials import resend_keys
        from milequest.services.email.events import MalformedEvent

        from .email_webhooks.resend import resend_events, verify_resend

        request = await buffered(request, MAX_RESEND_BODY_BYTES)
        body = await request.body()
        try:
            service = await run_in_threadpool(_email_service)
            secret = (await run_in_threadpool(resend_keys, service.settings)).webhook_key
            if not secret:
                raise WebhookNotConfigured("RESEND_WEBHOOK_SECRET is not set")
            verify_resend(secret, body, request.headers)
        except WebhookRejected as exc:
            return _rejected(exc)
        except (ServiceError, WebhookNotConfigured) as exc:
            return _unavailable(exc)
        payload, readable = _json(body)
        try:
            events = resend_events(payload) if readable else []
        except MalformedEvent as exc:
            logger.warning("skipping a Resend event: %s", exc)
            readable = False
        return await _record(service, events if readable else [], 0 if readable else 1)

    async def sendgrid_webhook(request: Request) -> Response:
        from milequest.services.email.credentials import sendgrid_keys
        from milequest.services.email.events import MalformedEvent

        from .email_webhooks.sendgrid import sendgrid_event, verify_sendgrid

        request = await buffered(request, MAX_SENDGRID_BODY_BYTES)
        body = await request.body()
        try:
            service = await run_in_threadpool(_email_service)
            text = (await run_in_threadpool(sendgrid_keys, service.settings)).webhook_key
            if not text:
                raise WebhookNotConfigured("SENDGRID_WEBHOOK_PUBLIC_KEY is not set")
            verify_sendgrid(_sendgrid_key(text), body, request.headers)
        except WebhookRejected as exc:
            return _rejected(exc)
        except (ServiceError, WebhookNotConfigured) as exc:
            return _unavailable(exc)
        payload, readable = _json(body)
        if not isinstance(payload, list):
            if readable:
                logger.warning("skipping a SendGrid body that is not an array of events")
            return await _record(service, [], 1)
        events: list[EmailEvent] = []
        skipped = 0
        for position, item in enumerate(payload):
            try:
                events.extend(sendgrid_event(item))
            except MalformedEvent as exc:
                logger.warning("skipping SendGrid event %d: %s", position, exc)
                skipped += 1
        return await _record(service, events, skipped)

    async def unsubscribe(request: Request) -> Response:
        from milequest.services.email.credentials import unsubscribe_secret
        from milequest.services.email.errors import EmailError
        from milequest.services.email.unsubscribe import InvalidUnsubscribeToken, verify_token

        # The body (List-Unsubscribe=One-Click) carries nothing we need: the link does.
        await buffered(request, MAX_UNSUBSCRIBE_BODY_BYTES)
        try:
            service = await run_in_threadpool(_email_service)
            secret = await run_in_threadpool(unsubscribe_secret, service.settings)
        except ServiceError as exc:
            return _unavailable(exc)
        if secret is None:
            return error(503, "EMAIL_UNSUBSCRIBE_SECRET is not set", "CONFIGURATION")
        token = request.query_params.get("token")
        if not token:
            return error(400, "the unsubscribe link has no token", "INVALID_TOKEN")
        try:
            address, category = verify_token(secret, token)
        except InvalidUnsubscribeToken as exc:
            return error(403, str(exc), "INVALID_TOKEN")
        if request.method == "GET":
            return HTMLResponse(_confirm_page(token, address, category))
        try:
            await run_in_threadpool(
                service.suppress_email, address, "UNSUBSCRIBE", category, source="one-click"
            )
        except EmailError as exc:
            if exc.code.value in _RECORD_ERRORS:
                return error(400, exc.message, exc.code.value)
            return _unavailable(exc)
        logger.info("one-click unsubscribe from %s", category)
        return JSONResponse({"unsubscribed": True, "category": category})

    return [
        Route("/webhooks/ses", ses_webhook, methods=["POST"]),
        Route("/webhooks/resend", resend_webhook, methods=["POST"]),
        Route("/webhooks/sendgrid", sendgrid_webhook, methods=["POST"]),
        Route("/email/unsubscribe", unsubscribe, methods=["GET", "POST"]),
    ]


def _confirm_page(token: str, address: str, category: str) -> str:
    action = html.escape(f"?token={token}", quote=True)
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        "<title>Unsubscribe</title></head><body>"
        f'<form method="post" action="{action}">'
        '<input type="hidden" name="List-Unsubscribe" value="One-Click">'
        f"<p>Stop sending {html.escape(category)} emails to {html.escape(address)}?</p>"
        '<button type="submit">Unsubscribe</button></form></body></html>'
    )
